import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';

import { COMMANDS, SERVER_COMMANDS } from '../src/menu';
import { DEFAULTS, RESTART_KEYS } from '../src/settings';

interface Property {
  type: string;
  default: unknown;
  scope?: string;
  description?: string;
  markdownDescription?: string;
  enum?: string[];
  enumDescriptions?: string[];
}

// Tests run from out/test; package.json sits two levels up.
const manifest = JSON.parse(readFileSync(join(__dirname, '..', '..', 'package.json'), 'utf8')) as {
  engines: { vscode: string };
  contributes: { commands: { command: string; category: string }[]; configuration: { properties: Record<string, Property> } };
  capabilities: { untrustedWorkspaces: { supported: string; restrictedConfigurations: string[] } };
  devDependencies: Record<string, string>;
};
const properties = manifest.contributes.configuration.properties;

describe('package.json', () => {
  it('declares every setting with scope, default and description, and enums with enumDescriptions', () => {
    for (const [key, p] of Object.entries(properties)) {
      assert.ok(p.scope, `${key} scope`);
      assert.ok('default' in p, `${key} default`);
      assert.ok(p.description ?? p.markdownDescription, `${key} description`);
      if (p.enum) {
        assert.equal(p.enumDescriptions?.length, p.enum.length, `${key} enumDescriptions`);
        assert.ok(p.enum.includes(p.default as string), `${key} default in enum`);
      }
    }
  });

  it('has the same defaults as settings.ts', () => {
    for (const [key, value] of Object.entries(DEFAULTS)) {
      assert.deepEqual(properties[`hone.${key}`]?.default, value, key);
    }
    assert.ok(properties['hone.trace.server']);
  });

  it('keeps trustRemoteCode and the model path out of workspace settings', () => {
    assert.equal(properties['hone.trustRemoteCode']?.scope, 'application');
    assert.equal(properties['hone.model']?.scope, 'machine');
  });

  it('restricts the launch settings in untrusted workspaces', () => {
    const untrusted = manifest.capabilities.untrustedWorkspaces;
    assert.equal(untrusted.supported, 'limited');
    assert.deepEqual(untrusted.restrictedConfigurations.sort(), ['hone.pythonPath', 'hone.serverCommand']);
    for (const key of RESTART_KEYS) {
      assert.ok(properties[`hone.${key}`], key);
    }
  });

  it('contributes the commands, none colliding with the server command ids', () => {
    const ids: string[] = manifest.contributes.commands.map((c) => c.command).sort();
    assert.deepEqual([...ids], Object.values(COMMANDS).sort());
    for (const id of Object.values(SERVER_COMMANDS)) {
      assert.ok(!ids.includes(id), `${id} is registered by vscode-languageclient`);
    }
    assert.ok(manifest.contributes.commands.every((c) => c.category === 'Hone'));
  });

  it('pins @types/vscode to the lowest supported VS Code', () => {
    assert.equal(manifest.engines.vscode, '^1.91.0');
    assert.match(manifest.devDependencies['@types/vscode'] ?? '', /^\^?1\.91\./);
  });
});
