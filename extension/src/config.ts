// Reads `hone.*` from VS Code into HoneSettings (validation lives in settings.ts).

import * as vscode from 'vscode';

import { readSettings, toggleTarget, type HoneSettings } from './settings';

export function readHoneSettings(log: vscode.LogOutputChannel): HoneSettings {
  const config = vscode.workspace.getConfiguration('hone');
  const { settings, problems } = readSettings(
    (key) => config.get(key),
    // trustRemoteCode: user settings only, whatever a workspace says.
    (key) => config.inspect(key)?.globalValue,
  );
  for (const problem of problems) {
    log.warn(problem);
  }
  if (problems.length > 0) {
    void vscode.window.showWarningMessage(`Hone: ${problems.join('; ')}`);
  }
  return settings;
}

/** Flips `hone.enabled` where it is set (folder, workspace or user settings). */
export async function toggleEnabled(): Promise<boolean> {
  const config = vscode.workspace.getConfiguration('hone', vscode.window.activeTextEditor?.document.uri);
  const enabled = !config.get<boolean>('enabled', true);
  const target = {
    workspaceFolder: vscode.ConfigurationTarget.WorkspaceFolder,
    workspace: vscode.ConfigurationTarget.Workspace,
    global: vscode.ConfigurationTarget.Global,
  }[toggleTarget(config.inspect('enabled'))];
  await config.update('enabled', enabled, target);
  return enabled;
}
