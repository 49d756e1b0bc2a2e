import assert from 'node:assert/strict';
import { describe, it } from 'node:test';

import { COMMANDS, countHoles, menuItems } from '../src/menu';

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

describe('countHoles', () => {
  it('counts ??? markers', () => {
    assert.equal(countHoles('x = ???\ny = ??? + ???'), 3);
    assert.equal(countHoles('no holes? really?'), 0);
  });
});
