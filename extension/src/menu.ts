// The status bar menu and the editor commands' pure helpers.
// Pure module (no `vscode` import).

import type { ClientPhase } from './status';

/** Command ids this extension contributes. They must differ from the server's executeCommand ids
 * (`hone.rewriteSelection`, `hone.fillHoles`), which vscode-languageclient registers itself. */
export const COMMANDS = {
  rewriteSelection: 'hone.rewriteSelectionInEditor',
  fillHoles: 'hone.fillHolesInEditor',
  toggle: 'hone.toggle',
  restart: 'hone.restartServer',
  showLog: 'hone.showLog',
  showMenu: 'hone.showMenu',
} as const;

/** The server's workspace/executeCommand ids. */
export const SERVER_COMMANDS = {
  rewriteSelection: 'hone.rewriteSelection',
  fillHoles: 'hone.fillHoles',
} as const;

export interface MenuItem {
  label: string;
  description: string;
  command: string;
}

export function menuItems(enabled: boolean, phase: ClientPhase): MenuItem[] {
  const running = phase === 'running';
  const items: MenuItem[] = [
    {
      label: enabled ? '$(circle-slash) Disable Completions' : '$(sparkle) Enable Completions',
      description: 'hone.enabled',
      command: COMMANDS.toggle,
    },
  ];
  if (running) {
    items.push(
      { label: '$(edit) Rewrite Selection', description: 'regenerate the selected code', command: COMMANDS.rewriteSelection },
      { label: '$(question) Fill Holes (???)', description: 'fill every ??? in this file', command: COMMANDS.fillHoles },
    );
  }
  items.push(
    { label: '$(debug-restart) Restart Server', description: phase === 'running' ? '' : `server ${phase}`, command: COMMANDS.restart },
    { label: '$(output) Show Log', description: '', command: COMMANDS.showLog },
  );
  return items;
}

export const HOLE = '???';

export function countHoles(text: string): number {
  return text.split(HOLE).length - 1;
}
