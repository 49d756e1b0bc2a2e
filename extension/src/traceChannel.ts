// The "Hone LSP Trace" channel. vscode-languageclient 11 traces only when its trace channel's log
// level is Trace (then hone.trace.server picks messages or verbose); this channel reports Trace
// exactly when hone.trace.server is not "off", so the setting alone switches tracing.

import * as vscode from 'vscode';

export class TraceChannel implements vscode.LogOutputChannel {
  private readonly levelChanged = new vscode.EventEmitter<vscode.LogLevel>();
  readonly onDidChangeLogLevel = this.levelChanged.event;
  private level: vscode.LogLevel;
  private channel: vscode.OutputChannel | undefined;

  constructor(readonly name: string, private readonly setting: () => unknown) {
    this.level = this.levelFromSetting();
  }

  get logLevel(): vscode.LogLevel {
    return this.level;
  }

  /** Re-reads hone.trace.server; call on configuration changes. */
  refresh(): void {
    const level = this.levelFromSetting();
    if (level !== this.level) {
      this.level = level;
      this.levelChanged.fire(level);
    }
  }

  private levelFromSetting(): vscode.LogLevel {
    const value = this.setting();
    return value === 'messages' || value === 'verbose' ? vscode.LogLevel.Trace : vscode.LogLevel.Off;
  }

  private out(): vscode.OutputChannel {
    this.channel ??= vscode.window.createOutputChannel(this.name);
    return this.channel;
  }

  private write(tag: string, message: string | Error, args: unknown[]): void {
    const text = message instanceof Error ? (message.stack ?? message.message) : message;
    const extra = args.length > 0 ? ` ${args.map((a) => (typeof a === 'string' ? a : JSON.stringify(a))).join(' ')}` : '';
    this.out().appendLine(`${new Date().toISOString()} [${tag}] ${text}${extra}`);
  }

  trace(message: string, ...args: unknown[]): void { this.write('trace', message, args); }
  debug(message: string, ...args: unknown[]): void { this.write('debug', message, args); }
  info(message: string, ...args: unknown[]): void { this.write('info', message, args); }
  warn(message: string, ...args: unknown[]): void { this.write('warn', message, args); }
  error(error: string | Error, ...args: unknown[]): void { this.write('error', error, args); }
  append(value: string): void { this.out().append(value); }
  appendLine(value: string): void { this.out().appendLine(value); }
  replace(value: string): void { this.out().replace(value); }
  clear(): void { this.channel?.clear(); }
  show(columnOrPreserveFocus?: vscode.ViewColumn | boolean, preserveFocus?: boolean): void {
    this.out().show(typeof columnOrPreserveFocus === 'boolean' ? columnOrPreserveFocus : preserveFocus);
  }
  hide(): void { this.channel?.hide(); }

  dispose(): void {
    this.levelChanged.dispose();
    this.channel?.dispose();
  }
}
