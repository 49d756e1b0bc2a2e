import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { CursorReporter, isPlacement, type CursorPlace, type Timers } from '../src/cursor';

class FakeTimers implements Timers {
  private next = 1;
  readonly queued = new Map<number, () => void>();
  set(fn: () => void): unknown {
    const id = this.next++;
    this.queued.set(id, fn);
    return id;
  }
  clear(handle: unknown): void {
    this.queued.delete(handle as number);
  }
  fire(): void {
    const due = [...this.queued.values()];
    this.queued.clear();
    due.forEach((fn) => fn());
  }
}

const at = (line: number, character: number, uri = 'file:///a.py'): CursorPlace => ({ uri, line, character });

/** A reporter on fake timers, and what it sent. */
function reporter(): { sent: CursorPlace[]; timers: FakeTimers; r: CursorReporter } {
  const sent: CursorPlace[] = [];
  const timers = new FakeTimers();
  return { sent, timers, r: new CursorReporter((p) => sent.push(p), 100, timers) };
}

describe('CursorReporter', () => {
  it('sends only where the cursor came to rest', () => {
    const { sent, timers, r } = reporter();
    r.placed(at(1, 2));
    r.placed(at(3, 4));
    assert.equal(timers.queued.size, 1);
    timers.fire();
    assert.deepEqual(sent, [at(3, 4)]);
  });
  it('does not send the same place twice, unless the user typed in between', () => {
    const { sent, timers, r } = reporter();
    r.placed(at(1, 2));
    timers.fire();
    r.placed(at(1, 2));
    timers.fire();
    assert.equal(sent.length, 1);
    r.typed();
    r.placed(at(1, 2));
    timers.fire();
    assert.equal(sent.length, 2);
    r.placed(at(1, 2, 'file:///b.py'));
    timers.fire();
    assert.equal(sent.length, 3);
  });
  it('typing or disposing drops a place not yet sent', () => {
    const { sent, timers, r } = reporter();
    r.placed(at(5, 0));
    r.typed();
    r.placed(at(6, 0));
    r.dispose();
    timers.fire();
    assert.deepEqual(sent, []);
  });
});

describe('isPlacement', () => {
  it('is a keyboard move, a click or a command with one empty selection; typing has no kind', () => {
    assert.equal(isPlacement(1, 1, true), true);
    assert.equal(isPlacement(2, 1, true), true);
    assert.equal(isPlacement(undefined, 1, true), false);
    assert.equal(isPlacement(2, 2, true), false);
    assert.equal(isPlacement(2, 1, false), false);
  });
});
