// Entry point: wires the output channel, settings, server, status bar and commands together.

import * as os from 'node:os';

import * as vscode from 'vscode';

import { registerCommands } from './commands';
import { readHoneSettings } from './config';
import { CURSOR_NOTIFICATION, CursorReporter, isPlacement } from './cursor';
import type { LaunchContext } from './launch';
import { PythonInterpreter } from './pythonExtension';
import { DOCUMENT_SELECTOR, HoneServer } from './server';
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

  // where the cursor is placed (not typed): the server computes the completion there before the first keystroke
  const cursor = new CursorReporter((place) => {
    honeServer.runningClient()
      ?.sendNotification(CURSOR_NOTIFICATION, {
        textDocument: { uri: place.uri },
        position: { line: place.line, character: place.character },
      })
      .catch((error: unknown) => log.debug(`Sending ${CURSOR_NOTIFICATION} failed: ${String(error)}`));
  });
  const placed = (editor: vscode.TextEditor | undefined): void => {
    const client = honeServer.runningClient();
    if (editor === undefined || client === undefined || !honeServer.view().enabled
        || vscode.languages.match(DOCUMENT_SELECTOR, editor.document) === 0) {
      return;
    }
    const at = editor.selection.active;
    cursor.placed({ uri: client.code2ProtocolConverter.asUri(editor.document.uri), line: at.line, character: at.character });
  };

  context.subscriptions.push(
    cursor,
    vscode.window.onDidChangeTextEditorSelection((event) => {
      if (isPlacement(event.kind, event.selections.length, event.selections[0]?.isEmpty ?? false)) {
        placed(event.textEditor);
      } else if (event.kind === undefined) {
        cursor.typed();
      }
    }),
    vscode.window.onDidChangeActiveTextEditor(placed),
    log,
    trace,
    python,
    honeServer,
    new HoneStatusBar(honeServer),
    registerCommands(honeServer, log),
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
