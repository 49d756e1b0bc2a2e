// The status bar item: shows presentStatus() of the server's view; a click opens the Hone menu.

import * as vscode from 'vscode';

import { COMMANDS } from './menu';
import type { HoneServer } from './server';
import { presentStatus } from './status';

export class HoneStatusBar implements vscode.Disposable {
  private readonly item = vscode.window.createStatusBarItem('hone.status', vscode.StatusBarAlignment.Right, 100);
  private readonly subscription: vscode.Disposable;

  constructor(private readonly server: HoneServer) {
    this.item.name = 'Hone';
    this.item.command = COMMANDS.showMenu;
    this.subscription = server.onDidChange(() => this.render());
    this.render();
    this.item.show();
  }

  private render(): void {
    const shown = presentStatus(this.server.view());
    this.item.text = shown.text;
    this.item.tooltip = shown.tooltip;
    this.item.accessibilityInformation = { label: shown.tooltip.split('\n')[0] ?? 'Hone' };
    this.item.backgroundColor =
      shown.kind === 'error' ? new vscode.ThemeColor('statusBarItem.errorBackground')
      : shown.kind === 'warning' ? new vscode.ThemeColor('statusBarItem.warningBackground')
      : undefined;
  }

  dispose(): void {
    this.subscription.dispose();
    this.item.dispose();
  }
}
