// Entry point: wires the output channel, settings, server, status bar and commands together.

import * as os from 'node:os';

import * as vscode from 'vscode';

import { registerCommands } from './commands';
import { readHoneSettings } from './config';
import { watchCursor } from './cursorWatch';
import type { LaunchContext } from './launch';
import { PythonInterpreter } from './pythonExtension';
import { HoneServer } from './server';
import { changeAction, type HoneSettings } from './settings';
import { HoneStatusBar } from './statusBar';
import { TraceChannel } from './traceChannel';

let server: HoneServer | undefined;

export function activate(context: vscode.ExtensionContext): void {
  const log = vscode.window.createOutputChannel('Hone', { log: true });
  const trace = new TraceChannel('Hone LSP Trace', () => vscode.workspace.getConfiguration('hone').get('trace.server'));
  const python = new PythonInterpreter(log);
  const launchContext = async (settings: HoneSettings): Promise<LaunchContext> => {
    const resource = vscode.window.activeTextEditor?.document.uri ?? vscode.workspace.workspaceFolders?.[0]?.uri;
    const folder = resource !== undefined ? vscode.workspace.getWorkspaceFolder(resource) : undefined;
    return {
      pythonFromExtension: settings.pythonPath === '' && settings.serverCommand.length === 0
        ? await python.executable(resource)
        : undefined,
      workspaceFolder: folder?.uri.fsPath ?? vscode.workspace.workspaceFolders?.[0]?.uri.fsPath,
      home: os.homedir(),
      defaultPython: process.platform === 'win32' ? 'python' : 'python3',
    };
  };
  server = new HoneServer({ log, trace, settings: () => readHoneSettings(log), launchContext });
  const honeServer = server;

  context.subscriptions.push(
    log,
    trace,
    python,
    honeServer,
    new HoneStatusBar(honeServer),
    registerCommands(honeServer, log),
    watchCursor(honeServer, log), // where the cursor is placed: the server computes the completion there ahead
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration('hone.trace.server')) {
        trace.refresh();
      }
      switch (changeAction((section) => event.affectsConfiguration(section))) {
        case 'restart':
          log.info('A setting that needs a new server process changed; restarting.');
          void honeServer.restart();
          break;
        case 'notify':
          honeServer.updateSettings(readHoneSettings(log));
          break;
        case 'none':
          break;
      }
    }),
    python.onDidChange(() => {
      const settings = readHoneSettings(log);
      if (settings.pythonPath === '' && settings.serverCommand.length === 0) {
        log.info('The Python extension selected another interpreter; restarting.');
        void honeServer.restart();
      }
    }),
  );
  void honeServer.start();
}

export async function deactivate(): Promise<void> {
  await server?.stop();
  server = undefined;
}
