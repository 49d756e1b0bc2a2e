// When a crashed server is restarted: at most `maxRestarts` times within a sliding window.
// Pure module (no `vscode` import).

export interface RestartDecision {
  restart: boolean;
  /** Crashes counted in the current window, this one included. */
  crashes: number;
  maxRestarts: number;
}

export class RestartPolicy {
  private crashTimes: number[] = [];

  constructor(
    readonly maxRestarts = 3,
    readonly windowMs = 3 * 60_000,
    private readonly now: () => number = Date.now,
  ) {
    if (!Number.isInteger(maxRestarts) || maxRestarts < 0) {
      throw new RangeError(`maxRestarts must be a non-negative integer, got ${maxRestarts}`);
    }
  }

  /** Records a crash and says whether to restart. */
  onCrash(): RestartDecision {
    const t = this.now();
    this.crashTimes = this.crashTimes.filter((c) => t - c < this.windowMs);
    this.crashTimes.push(t);
    const crashes = this.crashTimes.length;
    return { restart: crashes <= this.maxRestarts, crashes, maxRestarts: this.maxRestarts };
  }

  /** Forget past crashes (the user restarted the server or changed its settings). */
  reset(): void {
    this.crashTimes = [];
  }
}
