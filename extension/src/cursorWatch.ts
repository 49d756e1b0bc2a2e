// Wires CursorReporter to VS Code: cursor placements in documents the server serves become `hone/cursor`.

import * as vscode from 'vscode';

import { CURSOR_NOTIFICATION, CursorReporter, isPlacement } from './cursor';
import { DOCUMENT_SELECTOR, type HoneServer } from './server';

export function watchCursor(server: HoneServer, log: vscode.LogOutputChannel): vscode.Disposable {
  const reporter = new CursorReporter((place) => {
    server.runningClient()
      ?.sendNotification(CURSOR_NOTIFICATION, {
        textDocument: { uri: place.uri },
        position: { line: place.line, character: place.character },
      })
      .catch((error: unknown) => log.debug(`Sending ${CURSOR_NOTIFICATION} failed: ${String(error)}`));
  });
  const placed = (editor: vscode.TextEditor | undefined): void => {
    const client = server.runningClient();
    if (editor === undefined || client === undefined || !server.view().enabled
        || vscode.languages.match(DOCUMENT_SELECTOR, editor.document) === 0) {
      return;
    }
    const at = editor.selection.active;
    reporter.placed({ uri: client.code2ProtocolConverter.asUri(editor.document.uri), line: at.line, character: at.character });
  };
  return vscode.Disposable.from(
    reporter,
    vscode.window.onDidChangeTextEditorSelection((event) => {
      if (isPlacement(event.kind, event.selections.length, event.selections[0]?.isEmpty ?? false)) {
        placed(event.textEditor);
      } else if (event.kind === undefined) {
        reporter.typed();
      }
    }),
    vscode.window.onDidChangeActiveTextEditor(placed),
  );
}
