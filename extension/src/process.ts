// Spawning the server and checking its interpreter first. Node only (no `vscode` import).

import { spawn, type ChildProcess, type SpawnOptions } from 'node:child_process';

import { PREFLIGHT_EXIT_NOT_INSTALLED, preflightArgs, type StartFailure } from './launch';

function spawnErrorDetail(error: NodeJS.ErrnoException): string {
  return error.code ?? error.message;
}

/** Spawns a process and resolves once it is running; rejects with a 'not-found' failure otherwise. */
export function spawnRunning(command: string, args: string[], options: SpawnOptions): Promise<ChildProcess> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { ...options, stdio: 'pipe', shell: false, windowsHide: true });
    const onError = (error: NodeJS.ErrnoException): void => {
      child.off('spawn', onSpawn);
      reject(new StartError({ kind: 'not-found', detail: spawnErrorDetail(error) }));
    };
    const onSpawn = (): void => {
      child.off('error', onError);
      resolve(child);
    };
    child.once('error', onError);
    child.once('spawn', onSpawn);
  });
}

export class StartError extends Error {
  constructor(readonly failure: StartFailure) {
    super(failure.kind === 'not-found' ? `cannot run: ${failure.detail}` : failure.kind);
  }
}

/** Checks, without importing it, that `python` can import the server package. */
export async function preflight(python: string, cwd: string | undefined, timeoutMs = 15_000): Promise<StartFailure | undefined> {
  let child: ChildProcess;
  try {
    child = await spawnRunning(python, preflightArgs(), cwd !== undefined ? { cwd } : {});
  } catch (error) {
    if (error instanceof StartError) {
      return error.failure;
    }
    throw error;
  }
  const stderr: string[] = [];
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => stderr.push(chunk));
  child.stdout?.resume();
  const timer = setTimeout(() => child.kill(), timeoutMs);
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve) =>
    child.once('close', (c: number | null, s: NodeJS.Signals | null) => resolve([c, s])),
  );
  clearTimeout(timer);
  if (code === 0) {
    return undefined;
  }
  if (code === PREFLIGHT_EXIT_NOT_INSTALLED) {
    return { kind: 'not-installed' };
  }
  const tail = stderr.join('').split(/\r?\n/).slice(-20);
  return { kind: 'exited', code, signal, detail: signal !== null ? 'timed out' : 'check failed', stderrTail: tail };
}
