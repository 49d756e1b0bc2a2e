import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { acceptanceLine, COMMANDS, countHoles, menuItems } from '../src/menu';

describe('menuItems', () => {
  it('offers editing commands only while the server runs', () => {
    const running = menuItems(true, 'running').map((i) => i.command);
    assert.deepEqual(running, [COMMANDS.toggle, COMMANDS.rewriteSelection, COMMANDS.fillHoles, COMMANDS.restart, COMMANDS.showLog]);
    const failed = menuItems(true, 'failed').map((i) => i.command);
    assert.deepEqual(failed, [COMMANDS.toggle, COMMANDS.restart, COMMANDS.showLog]);
  });
  it('labels the toggle by what it will do', () => {
    assert.match(menuItems(true, 'running')[0]?.label ?? '', /Disable/);
    assert.match(menuItems(false, 'running')[0]?.label ?? '', /Enable/);
  });
});

describe('acceptanceLine', () => {
  const stats = { python: { shown: 40, accepted: 8, typed: 2, partial: 5, dismissed: 25, acceptedRate: 0.25, partialRate: 0.125 } };
  it('says what was accepted in the language, and shows it in the menu', () => {
    const line = acceptanceLine(stats, 'python');
    assert.equal(line, '25% accepted, 13% in part, of 40 python suggestions');
    assert.ok(menuItems(true, 'running', line).some((i) => i.label.includes(line)));
  });
  it('says nothing without settled suggestions in that language', () => {
    assert.equal(acceptanceLine(stats, 'lua'), '');
    assert.equal(acceptanceLine(undefined, 'python'), '');
    assert.equal(menuItems(true, 'running', '').length, 5);
  });
});

describe('countHoles', () => {
  it('counts ??? markers', () => {
    assert.equal(countHoles('x = ???\ny = ??? + ???'), 3);
    assert.equal(countHoles('no holes? really?'), 0);
  });
});
