// Where the editor placed the cursor (a click, a jump, another editor shown; not typing), told to the server as
// `hone/cursor` so that it can compute the completion there before the first keystroke. Free of the vscode module
// (the wiring is in extension.ts), so the tests run it with fake timers.

export const CURSOR_NOTIFICATION = 'hone/cursor';
/** A cursor moved again within this many ms is reported once, where it came to rest. */
export const CURSOR_DEBOUNCE_MS = 100;

export interface CursorPlace {
  uri: string;
  line: number;
  character: number;
}

export interface Timers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

const realTimers: Timers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
};

/**
 * Whether a selection change placed the cursor rather than typed: a keyboard move, a click or a command (VS Code
 * gives typing no kind), one cursor and nothing selected.
 */
export function isPlacement(kind: number | undefined, cursors: number, emptySelection: boolean): boolean {
  return kind !== undefined && cursors === 1 && emptySelection;
}

/** Sends the place where the cursor came to rest, once per place; typing forgets the last place sent. */
export class CursorReporter {
  private pending: unknown;
  private lastSent: string | undefined;

  constructor(
    private readonly send: (place: CursorPlace) => void,
    private readonly delayMs: number = CURSOR_DEBOUNCE_MS,
    private readonly timers: Timers = realTimers,
  ) {}

  placed(place: CursorPlace): void {
    this.cancel();
    this.pending = this.timers.set(() => {
      this.pending = undefined;
      const key = `${place.uri}\u0000${place.line}\u0000${place.character}`;
      if (key !== this.lastSent) {
        this.lastSent = key;
        this.send(place);
      }
    }, this.delayMs);
  }

  /** The user typed: the inline request that follows does the work; a later placement is sent even if equal. */
  typed(): void {
    this.cancel();
    this.lastSent = undefined;
  }

  dispose(): void {
    this.cancel();
  }

  private cancel(): void {
    if (this.pending !== undefined) {
      this.timers.clear(this.pending);
      this.pending = undefined;
    }
  }
}
