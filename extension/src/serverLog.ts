// Server stderr: the log level of a line, and the last lines kept for error messages.
// Pure module (no `vscode` import).

export type LineLevel = 'error' | 'warn' | 'info' | 'debug';

/** Python logging and tracebacks write plain lines to stderr; guess each line's level from its text. */
export function lineLevel(line: string): LineLevel {
  if (/\b(ERROR|CRITICAL|FATAL)\b|^Traceback \(most recent call last\)|^\s*File ".*", line \d+|^[\w.]*(Error|Exception)\b/.test(line)) {
    return 'error';
  }
  if (/\bWARN(ING)?\b/.test(line)) {
    return 'warn';
  }
  if (/\bDEBUG\b/.test(line)) {
    return 'debug';
  }
  return 'info';
}

/** Keeps the last `capacity` lines. */
export class TailBuffer {
  private lines: string[] = [];

  constructor(readonly capacity = 40) {}

  push(line: string): void {
    this.lines.push(line);
    if (this.lines.length > this.capacity) {
      this.lines.splice(0, this.lines.length - this.capacity);
    }
  }

  snapshot(): readonly string[] {
    return [...this.lines];
  }

  clear(): void {
    this.lines = [];
  }
}
