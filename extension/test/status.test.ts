import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { formatLatency, modelName, parseStatus, presentStatus, type HoneStatus, type StatusView } from '../src/status';

const ready: HoneStatus = { state: 'ready', model: '/pkg/models/hone-small', device: 'cpu', lastLatencyMs: 41.6, tokensPerForward: 2.5, message: '' };
const view = (over: Partial<StatusView>): StatusView => ({ phase: 'running', enabled: true, server: ready, failure: undefined, ...over });

describe('parseStatus', () => {
  it('accepts the contract shape', () => {
    assert.deepEqual(parseStatus({ ...ready }), ready);
  });
  it('fills missing optional fields and drops junk', () => {
    assert.deepEqual(parseStatus({ state: 'busy', lastLatencyMs: 'x' }), {
      state: 'busy', model: '', device: '', lastLatencyMs: null, tokensPerForward: null, message: '',
    });
  });
  it('rejects unknown states and non-objects', () => {
    assert.equal(parseStatus({ state: 'sleeping' }), undefined);
    assert.equal(parseStatus(null), undefined);
    assert.equal(parseStatus('ready'), undefined);
  });
});

describe('presentStatus', () => {
  it('shows model, device and latency when ready', () => {
    const p = presentStatus(view({}));
    assert.equal(p.text, '$(sparkle) Hone hone-small · cpu · 42 ms');
    assert.equal(p.kind, 'normal');
    assert.match(p.tooltip, /Model: \/pkg\/models\/hone-small\nDevice: cpu\nLast completion: 42 ms\nTokens per forward: 2.50/);
  });
  it('spins while loading or busy', () => {
    assert.match(presentStatus(view({ server: { ...ready, state: 'loading' } })).text, /^\$\(loading~spin\) Hone: loading/);
    assert.match(presentStatus(view({ server: { ...ready, state: 'busy' } })).text, /^\$\(sync~spin\)/);
  });
  it('flags server errors with their message', () => {
    const p = presentStatus(view({ server: { ...ready, state: 'error', message: 'CUDA out of memory' } }));
    assert.equal(p.kind, 'error');
    assert.match(p.tooltip, /Hone: error\n[\s\S]*CUDA out of memory/);
  });
  it('says when completions are off', () => {
    const p = presentStatus(view({ enabled: false }));
    assert.match(p.text, /^\$\(circle-slash\) Hone .* \(off\)$/);
    assert.match(p.tooltip, /Toggle Completions/);
  });
  it('shows client phases without a server status', () => {
    assert.equal(presentStatus(view({ phase: 'starting', server: undefined })).text, '$(loading~spin) Hone');
    assert.equal(presentStatus(view({ phase: 'stopped', server: undefined })).kind, 'warning');
    const failed = presentStatus(view({ phase: 'failed', server: undefined, failure: 'Hone is not installed.' }));
    assert.equal(failed.kind, 'error');
    assert.match(failed.tooltip, /Hone is not installed\./);
  });
  it('formats names and latencies', () => {
    assert.equal(modelName('C:\\models\\m1\\'), 'm1');
    assert.equal(modelName(''), '');
    assert.equal(formatLatency(1234), '1.2 s');
    assert.equal(formatLatency(7.2), '7 ms');
  });
});
