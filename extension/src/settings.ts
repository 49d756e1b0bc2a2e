// The `hone.*` settings: typed defaults, validation, and the object sent to the server.
// Pure module (no `vscode` import) so it is unit tested without VS Code.

export const DEVICES = ['auto', 'cpu', 'cuda', 'mps'] as const;
export const COMMIT_RULES = ['auto', 'threshold', 'entropy', 'one', 'ar'] as const;
export const MODES = ['auto', 'line', 'block'] as const;

export type Device = (typeof DEVICES)[number];
export type CommitRule = (typeof COMMIT_RULES)[number];
export type Mode = (typeof MODES)[number];
export const ADAPT_MODES = ['off', 'idle'] as const;
export type AdaptMode = (typeof ADAPT_MODES)[number];

/** Everything the extension reads from `hone.*` (trace.server is read by vscode-languageclient). */
export interface HoneSettings {
  enabled: boolean;
  pythonPath: string;
  serverCommand: string[];
  model: string;
  device: Device;
  maxTokens: number;
  threshold: number;
  commitRule: CommitRule;
  debounceMs: number;
  deadlineMs: number;
  mode: Mode;
  trustRemoteCode: boolean;
  remote: string;
  remoteToken: string;
  remoteFallback: boolean;
  grounding: boolean;
  minConfidence: number;
  useAdapted: boolean;
  adapt: AdaptMode;
}

/** The camelCase object of initializationOptions and workspace/didChangeConfiguration. */
export interface ServerSettings {
  enabled: boolean;
  model: string;
  device: Device;
  maxTokens: number;
  threshold: number;
  commitRule: CommitRule;
  debounceMs: number;
  deadlineMs: number;
  mode: Mode;
  trustRemoteCode: boolean;
  remote: string;
  remoteToken: string;
  remoteFallback: boolean;
  grounding: boolean;
  minConfidence: number;
  useAdapted: boolean;
  adapt: AdaptMode;
}

/** Must match the `default`s in package.json (a unit test checks). */
export const DEFAULTS: Readonly<HoneSettings> = Object.freeze({
  enabled: true,
  pythonPath: '',
  serverCommand: [],
  model: '',
  device: 'auto',
  maxTokens: 64,
  threshold: 0.9,
  commitRule: 'auto',
  debounceMs: 10,
  deadlineMs: 1500,
  mode: 'auto',
  trustRemoteCode: false,
  remote: '',
  remoteToken: '',
  remoteFallback: false,
  grounding: true,
  minConfidence: 0,
  useAdapted: true,
  adapt: 'off',
});

/** Settings whose change needs a new server process (the launch command or the loaded model). */
export const RESTART_KEYS = [
  'pythonPath', 'serverCommand', 'model', 'device', 'trustRemoteCode', 'remote', 'remoteToken', 'remoteFallback',
  'useAdapted', 'adapt',
] as const;

/** Reads one key below `hone.`; returns undefined when unset. */
export type SettingReader = (key: string) => unknown;

export interface ReadResult {
  settings: HoneSettings;
  /** One line per invalid value that was replaced by its default. */
  problems: string[];
}

/**
 * Validates raw values into HoneSettings.
 * `userOnly` must return only user (global) values: trustRemoteCode, remote* and adapt are never taken from a workspace.
 */
export function readSettings(get: SettingReader, userOnly: SettingReader): ReadResult {
  const problems: string[] = [];
  const pick = <T>(key: keyof HoneSettings, value: unknown, valid: (v: unknown) => v is T, fallback: T): T => {
    if (value === undefined || value === null) {
      return fallback;
    }
    if (valid(value)) {
      return value;
    }
    problems.push(`hone.${key}: ignoring invalid value ${JSON.stringify(value)}; using ${JSON.stringify(fallback)}`);
    return fallback;
  };
  const isBool = (v: unknown): v is boolean => typeof v === 'boolean';
  const isString = (v: unknown): v is string => typeof v === 'string';
  const isStringArray = (v: unknown): v is string[] => Array.isArray(v) && v.every(isString);
  const intIn = (lo: number, hi: number) => (v: unknown): v is number =>
    typeof v === 'number' && Number.isInteger(v) && v >= lo && v <= hi;
  const oneOf = <T extends string>(choices: readonly T[]) => (v: unknown): v is T =>
    typeof v === 'string' && (choices as readonly string[]).includes(v);
  const probability = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v > 0 && v <= 1;
  const unitInterval = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v) && v >= 0 && v <= 1;
  const isUrl = (v: unknown): v is string => typeof v === 'string' && /^(https?:\/\/\S+)?$/.test(v.trim());

  return {
    settings: {
      enabled: pick('enabled', get('enabled'), isBool, DEFAULTS.enabled),
      pythonPath: pick('pythonPath', get('pythonPath'), isString, DEFAULTS.pythonPath).trim(),
      serverCommand: pick('serverCommand', get('serverCommand'), isStringArray, [...DEFAULTS.serverCommand]),
      model: pick('model', get('model'), isString, DEFAULTS.model).trim(),
      device: pick('device', get('device'), oneOf(DEVICES), DEFAULTS.device),
      maxTokens: pick('maxTokens', get('maxTokens'), intIn(1, 1024), DEFAULTS.maxTokens),
      threshold: pick('threshold', get('threshold'), probability, DEFAULTS.threshold),
      commitRule: pick('commitRule', get('commitRule'), oneOf(COMMIT_RULES), DEFAULTS.commitRule),
      debounceMs: pick('debounceMs', get('debounceMs'), intIn(0, 2000), DEFAULTS.debounceMs),
      deadlineMs: pick('deadlineMs', get('deadlineMs'), intIn(0, 60_000), DEFAULTS.deadlineMs),
      mode: pick('mode', get('mode'), oneOf(MODES), DEFAULTS.mode),
      trustRemoteCode: pick('trustRemoteCode', userOnly('trustRemoteCode'), isBool, DEFAULTS.trustRemoteCode),
      remote: pick('remote', userOnly('remote'), isUrl, DEFAULTS.remote).trim(),
      remoteToken: pick('remoteToken', userOnly('remoteToken'), isString, DEFAULTS.remoteToken).trim(),
      remoteFallback: pick('remoteFallback', userOnly('remoteFallback'), isBool, DEFAULTS.remoteFallback),
      grounding: pick('grounding', get('grounding'), isBool, DEFAULTS.grounding),
      minConfidence: pick('minConfidence', get('minConfidence'), unitInterval, DEFAULTS.minConfidence),
      useAdapted: pick('useAdapted', get('useAdapted'), isBool, DEFAULTS.useAdapted),
      adapt: pick('adapt', userOnly('adapt'), oneOf(ADAPT_MODES), DEFAULTS.adapt),
    },
    problems,
  };
}

export function toServerSettings(s: HoneSettings): ServerSettings {
  return {
    enabled: s.enabled,
    model: s.model,
    device: s.device,
    maxTokens: s.maxTokens,
    threshold: s.threshold,
    commitRule: s.commitRule,
    debounceMs: s.debounceMs,
    deadlineMs: s.deadlineMs,
    mode: s.mode,
    trustRemoteCode: s.trustRemoteCode,
    remote: s.remote,
    remoteToken: s.remoteToken,
    remoteFallback: s.remoteFallback,
    grounding: s.grounding,
    minConfidence: s.minConfidence,
    useAdapted: s.useAdapted,
    adapt: s.adapt,
  };
}

/** Settings the running server takes through workspace/didChangeConfiguration. */
export const NOTIFY_KEYS = [
  'enabled', 'maxTokens', 'threshold', 'commitRule', 'debounceMs', 'deadlineMs', 'mode', 'grounding', 'minConfidence',
] as const;

/** What a configuration change asks of the running server. */
export type ChangeAction = 'restart' | 'notify' | 'none';

/** `affects` is ConfigurationChangeEvent.affectsConfiguration. */
export function changeAction(affects: (section: string) => boolean): ChangeAction {
  if (RESTART_KEYS.some((key) => affects(`hone.${key}`))) {
    return 'restart';
  }
  return NOTIFY_KEYS.some((key) => affects(`hone.${key}`)) ? 'notify' : 'none';
}

/** Where Toggle writes `hone.enabled`: the most specific scope that already sets it, else user settings. */
export type ToggleTarget = 'workspaceFolder' | 'workspace' | 'global';

export function toggleTarget(inspect: {
  workspaceFolderValue?: unknown;
  workspaceValue?: unknown;
} | undefined): ToggleTarget {
  if (inspect?.workspaceFolderValue !== undefined) {
    return 'workspaceFolder';
  }
  if (inspect?.workspaceValue !== undefined) {
    return 'workspace';
  }
  return 'global';
}
