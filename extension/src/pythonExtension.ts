// The interpreter selected in the Python extension (ms-python.python), when it is installed.

import * as vscode from 'vscode';

/** The part of the Python extension's API used here (its `environments` API, 2023+). */
interface PythonEnvironmentsApi {
  getActiveEnvironmentPath(resource?: vscode.Uri): { path: string } | undefined;
  resolveEnvironment(environment: { path: string } | string): Promise<{ executable: { uri?: vscode.Uri } } | undefined>;
  readonly onDidChangeActiveEnvironmentPath: vscode.Event<unknown>;
}

interface PythonExtensionApi {
  environments?: PythonEnvironmentsApi;
}

export const PYTHON_EXTENSION_ID = 'ms-python.python';

export class PythonInterpreter implements vscode.Disposable {
  private readonly changed = new vscode.EventEmitter<void>();
  readonly onDidChange = this.changed.event;
  private subscription: vscode.Disposable | undefined;

  constructor(private readonly log: vscode.LogOutputChannel) {}

  private async api(): Promise<PythonEnvironmentsApi | undefined> {
    const extension = vscode.extensions.getExtension<PythonExtensionApi>(PYTHON_EXTENSION_ID);
    if (extension === undefined) {
      return undefined;
    }
    const exports = extension.isActive ? extension.exports : await extension.activate();
    const environments = exports?.environments;
    if (environments !== undefined && this.subscription === undefined) {
      this.subscription = environments.onDidChangeActiveEnvironmentPath(() => this.changed.fire());
    }
    return environments;
  }

  /** The selected interpreter's executable for `resource`, or undefined (no extension, no selection, error). */
  async executable(resource: vscode.Uri | undefined): Promise<string | undefined> {
    try {
      const environments = await this.api();
      const active = environments?.getActiveEnvironmentPath(resource);
      if (environments === undefined || active === undefined) {
        return undefined;
      }
      const resolved = await environments.resolveEnvironment(active);
      return resolved?.executable.uri?.fsPath ?? undefined;
    } catch (error) {
      this.log.warn(`Could not ask the Python extension for its interpreter: ${String(error)}`);
      return undefined;
    }
  }

  dispose(): void {
    this.subscription?.dispose();
    this.changed.dispose();
  }
}
