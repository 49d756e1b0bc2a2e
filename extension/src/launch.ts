// How the language server is started, and what to tell the user when it cannot be.
// Pure module (no `vscode` import).

import type { HoneSettings } from './settings';

/** The pip distribution that provides `hone-lsp` / `python -m lsp_server`. */
export const PYTHON_PACKAGE = 'hone';
export const SERVER_MODULE = 'lsp_server';

export type LaunchSource = 'hone.serverCommand' | 'hone.pythonPath' | 'Python extension' | 'default';

export interface LaunchPlan {
  command: string;
  args: string[];
  source: LaunchSource;
  /** The interpreter when the server runs as `python -m lsp_server`; undefined for hone.serverCommand. */
  python: string | undefined;
}

export interface LaunchContext {
  /** The interpreter selected in the Python extension, if it is installed and has one. */
  pythonFromExtension: string | undefined;
  workspaceFolder: string | undefined;
  home: string;
  /** Used when nothing else names an interpreter: `python3` (or `python` on Windows). */
  defaultPython: string;
}

/** Expands a leading `~` and `${workspaceFolder}` / `${userHome}` like the Python extension does. */
export function expandPath(path: string, ctx: Pick<LaunchContext, 'workspaceFolder' | 'home'>): string {
  let out = path.replace(/\$\{userHome\}/g, ctx.home);
  if (ctx.workspaceFolder !== undefined) {
    out = out.replace(/\$\{workspaceFolder\}/g, ctx.workspaceFolder);
  }
  if (out === '~' || out.startsWith('~/') || out.startsWith('~\\')) {
    out = ctx.home + out.slice(1);
  }
  return out;
}

/** `--model` / `--device` / `--trust-remote-code` / `--remote` for the server's command line (the same values also go in initializationOptions). */
export function serverArgs(s: HoneSettings, ctx: Pick<LaunchContext, 'workspaceFolder' | 'home'>): string[] {
  const args: string[] = [];
  if (s.model !== '') {
    args.push('--model', expandPath(s.model, ctx));
  }
  if (s.device !== 'auto') {
    args.push('--device', s.device);
  }
  if (s.trustRemoteCode) {
    args.push('--trust-remote-code'); // user-level only (readSettings); lets the server load it at startup
  }
  if (s.remote !== '') {
    // user-level only too: the server starts as the service's client instead of loading a local model first
    // (the token travels in initializationOptions, never on a command line other processes can read)
    args.push('--remote', s.remote);
    if (s.remoteFallback) {
      args.push('--remote-fallback');
    }
  }
  return args;
}

/** hone.serverCommand, else hone.pythonPath, else the Python extension's interpreter, else the default python. */
export function planLaunch(s: HoneSettings, ctx: LaunchContext): LaunchPlan {
  const extra = serverArgs(s, ctx);
  const [command, ...commandArgs] = s.serverCommand.filter((part) => part.trim() !== '');
  if (command !== undefined) {
    return { command: expandPath(command, ctx), args: [...commandArgs, ...extra], source: 'hone.serverCommand', python: undefined };
  }
  let python: string;
  let source: LaunchSource;
  if (s.pythonPath !== '') {
    python = expandPath(s.pythonPath, ctx);
    source = 'hone.pythonPath';
  } else if (ctx.pythonFromExtension !== undefined && ctx.pythonFromExtension !== '') {
    python = ctx.pythonFromExtension;
    source = 'Python extension';
  } else {
    python = ctx.defaultPython;
    source = 'default';
  }
  return { command: python, args: ['-m', SERVER_MODULE, ...extra], source, python };
}

/** Arguments for a fast check (no heavy imports) that the interpreter can import the server package. */
export const PREFLIGHT_EXIT_NOT_INSTALLED = 3;
export function preflightArgs(): string[] {
  return [
    '-c',
    `import importlib.util, sys; sys.exit(0 if importlib.util.find_spec('${SERVER_MODULE}') else ${PREFLIGHT_EXIT_NOT_INSTALLED})`,
  ];
}

export function shellQuote(arg: string, platform: string): string {
  if (/^[\w@%+=:,./-]+$/.test(arg)) {
    return arg;
  }
  return platform === 'win32' ? `"${arg.replace(/"/g, '""')}"` : `'${arg.replace(/'/g, `'\\''`)}'`;
}

export function installCommand(python: string, platform: string): string {
  return `${shellQuote(python, platform)} -m pip install ${PYTHON_PACKAGE}`;
}

export type StartFailure =
  /** The program could not be executed (spawn ENOENT, EACCES, ...). */
  | { kind: 'not-found'; detail: string }
  /** The interpreter runs but cannot import the server package. */
  | { kind: 'not-installed' }
  /** The server process ended (or failed) before it finished initializing. */
  | { kind: 'exited'; code: number | null; signal: string | null; detail: string; stderrTail: readonly string[] };

export interface FailureReport {
  message: string;
  /** A shell command that fixes it, when there is one. */
  installCommand: string | undefined;
  /** The setting the user may want to change. */
  setting: 'hone.pythonPath' | 'hone.serverCommand';
}

function origin(plan: LaunchPlan): string {
  switch (plan.source) {
    case 'hone.serverCommand':
      return 'from hone.serverCommand';
    case 'hone.pythonPath':
      return 'from hone.pythonPath';
    case 'Python extension':
      return 'selected in the Python extension';
    case 'default':
      return 'the default, since neither hone.pythonPath nor the Python extension names one';
  }
}

/** The last stderr line worth showing: a Python exception line if there is one. */
export function lastErrorLine(tail: readonly string[]): string | undefined {
  const lines = tail.map((line) => line.trim()).filter((line) => line !== '');
  const exception = [...lines].reverse().find((line) => /^[\w.]*(Error|Exception|Exit)\b.*:/.test(line));
  return exception ?? lines[lines.length - 1];
}

/** One message that says why the server did not start and how to fix it. */
export function describeStartFailure(plan: LaunchPlan, failure: StartFailure, platform: string): FailureReport {
  const setting = plan.source === 'hone.serverCommand' ? 'hone.serverCommand' : 'hone.pythonPath';
  const program = plan.python ?? plan.command;
  switch (failure.kind) {
    case 'not-found': {
      if (plan.python === undefined) {
        return {
          message: `Hone could not start its server: "${program}" (${origin(plan)}) could not be run (${failure.detail}). Fix hone.serverCommand, or clear it to use hone.pythonPath.`,
          installCommand: undefined,
          setting,
        };
      }
      return {
        message: `Hone could not start its server: the Python interpreter "${program}" (${origin(plan)}) could not be run (${failure.detail}). Set hone.pythonPath to a Python that has Hone installed.`,
        installCommand: undefined,
        setting,
      };
    }
    case 'not-installed': {
      const install = installCommand(program, platform);
      const venvHint = plan.source === 'default'
        ? ' (or create a virtual environment, install Hone there and point hone.pythonPath at its python)'
        : '';
      return {
        message: `Hone is not installed for "${program}" (${origin(plan)}). Install it with: ${install}${venvHint}, or set hone.pythonPath to a Python that has it.`,
        installCommand: install,
        setting,
      };
    }
    case 'exited': {
      const how = failure.code !== null
        ? `exited with code ${failure.code}`
        : failure.signal !== null ? `was killed by ${failure.signal}` : `failed (${failure.detail})`;
      const why = lastErrorLine(failure.stderrTail);
      return {
        message: `Hone's server "${[program, ...plan.args].join(' ')}" ${how} while starting${why !== undefined ? `: ${why}` : ''}. See Hone: Show Log for details.`,
        installCommand: undefined,
        setting,
      };
    }
  }
}
