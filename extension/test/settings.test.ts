import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { changeAction, DEFAULTS, NOTIFY_KEYS, readSettings, RESTART_KEYS, toggleTarget, toServerSettings } from '../src/settings';

const reader = (values: Record<string, unknown>) => (key: string): unknown => values[key];

describe('readSettings', () => {
  it('gives the defaults when nothing is set', () => {
    const { settings, problems } = readSettings(reader({}), reader({}));
    assert.deepEqual(settings, DEFAULTS);
    assert.deepEqual(problems, []);
  });

  it('keeps valid values and trims paths', () => {
    const { settings, problems } = readSettings(
      reader({ pythonPath: ' /venv/bin/python ', device: 'cpu', maxTokens: 16, threshold: 0.5, commitRule: 'entropy', mode: 'line', enabled: false }),
      reader({}),
    );
    assert.deepEqual(problems, []);
    assert.equal(settings.pythonPath, '/venv/bin/python');
    assert.equal(settings.device, 'cpu');
    assert.equal(settings.maxTokens, 16);
    assert.equal(settings.threshold, 0.5);
    assert.equal(settings.commitRule, 'entropy');
    assert.equal(settings.mode, 'line');
    assert.equal(settings.enabled, false);
  });

  it('replaces invalid values by defaults and says which', () => {
    const { settings, problems } = readSettings(
      reader({ device: 'tpu', maxTokens: 2.5, threshold: 0, serverCommand: ['hone-lsp', 1] }),
      reader({}),
    );
    assert.equal(settings.device, 'auto');
    assert.equal(settings.maxTokens, 64);
    assert.equal(settings.threshold, 0.9);
    assert.deepEqual(settings.serverCommand, []);
    assert.equal(problems.length, 4);
    assert.ok(problems.some((p) => /hone\.device.*"tpu"/.test(p)), problems.join('\n'));
  });

  it('takes the remote service settings only from the user-level reader', () => {
    const remote = { remote: 'http://gpu-box:8000', remoteToken: 't0ken', remoteFallback: true };
    const fromWorkspace = readSettings(reader(remote), reader({}));
    assert.deepEqual([fromWorkspace.settings.remote, fromWorkspace.settings.remoteToken, fromWorkspace.settings.remoteFallback],
      ['', '', false]);
    const fromUser = readSettings(reader({}), reader(remote));
    assert.deepEqual([fromUser.settings.remote, fromUser.settings.remoteToken, fromUser.settings.remoteFallback],
      ['http://gpu-box:8000', 't0ken', true]);
    const bad = readSettings(reader({}), reader({ remote: 'gpu-box:8000' }));
    assert.equal(bad.settings.remote, '');
    assert.equal(bad.problems.length, 1);
  });

  it('takes trustRemoteCode only from the user-level reader', () => {
    const fromWorkspace = readSettings(reader({ trustRemoteCode: true }), reader({}));
    assert.equal(fromWorkspace.settings.trustRemoteCode, false);
    const fromUser = readSettings(reader({}), reader({ trustRemoteCode: true }));
    assert.equal(fromUser.settings.trustRemoteCode, true);
  });

  it('takes idle adaptation only from the user-level reader (it spends the cores)', () => {
    assert.equal(readSettings(reader({ adapt: 'idle' }), reader({})).settings.adapt, 'off');
    assert.equal(readSettings(reader({}), reader({ adapt: 'idle' })).settings.adapt, 'idle');
    const bad = readSettings(reader({}), reader({ adapt: 'always' }));
    assert.equal(bad.settings.adapt, 'off');
    assert.equal(bad.problems.length, 1);
  });
});

describe('toServerSettings', () => {
  it('sends the server contract fields and nothing about how to launch it', () => {
    const server = toServerSettings({ ...DEFAULTS, pythonPath: '/x/python', serverCommand: ['a'] });
    assert.deepEqual(Object.keys(server).sort(), [
      'adapt', 'commitRule', 'deadlineMs', 'debounceMs', 'device', 'enabled', 'grounding', 'maxTokens', 'minConfidence',
      'mode', 'model', 'remote', 'remoteFallback', 'remoteToken', 'threshold', 'trustRemoteCode', 'useAdapted',
    ]);
    assert.deepEqual(server, {
      enabled: true, model: '', device: 'auto', maxTokens: 64, threshold: 0.9,
      commitRule: 'auto', debounceMs: 10, deadlineMs: 1500, mode: 'auto', trustRemoteCode: false,
      remote: '', remoteToken: '', remoteFallback: false, grounding: true, minConfidence: 0, useAdapted: true,
      adapt: 'off',
    });
  });
});

describe('changeAction', () => {
  const affects = (...changed: string[]) => (section: string): boolean =>
    changed.some((c) => c === section || c.startsWith(`${section}.`));

  it('restarts for launch and model settings', () => {
    for (const key of ['pythonPath', 'serverCommand', 'model', 'device', 'trustRemoteCode']) {
      assert.equal(changeAction(affects(`hone.${key}`)), 'restart', key);
    }
  });
  it('notifies the server for the other hone settings', () => {
    assert.equal(changeAction(affects('hone.threshold')), 'notify');
    assert.equal(changeAction(affects('hone.enabled')), 'notify');
  });
  it('leaves the server alone for hone.trace.server (the client handles it)', () => {
    assert.equal(changeAction(affects('hone.trace.server')), 'none');
  });
  it('ignores other extensions', () => {
    assert.equal(changeAction(affects('python.defaultInterpreterPath')), 'none');
  });
});

describe('settings keys', () => {
  it('sorts every server setting into restart or notify', () => {
    const keys: string[] = [...RESTART_KEYS, ...NOTIFY_KEYS].filter((k) => k !== 'pythonPath' && k !== 'serverCommand');
    assert.deepEqual(keys.sort(), Object.keys(toServerSettings(DEFAULTS)).sort());
  });
});

describe('toggleTarget', () => {
  it('writes where the value is set, else user settings', () => {
    assert.equal(toggleTarget(undefined), 'global');
    assert.equal(toggleTarget({}), 'global');
    assert.equal(toggleTarget({ workspaceValue: false }), 'workspace');
    assert.equal(toggleTarget({ workspaceValue: false, workspaceFolderValue: true }), 'workspaceFolder');
  });
});
