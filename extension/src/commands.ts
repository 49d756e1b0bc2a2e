// The Hone commands. Rewrite and Fill Holes send workspace/executeCommand for the server's own
// command ids; the server answers with workspace/applyEdit, which the client applies.

import * as vscode from 'vscode';
import { ExecuteCommandRequest, type LanguageClient } from 'vscode-languageclient/node';

import { toggleEnabled } from './config';
import { acceptanceLine, COMMANDS, countHoles, HOLE, menuItems, SERVER_COMMANDS } from './menu';
import { DOCUMENT_SELECTOR, type HoneServer } from './server';

function serverFor(server: HoneServer): LanguageClient | undefined {
  const client = server.runningClient();
  if (client === undefined) {
    const { phase } = server.view();
    const why = phase === 'starting' ? 'is still starting' : 'is not running';
    void vscode.window.showWarningMessage(`Hone's server ${why}.`, 'Restart Server', 'Show Log').then((choice) => {
      if (choice === 'Restart Server') void server.restart();
      if (choice === 'Show Log') void vscode.commands.executeCommand(COMMANDS.showLog);
    });
  }
  return client;
}

function honeEditor(action: string): vscode.TextEditor | undefined {
  const editor = vscode.window.activeTextEditor;
  if (editor === undefined) {
    void vscode.window.showInformationMessage(`Hone: open a Python file to ${action}.`);
    return undefined;
  }
  if (vscode.languages.match(DOCUMENT_SELECTOR, editor.document) === 0) {
    void vscode.window.showInformationMessage(`Hone works on Python files; ${editor.document.languageId} is not one.`);
    return undefined;
  }
  return editor;
}

async function runServerCommand(client: LanguageClient, title: string, command: string, args: unknown[]): Promise<void> {
  try {
    await vscode.window.withProgress(
      { location: vscode.ProgressLocation.Notification, title, cancellable: true },
      (_progress, token) => client.sendRequest(ExecuteCommandRequest.type, { command, arguments: args }, token),
    );
  } catch (error) {
    const message = error instanceof Error ? error.message : String(error);
    void vscode.window.showErrorMessage(`${title.replace(/…$/, '')} failed: ${message}`);
  }
}

async function rewriteSelection(server: HoneServer): Promise<void> {
  const editor = honeEditor('rewrite code');
  const client = editor !== undefined ? serverFor(server) : undefined;
  if (editor === undefined || client === undefined) {
    return;
  }
  // An empty selection rewrites the current line.
  const range = editor.selection.isEmpty ? editor.document.lineAt(editor.selection.active.line).range : editor.selection;
  await runServerCommand(client, 'Hone: rewriting the selection…', SERVER_COMMANDS.rewriteSelection, [
    editor.document.uri.toString(),
    client.code2ProtocolConverter.asRange(range),
  ]);
}

async function fillHoles(server: HoneServer): Promise<void> {
  const editor = honeEditor('fill holes');
  if (editor === undefined) {
    return;
  }
  const holes = countHoles(editor.document.getText());
  if (holes === 0) {
    void vscode.window.showInformationMessage(`Hone: this file has no ${HOLE} holes to fill.`);
    return;
  }
  const client = serverFor(server);
  if (client !== undefined) {
    await runServerCommand(client, `Hone: filling ${holes} hole${holes === 1 ? '' : 's'}…`, SERVER_COMMANDS.fillHoles, [
      editor.document.uri.toString(),
    ]);
  }
}

/** What the server counted of accepted suggestions in the active editor's language ("" when it cannot say). */
async function acceptance(server: HoneServer): Promise<string> {
  const client = server.runningClient();
  const language = vscode.window.activeTextEditor?.document.languageId;
  if (client === undefined || language === undefined) {
    return '';
  }
  try {
    const stats = await client.sendRequest<{ acceptance?: unknown }>('hone/stats');
    return acceptanceLine(stats.acceptance, language);
  } catch {
    return '';
  }
}

async function showMenu(server: HoneServer): Promise<void> {
  const { enabled, phase } = server.view();
  const items = menuItems(enabled, phase, await acceptance(server));
  const choice = await vscode.window.showQuickPick(items, { title: 'Hone', placeHolder: 'Hone commands' });
  if (choice !== undefined) {
    await vscode.commands.executeCommand(choice.command);
  }
}

export function registerCommands(server: HoneServer, log: vscode.LogOutputChannel): vscode.Disposable {
  return vscode.Disposable.from(
    vscode.commands.registerCommand(COMMANDS.rewriteSelection, () => rewriteSelection(server)),
    vscode.commands.registerCommand(COMMANDS.fillHoles, () => fillHoles(server)),
    vscode.commands.registerCommand(COMMANDS.toggle, async () => {
      const enabled = await toggleEnabled();
      vscode.window.setStatusBarMessage(`Hone completions ${enabled ? 'on' : 'off'}`, 2000);
    }),
    vscode.commands.registerCommand(COMMANDS.restart, () => server.restart()),
    vscode.commands.registerCommand(COMMANDS.showLog, () => log.show()),
    vscode.commands.registerCommand(COMMANDS.showMenu, () => showMenu(server)),
  );
}
