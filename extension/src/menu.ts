// The status bar menu and the editor commands' pure helpers.
// Pure module (no `vscode` import).

import type { ClientPhase } from './status';

/** Command ids this extension contributes. They must differ from the server's executeCommand ids
 * (`hone.rewriteSelection`, `hone.fillHoles`, `hone.accepted`), which vscode-languageclient registers itself. */
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

/** One language's row of hone/stats' `acceptance` (counted by the server, on this machine only). */
export interface AcceptanceRow {
  shown: number;
  accepted: number;
  typed: number;
  partial: number;
  dismissed: number;
  acceptedRate: number | null;
  partialRate: number | null;
}

/** The menu's line of what was accepted in `languageId` ("" when nothing was settled there yet). */
export function acceptanceLine(acceptance: unknown, languageId: string): string {
  const row = (acceptance as Record<string, AcceptanceRow> | undefined)?.[languageId];
  if (row === undefined || row.acceptedRate === null || row.partialRate === null) {
    return '';
  }
  const pct = (x: number): string => `${Math.round(x * 100)}%`;
  return `${pct(row.acceptedRate)} accepted, ${pct(row.partialRate)} in part, of ${row.shown} ${languageId} suggestions`;
}

export function menuItems(enabled: boolean, phase: ClientPhase, acceptance = ''): MenuItem[] {
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
  if (acceptance) {
    items.push({ label: `$(graph) ${acceptance}`, description: 'counted on this machine only', command: COMMANDS.showLog });
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
