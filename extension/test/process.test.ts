import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { chmodSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

import { preflight, spawnRunning, StartError } from '../src/process';

/** A real python3 without site-packages (-S) or environment paths (-I): it cannot import Hone,
 *  even when the tests run inside a virtual environment that has it installed. */
function barepython(): string {
  const path = join(mkdtempSync(join(tmpdir(), 'hone-bare-')), 'python');
  writeFileSync(path, '#!/bin/sh\nexec python3 -I -S "$@"\n');
  chmodSync(path, 0o755);
  return path;
}

// Real child processes, no VS Code: python3 is on every machine that runs these tests.
describe('preflight', () => {
  it('reports an interpreter that does not exist', async () => {
    assert.deepEqual(await preflight('/nonexistent/python', undefined), { kind: 'not-found', detail: 'ENOENT' });
  });
  it('reports a Python without the server package', async () => {
    // "/" (its working directory) does not hold lsp_server either.
    assert.deepEqual(await preflight(barepython(), '/'), { kind: 'not-installed' });
  });
  it('reports an interpreter that fails to run the check', async () => {
    const failure = await preflight('false', undefined);
    assert.equal(failure?.kind, 'exited');
  });
});

describe('spawnRunning', () => {
  it('resolves with a running process', async () => {
    const child = await spawnRunning(process.execPath, ['-e', 'process.stdout.write("ok")'], {});
    let out = '';
    child.stdout?.on('data', (d: Buffer) => (out += d.toString()));
    await new Promise((resolve) => child.once('close', resolve));
    assert.equal(out, 'ok');
  });
  it('rejects with a StartError when the program is missing', async () => {
    await assert.rejects(spawnRunning('/nonexistent/prog', [], {}), (error: unknown) =>
      error instanceof StartError && error.failure.kind === 'not-found');
  });
});
