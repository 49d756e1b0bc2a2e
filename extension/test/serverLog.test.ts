import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { lineLevel, TailBuffer } from '../src/serverLog';

describe('lineLevel', () => {
  it('classifies Python logging and tracebacks', () => {
    assert.equal(lineLevel('2025-01-01 12:00:00 ERROR lsp_server: boom'), 'error');
    assert.equal(lineLevel('Traceback (most recent call last):'), 'error');
    assert.equal(lineLevel('  File "/x/y.py", line 3, in <module>'), 'error');
    assert.equal(lineLevel("ModuleNotFoundError: No module named 'torch'"), 'error');
    assert.equal(lineLevel('WARNING:root:slow'), 'warn');
    assert.equal(lineLevel('DEBUG model loaded'), 'debug');
    assert.equal(lineLevel('INFO ready'), 'info');
    assert.equal(lineLevel('plain text'), 'info');
  });
});

describe('TailBuffer', () => {
  it('keeps the last lines', () => {
    const tail = new TailBuffer(2);
    ['a', 'b', 'c'].forEach((l) => tail.push(l));
    assert.deepEqual(tail.snapshot(), ['b', 'c']);
    tail.clear();
    assert.deepEqual(tail.snapshot(), []);
  });
});
