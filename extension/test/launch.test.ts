import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { describeStartFailure, expandPath, installCommand, lastErrorLine, planLaunch, shellQuote, type LaunchContext } from '../src/launch';
import { DEFAULTS, type HoneSettings } from '../src/settings';

const ctx: LaunchContext = { pythonFromExtension: undefined, workspaceFolder: '/ws', home: '/home/u', defaultPython: 'python3' };
const settings = (over: Partial<HoneSettings>): HoneSettings => ({ ...DEFAULTS, ...over });

describe('planLaunch', () => {
  it('falls back to python3 -m lsp_server', () => {
    assert.deepEqual(planLaunch(settings({}), ctx), { command: 'python3', args: ['-m', 'lsp_server'], source: 'default', python: 'python3' });
  });
  it('prefers the Python extension interpreter over the default', () => {
    const plan = planLaunch(settings({}), { ...ctx, pythonFromExtension: '/ext/python' });
    assert.equal(plan.command, '/ext/python');
    assert.equal(plan.source, 'Python extension');
  });
  it('prefers hone.pythonPath over the Python extension, with paths expanded', () => {
    const plan = planLaunch(settings({ pythonPath: '${workspaceFolder}/.venv/bin/python' }), { ...ctx, pythonFromExtension: '/ext/python' });
    assert.equal(plan.command, '/ws/.venv/bin/python');
    assert.equal(plan.source, 'hone.pythonPath');
  });
  it('prefers hone.serverCommand over everything and appends model and device', () => {
    const plan = planLaunch(settings({ serverCommand: ['~/bin/hone-lsp', '--log-level', 'debug'], pythonPath: '/p', model: '~/models/m', device: 'cpu' }), ctx);
    assert.deepEqual(plan, {
      command: '/home/u/bin/hone-lsp',
      args: ['--log-level', 'debug', '--model', '/home/u/models/m', '--device', 'cpu'],
      source: 'hone.serverCommand',
      python: undefined,
    });
  });
  it('passes --trust-remote-code only when the user allowed it', () => {
    assert.deepEqual(planLaunch(settings({ pythonPath: '/p', trustRemoteCode: true }), ctx).args, ['-m', 'lsp_server', '--trust-remote-code']);
  });
  it('starts the server as the team service client when hone.remote is set (never with the token)', () => {
    const args = planLaunch(settings({ pythonPath: '/p', remote: 'http://gpu-box:8000', remoteToken: 'secret', remoteFallback: true }), ctx).args;
    assert.deepEqual(args, ['-m', 'lsp_server', '--remote', 'http://gpu-box:8000', '--remote-fallback']);
  });
  it('passes no --device for auto', () => {
    assert.deepEqual(planLaunch(settings({ pythonPath: '/p', device: 'auto' }), ctx).args, ['-m', 'lsp_server']);
  });
});

describe('expandPath', () => {
  it('expands ~ only at the start', () => {
    assert.equal(expandPath('~/x', ctx), '/home/u/x');
    assert.equal(expandPath('/a/~/x', ctx), '/a/~/x');
    assert.equal(expandPath('${userHome}/y', ctx), '/home/u/y');
  });
  it('leaves ${workspaceFolder} alone without a folder', () => {
    assert.equal(expandPath('${workspaceFolder}/p', { home: '/h', workspaceFolder: undefined }), '${workspaceFolder}/p');
  });
});

describe('describeStartFailure', () => {
  const plan = planLaunch(settings({ pythonPath: '/opt/my env/python' }), ctx);

  it('names the interpreter, its origin and the install command when Hone is missing', () => {
    const report = describeStartFailure(plan, { kind: 'not-installed' }, 'linux');
    assert.equal(report.installCommand, `'/opt/my env/python' -m pip install hone`);
    assert.match(report.message, /not installed for "\/opt\/my env\/python" \(from hone\.pythonPath\)/);
    assert.ok(report.message.includes(report.installCommand ?? 'x'));
    assert.equal(report.setting, 'hone.pythonPath');
  });
  it('suggests a virtual environment for the default python3', () => {
    const report = describeStartFailure(planLaunch(settings({}), ctx), { kind: 'not-installed' }, 'linux');
    assert.match(report.message, /python3 -m pip install hone.*virtual environment/);
  });
  it('says the interpreter cannot be run', () => {
    const report = describeStartFailure(plan, { kind: 'not-found', detail: 'ENOENT' }, 'linux');
    assert.match(report.message, /"\/opt\/my env\/python" \(from hone\.pythonPath\) could not be run \(ENOENT\)/);
    assert.equal(report.installCommand, undefined);
  });
  it('points at hone.serverCommand when that was used', () => {
    const report = describeStartFailure(planLaunch(settings({ serverCommand: ['nope'] }), ctx), { kind: 'not-found', detail: 'ENOENT' }, 'linux');
    assert.equal(report.setting, 'hone.serverCommand');
    assert.match(report.message, /"nope" \(from hone\.serverCommand\)/);
  });
  it('quotes the exception from stderr when the server exits', () => {
    const report = describeStartFailure(plan, {
      kind: 'exited', code: 1, signal: null, detail: 'closed',
      stderrTail: ['Traceback (most recent call last):', '  File "x.py", line 1', "ModuleNotFoundError: No module named 'torch'", ''],
    }, 'linux');
    assert.match(report.message, /exited with code 1 while starting: ModuleNotFoundError: No module named 'torch'/);
  });
});

describe('helpers', () => {
  it('lastErrorLine prefers the exception line, else the last line', () => {
    assert.equal(lastErrorLine(['a', 'ValueError: bad', 'done']), 'ValueError: bad');
    assert.equal(lastErrorLine(['a', 'b', '  ']), 'b');
    assert.equal(lastErrorLine([]), undefined);
  });
  it('shellQuote quotes only when needed', () => {
    assert.equal(shellQuote('/usr/bin/python3', 'linux'), '/usr/bin/python3');
    assert.equal(shellQuote("it's", 'linux'), `'it'\\''s'`);
    assert.equal(shellQuote('C:\\Program Files\\py.exe', 'win32'), '"C:\\Program Files\\py.exe"');
    assert.equal(installCommand('py', 'win32'), 'py -m pip install hone');
  });
});
