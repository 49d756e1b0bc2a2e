// `hone/status` notifications and what the status bar shows for them.
// Pure module (no `vscode` import).

export const STATUS_NOTIFICATION = 'hone/status';

export const SERVER_STATES = ['loading', 'ready', 'busy', 'error'] as const;
export type ServerState = (typeof SERVER_STATES)[number];

/** Params of the server → client notification `hone/status`. */
export interface HoneStatus {
  state: ServerState;
  model: string;
  device: string;
  lastLatencyMs: number | null;
  tokensPerForward: number | null;
  message: string;
}

/** Validates notification params; tolerates missing optional fields, rejects an unknown state. */
export function parseStatus(params: unknown): HoneStatus | undefined {
  if (typeof params !== 'object' || params === null) {
    return undefined;
  }
  const p = params as Record<string, unknown>;
  if (typeof p['state'] !== 'string' || !(SERVER_STATES as readonly string[]).includes(p['state'])) {
    return undefined;
  }
  const str = (v: unknown): string => (typeof v === 'string' ? v : '');
  const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
  return {
    state: p['state'] as ServerState,
    model: str(p['model']),
    device: str(p['device']),
    lastLatencyMs: num(p['lastLatencyMs']),
    tokensPerForward: num(p['tokensPerForward']),
    message: str(p['message']),
  };
}

/** The extension's view of its server process. */
export type ClientPhase = 'starting' | 'running' | 'stopped' | 'failed';

export interface StatusView {
  phase: ClientPhase;
  enabled: boolean;
  /** Latest `hone/status` from the running server. */
  server: HoneStatus | undefined;
  /** Why the client failed, when phase is 'failed'. */
  failure: string | undefined;
}

export interface StatusPresentation {
  text: string;
  tooltip: string;
  kind: 'normal' | 'warning' | 'error';
}

/** The last path component of a model path or name ("" stays ""). */
export function modelName(model: string): string {
  const parts = model.split(/[\\/]/).filter((p) => p !== '');
  return parts[parts.length - 1] ?? '';
}

export function formatLatency(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms)} ms`;
}

export function presentStatus(view: StatusView): StatusPresentation {
  const lines: string[] = [];
  const s = view.server;
  if (s !== undefined && view.phase === 'running') {
    if (s.model !== '') lines.push(`Model: ${s.model}`);
    if (s.device !== '') lines.push(`Device: ${s.device}`);
    if (s.lastLatencyMs !== null) lines.push(`Last completion: ${formatLatency(s.lastLatencyMs)}`);
    if (s.tokensPerForward !== null) lines.push(`Tokens per forward: ${s.tokensPerForward.toFixed(2)}`);
    if (s.message !== '') lines.push(s.message);
  }
  if (!view.enabled) lines.push('Inline completions are off (Hone: Toggle Completions).');
  lines.push('Click for Hone commands.');
  const tooltip = (head: string): string => [head, ...lines].join('\n');

  switch (view.phase) {
    case 'failed':
      return {
        text: '$(error) Hone',
        tooltip: [`Hone: server not running. ${view.failure ?? ''}`.trim(), 'Click for Hone commands.'].join('\n'),
        kind: 'error',
      };
    case 'stopped':
      return { text: '$(debug-disconnect) Hone', tooltip: tooltip('Hone: server stopped'), kind: 'warning' };
    case 'starting':
      return { text: '$(loading~spin) Hone', tooltip: tooltip('Hone: starting the server…'), kind: 'normal' };
    case 'running':
      break;
  }
  const off = view.enabled ? '' : ' (off)';
  const icon = view.enabled ? '$(sparkle)' : '$(circle-slash)';
  if (s === undefined) {
    return { text: `${icon} Hone${off}`, tooltip: tooltip('Hone: server running'), kind: 'normal' };
  }
  const detail = [modelName(s.model), s.device].filter((x) => x !== '').join(' · ');
  switch (s.state) {
    case 'loading':
      return { text: `$(loading~spin) Hone: loading${off}`, tooltip: tooltip('Hone: loading the model…'), kind: 'normal' };
    case 'busy':
      return { text: `$(sync~spin) Hone${detail ? ` ${detail}` : ''}${off}`, tooltip: tooltip('Hone: completing…'), kind: 'normal' };
    case 'error':
      return { text: `$(warning) Hone${off}`, tooltip: tooltip('Hone: error'), kind: 'error' };
    case 'ready': {
      const latency = s.lastLatencyMs !== null ? ` · ${formatLatency(s.lastLatencyMs)}` : '';
      return { text: `${icon} Hone${detail ? ` ${detail}` : ''}${latency}${off}`, tooltip: tooltip('Hone: ready'), kind: 'normal' };
    }
  }
}
