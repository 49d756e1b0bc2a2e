import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { RestartPolicy } from '../src/restartPolicy';

describe('RestartPolicy', () => {
  it('restarts up to maxRestarts crashes within the window, then stops', () => {
    let now = 0;
    const policy = new RestartPolicy(3, 1000, () => now);
    const decisions = [0, 1, 2, 3].map(() => { now += 10; return policy.onCrash(); });
    assert.deepEqual(decisions.map((d) => d.restart), [true, true, true, false]);
    assert.deepEqual(decisions.map((d) => d.crashes), [1, 2, 3, 4]);
  });
  it('forgets crashes older than the window', () => {
    let now = 0;
    const policy = new RestartPolicy(1, 1000, () => now);
    assert.equal(policy.onCrash().restart, true);
    now = 1500;
    assert.equal(policy.onCrash().restart, true);
    now = 1600;
    assert.equal(policy.onCrash().restart, false);
  });
  it('reset() starts counting again', () => {
    const policy = new RestartPolicy(1, 1000, () => 0);
    policy.onCrash();
    assert.equal(policy.onCrash().restart, false);
    policy.reset();
    assert.equal(policy.onCrash().restart, true);
  });
  it('rejects a bad limit', () => {
    assert.throws(() => new RestartPolicy(-1), RangeError);
  });
});
