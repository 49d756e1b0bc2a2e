// Owns the language client: starts the server, restarts it after a crash (bounded), reports
// why it could not start, and tracks `hone/status`.

import * as readline from 'node:readline';
import type { Readable } from 'node:stream';

import * as vscode from 'vscode';
import {
  CloseAction,
  DidChangeConfigurationNotification,
  ErrorAction,
  LanguageClient,
  RevealOutputChannelOn,
  State,
  type CloseHandlerResult,
  type LanguageClientOptions,
} from 'vscode-languageclient/node';

import { describeStartFailure, lastErrorLine, planLaunch, type LaunchContext, type LaunchPlan, type StartFailure } from './launch';
import { preflight, spawnRunning, StartError } from './process';
import { RestartPolicy } from './restartPolicy';
import { lineLevel, TailBuffer } from './serverLog';
import { toServerSettings, type HoneSettings } from './settings';
import { parseStatus, STATUS_NOTIFICATION, type ClientPhase, type HoneStatus, type StatusView } from './status';

export const DOCUMENT_SELECTOR = [
  { scheme: 'file', language: 'python' },
  { scheme: 'untitled', language: 'python' },
];

/** HoneServer reports each failure once, with its fix; the client's own pop-ups would repeat it. */
class HoneLanguageClient extends LanguageClient {
  override error(message: string, data?: unknown, _showNotification?: boolean | 'force'): void {
    super.error(message, data, false);
  }
}

interface ProcessInfo {
  tail: TailBuffer;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

export interface HoneServerDeps {
  log: vscode.LogOutputChannel;
  trace: vscode.LogOutputChannel;
  settings(): HoneSettings;
  /** Context for planLaunch; may ask the Python extension, so only when the settings name no interpreter. */
  launchContext(settings: HoneSettings): Promise<LaunchContext>;
}

const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export class HoneServer implements vscode.Disposable {
  private phase: ClientPhase = 'stopped';
  private status: HoneStatus | undefined;
  private failure: string | undefined;
  private client: HoneLanguageClient | undefined;
  /** Bumped by every start and stop; callbacks of an older client check it and do nothing. */
  private generation = 0;
  /** True while start() itself awaits the client, which then reports its own failure. */
  private starting = false;
  private process: ProcessInfo | undefined;
  private queue: Promise<void> = Promise.resolve();
  private enabled: boolean;
  private readonly policy = new RestartPolicy();
  private readonly changed = new vscode.EventEmitter<void>();
  /** Fires when phase, status or enablement change. */
  readonly onDidChange = this.changed.event;

  constructor(private readonly deps: HoneServerDeps) {
    this.enabled = deps.settings().enabled;
  }

  view(): StatusView {
    return { phase: this.phase, enabled: this.enabled, server: this.status, failure: this.failure };
  }

  /** The client when the server is up, else undefined. */
  runningClient(): LanguageClient | undefined {
    return this.phase === 'running' ? this.client : undefined;
  }

  start(): Promise<void> {
    return this.enqueue(() => this.startNow());
  }

  stop(): Promise<void> {
    return this.enqueue(() => this.stopNow());
  }

  /** Stops and starts a new server process; forgets earlier crashes. */
  restart(): Promise<void> {
    return this.enqueue(async () => {
      this.policy.reset();
      await this.stopNow();
      await this.startNow();
    });
  }

  /** Sends changed settings to the running server (workspace/didChangeConfiguration). */
  updateSettings(settings: HoneSettings): void {
    this.enabled = settings.enabled;
    this.changed.fire();
    const client = this.runningClient();
    if (client !== undefined) {
      client
        .sendNotification(DidChangeConfigurationNotification.type, { settings: { hone: toServerSettings(settings) } })
        .catch((error: unknown) => this.deps.log.warn(`Sending settings failed: ${String(error)}`));
    }
  }

  private enqueue(task: () => Promise<void>): Promise<void> {
    const run = this.queue.then(task, task);
    this.queue = run.catch((error: unknown) => this.deps.log.error(`Hone: ${String(error)}`));
    return this.queue;
  }

  private setPhase(phase: ClientPhase, failure?: string): void {
    this.phase = phase;
    this.failure = failure;
    if (phase !== 'running') {
      this.status = undefined;
    }
    this.changed.fire();
  }

  private async startNow(): Promise<void> {
    const generation = ++this.generation;
    this.setPhase('starting');
    const settings = this.deps.settings();
    this.enabled = settings.enabled;
    const context = await this.deps.launchContext(settings);
    const plan = planLaunch(settings, context);
    this.deps.log.info(`Starting the server (${plan.source}): ${[plan.command, ...plan.args].join(' ')}`);

    if (plan.python !== undefined) {
      const failure = await preflight(plan.python, context.workspaceFolder);
      if (generation !== this.generation) {
        return;
      }
      if (failure !== undefined) {
        this.reportStartFailure(plan, failure);
        return;
      }
    }

    const client = this.createClient(plan, settings, context, generation);
    this.client = client;
    this.starting = true;
    try {
      await client.start();
      if (generation === this.generation) {
        this.setPhase('running');
      }
    } catch (error) {
      if (generation === this.generation) {
        this.reportStartFailure(plan, await this.failureOf(error));
        this.client = undefined;
        await this.disposeClient(client);
      }
    } finally {
      this.starting = false;
    }
  }

  private async stopNow(): Promise<void> {
    this.generation++;
    const client = this.client;
    this.client = undefined;
    if (client !== undefined) {
      await this.disposeClient(client);
    }
    this.setPhase('stopped');
  }

  private async disposeClient(client: LanguageClient): Promise<void> {
    if (client.state === State.Stopped) {
      // Never started or already failed: dispose() only releases its listeners (and rejects, since
      // there is nothing to stop).
      await client.dispose().catch(() => undefined);
      return;
    }
    try {
      await client.dispose(3000);
    } catch (error) {
      this.deps.log.warn(`Stopping the server: ${String(error)}`);
    }
  }

  /** Turns a rejected client.start() into a StartFailure, waiting briefly for the exit code. */
  private async failureOf(error: unknown): Promise<StartFailure> {
    if (error instanceof StartError) {
      return error.failure;
    }
    const info = this.process;
    const exit = info !== undefined ? await Promise.race([info.exited, delay(2000).then(() => undefined)]) : undefined;
    return {
      kind: 'exited',
      code: exit?.code ?? null,
      signal: exit?.signal ?? null,
      detail: error instanceof Error ? error.message : String(error),
      stderrTail: info?.tail.snapshot() ?? [],
    };
  }

  private reportStartFailure(plan: LaunchPlan, failure: StartFailure): void {
    const report = describeStartFailure(plan, failure, process.platform);
    this.deps.log.error(report.message);
    this.setPhase('failed', report.message);
    const actions = report.installCommand !== undefined ? ['Install in Terminal', 'Copy Install Command'] : [];
    actions.push('Open Settings', 'Show Log');
    void vscode.window.showErrorMessage(report.message, ...actions).then((choice) => {
      switch (choice) {
        case 'Install in Terminal': {
          const terminal = vscode.window.createTerminal('Hone: install');
          terminal.show();
          terminal.sendText(report.installCommand ?? '');
          void vscode.window.showInformationMessage('When the install has finished, run Hone: Restart Server.', 'Restart Server')
            .then((again) => (again !== undefined ? this.restart() : undefined));
          break;
        }
        case 'Copy Install Command':
          void vscode.env.clipboard.writeText(report.installCommand ?? '');
          break;
        case 'Open Settings':
          void vscode.commands.executeCommand('workbench.action.openSettings', report.setting);
          break;
        case 'Show Log':
          this.deps.log.show();
          break;
      }
    });
  }

  /** After a crash of a running server: restart it a bounded number of times, telling the user. */
  private onConnectionClosed(generation: number): CloseHandlerResult {
    if (generation !== this.generation || this.phase !== 'running') {
      // Still starting: startNow() or the state listener reports it.
      return { action: CloseAction.DoNotRestart, handled: true };
    }
    const tail = this.process?.tail.snapshot() ?? [];
    const why = lastErrorLine(tail);
    const decision = this.policy.onCrash();
    const minutes = this.policy.windowMs / 60_000;
    if (decision.restart) {
      const message = `Hone's server stopped unexpectedly${why !== undefined ? ` (${why})` : ''}; restarting it (${decision.crashes} of ${decision.maxRestarts}).`;
      this.deps.log.warn(message);
      this.setPhase('starting');
      void vscode.window.showWarningMessage(message, 'Show Log').then((choice) => choice !== undefined && this.deps.log.show());
      return { action: CloseAction.Restart, handled: true };
    }
    const message = `Hone's server crashed ${decision.crashes} times in ${minutes} minutes and was not restarted${why !== undefined ? ` (${why})` : ''}. See the log, then run Hone: Restart Server.`;
    this.deps.log.error(message);
    this.setPhase('failed', message);
    void vscode.window.showErrorMessage(message, 'Show Log', 'Restart Server').then((choice) => {
      if (choice === 'Show Log') this.deps.log.show();
      if (choice === 'Restart Server') void this.restart();
    });
    return { action: CloseAction.DoNotRestart, handled: true };
  }

  private createClient(plan: LaunchPlan, settings: HoneSettings, context: LaunchContext, generation: number): HoneLanguageClient {
    const log = this.deps.log;
    const serverOptions = async () => {
      const child = await spawnRunning(plan.command, plan.args, {
        cwd: context.workspaceFolder ?? context.home,
        env: process.env,
      });
      const tail = new TailBuffer();
      const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
        child.once('exit', (code, signal) => {
          log.info(`Server process ${child.pid} exited (code ${code}, signal ${signal}).`);
          resolve({ code, signal });
        }),
      );
      this.process = { tail, exited };
      return child;
    };
    const clientOptions: LanguageClientOptions = {
      documentSelector: DOCUMENT_SELECTOR,
      outputChannel: log,
      traceOutputChannel: this.deps.trace,
      revealOutputChannelOn: RevealOutputChannelOn.Never,
      initializationOptions: toServerSettings(settings),
      // One clear message (startNow) instead of the client's generic "initialization failed".
      initializationFailedHandler: () => false,
      errorHandler: {
        error: (_error, _message, count) => ({
          action: (count ?? 0) <= 3 ? ErrorAction.Continue : ErrorAction.Shutdown,
          handled: true,
        }),
        closed: () => this.onConnectionClosed(generation),
      },
      stdioOptions: {
        stdout: (input: Readable) => input.resume(),
        stderr: (input: Readable, channel: vscode.LogOutputChannel) => {
          readline.createInterface({ input, crlfDelay: Infinity, terminal: false }).on('line', (line) => {
            this.process?.tail.push(line);
            channel[lineLevel(line)](`[server] ${line}`);
          });
        },
      },
      middleware: {
        provideInlineCompletionItems: async (document, position, inlineContext, token, next) => {
          if (!this.enabled || token.isCancellationRequested) {
            return null;
          }
          const result = await next(document, position, inlineContext, token);
          return token.isCancellationRequested ? null : result;
        },
        provideCompletionItem: async (document, position, completionContext, token, next) => {
          if (!this.enabled || token.isCancellationRequested) {
            return null;
          }
          const result = await next(document, position, completionContext, token);
          return token.isCancellationRequested ? null : result;
        },
      },
    };
    const client = new HoneLanguageClient('hone', 'Hone', serverOptions, clientOptions);
    client.onNotification(STATUS_NOTIFICATION, (params: unknown) => {
      const status = parseStatus(params);
      if (generation === this.generation && status !== undefined) {
        this.status = status;
        this.changed.fire();
      }
    });
    client.onDidChangeState((event) => {
      if (generation !== this.generation || this.starting) {
        return;
      }
      // A restart after a crash, run by the client itself.
      if (event.newState === State.Running && this.phase === 'starting') {
        this.setPhase('running');
      } else if (event.oldState === State.Starting && event.newState === State.Stopped && this.phase === 'starting') {
        void this.failureOf(new Error('the restarted server stopped')).then((failure) => {
          if (generation === this.generation) {
            this.reportStartFailure(plan, failure);
          }
        });
      }
    });
    return client;
  }

  dispose(): void {
    void this.stop();
    this.changed.dispose();
  }
}
