// One manager or worker of `imgvault cluster`, kept running: started in its own process group
// with a control channel (childControl.ts), restarted with bounded backoff when it dies on its
// own (promptly, and with no backoff, when an operator stopped it with a signal), its pid kept in
// `<data>/<id>.pid` so an operator or a tool can signal exactly this process.

import type { ChildProcess } from 'node:child_process';
import { open, rm, stat, writeFile } from 'node:fs/promises';
import { CLUSTER_STOP_MESSAGE } from '../childControl.ts';

export interface RestartPolicy {
  /** Delay before the first restart; it doubles with each restart in a row. */
  firstDelayMs: number;
  maxDelayMs: number;
  /** A child that stayed up this long starts again from firstDelayMs. */
  stableAfterMs: number;
}

export const DEFAULT_RESTART_POLICY: RestartPolicy = {
  firstDelayMs: 1_000,
  maxDelayMs: 30_000,
  stableAfterMs: 60_000,
};

export interface SupervisedChildOptions {
  kind: 'manager' | 'worker';
  id: string;
  /** Spawns the process; the supervisor adds nothing to its options. */
  spawn: () => ChildProcess;
  pidFile: string;
  logFile: string;
  policy?: RestartPolicy;
  /** false: report an unexpected exit but leave the child down (a drill controls its own faults). */
  restart?: boolean;
  /** Where the supervisor's one-line reports go (the launcher's stdout/stderr). */
  say: (line: string) => void;
  /**
   * Asked before each restart, when the child exits (with its exit code) and again just before it
   * is spawned: a reason not to (the child must not come back as it was started, e.g. a manager
   * whose data folder is gone, a worker removed from the cluster), or null.
   */
  refuseRestart?: (exitCode?: number | null) => Promise<string | null>;
}

/** What the child's last run said when it failed: its last plain stderr line, if any. */
export async function lastStartError(logFile: string, fromByte: number): Promise<string | null> {
  let text: string;
  try {
    const handle = await open(logFile, 'r');
    try {
      const { size } = await handle.stat();
      const length = Math.min(size - fromByte, 64 * 1024);
      if (length <= 0) return null;
      const buf = Buffer.alloc(length);
      await handle.read(buf, 0, length, size - length);
      text = buf.toString('utf8');
    } finally {
      await handle.close();
    }
  } catch {
    return null;
  }
  // Managers and workers print one `imgvault <kind> <id>: <why>` line to stderr when they fail.
  const lines = text.split('\n').filter((l) => l.startsWith('imgvault '));
  return lines.at(-1)?.replace(/^imgvault \w+ [^:]+: /, '') ?? null;
}

async function sizeOf(file: string): Promise<number> {
  try {
    return (await stat(file)).size;
  } catch {
    return 0;
  }
}

export class SupervisedChild {
  private proc: ChildProcess | null = null;
  private stopping = false;
  private restarts = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private startedAt = 0;
  private logOffset = 0;
  private readonly policy: RestartPolicy;
  /** Called after every unexpected exit, with the child's own reason when it printed one. */
  onUnexpectedExit: (reason: string | null, exit: string) => void = () => {};

  constructor(private readonly opts: SupervisedChildOptions) {
    this.policy = opts.policy ?? DEFAULT_RESTART_POLICY;
  }

  get name(): string {
    return `${this.opts.kind} ${this.opts.id}`;
  }

  get pid(): number | undefined {
    return this.proc?.pid;
  }

  get running(): boolean {
    return this.proc !== null && this.proc.exitCode === null && this.proc.signalCode === null;
  }

  async start(): Promise<void> {
    this.logOffset = await sizeOf(this.opts.logFile);
    // A stop that came during that await finds no new child to stop: spawn none.
    if (this.stopping) return;
    const proc = this.opts.spawn();
    this.proc = proc;
    this.startedAt = Date.now();
    proc.once('exit', (code, signal) => void this.exited(proc, code, signal));
    // A send to a child that just died fails asynchronously; the exit handler covers it.
    proc.on('error', () => {});
    if (proc.pid !== undefined) await writeFile(this.opts.pidFile, `${proc.pid}\n`);
  }

  private async exited(
    proc: ChildProcess,
    code: number | null,
    signal: NodeJS.Signals | null,
  ): Promise<void> {
    if (this.stopping || proc !== this.proc) return;
    const stoppedBy = stoppedOnPurpose(code, signal);
    if (stoppedBy !== null) return this.stoppedByOperator(stoppedBy);
    const exit = signal ?? `exit code ${code}`;
    const reason = await lastStartError(this.opts.logFile, this.logOffset);
    if (Date.now() - this.startedAt >= this.policy.stableAfterMs) this.restarts = 0;
    const delay = Math.min(this.policy.maxDelayMs, this.policy.firstDelayMs * 2 ** this.restarts);
    this.restarts += 1;
    const what = `imgvault cluster: ${this.name} exited (${exit})${reason ? `: ${reason}` : ''}`;
    if (this.opts.restart === false) {
      this.opts.say(`${what}; not restarted (--no-restart; log ${this.opts.logFile})`);
      this.onUnexpectedExit(reason, exit);
      return;
    }
    const refused = (await this.opts.refuseRestart?.(code)) ?? null;
    if (refused !== null) {
      this.opts.say(`${what}; not restarted: ${refused}`);
      this.onUnexpectedExit(reason, exit);
      return;
    }
    this.opts.say(
      `${what}; restarting in ${formatDelay(delay)} (restart ${this.restarts}; log ${this.opts.logFile})`,
    );
    this.onUnexpectedExit(reason, exit);
    if (this.stopping) return;
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  /**
   * A child an operator stopped with a signal of its own (a rolling restart: SIGTERM to its pid)
   * did not crash: it is restarted after the first delay, however often, and leaves the count of
   * crashes in a row, and so the next crash's delay, as it was. Not an unexpected exit either.
   */
  private async stoppedByOperator(how: string): Promise<void> {
    const what = `imgvault cluster: ${this.name} stopped ${how}: a stop on purpose, not a crash`;
    if (this.opts.restart === false) {
      this.opts.say(`${what}; not restarted (--no-restart; log ${this.opts.logFile})`);
      return;
    }
    const refused = (await this.opts.refuseRestart?.()) ?? null;
    if (refused !== null) {
      this.opts.say(`${what}; not restarted: ${refused}`);
      return;
    }
    const delay = this.policy.firstDelayMs;
    this.opts.say(
      `${what}; restarting in ${formatDelay(delay)} (to keep it down, stop the cluster; log ${this.opts.logFile})`,
    );
    if (this.stopping) return;
    this.restartTimer = setTimeout(() => void this.restart(), delay);
  }

  private async restart(): Promise<void> {
    if (this.stopping) return;
    // Asked again at the spawn: what condemns the child may have come while it waited (an
    // operator removing a dead manager's folder in the second before its restart).
    const refused = (await this.opts.refuseRestart?.()) ?? null;
    if (this.stopping) return;
    if (refused !== null) {
      this.opts.say(`imgvault cluster: ${this.name} not restarted: ${refused}`);
      return;
    }
    try {
      await this.start();
      this.opts.say(`imgvault cluster: ${this.name} restarted (pid ${this.proc?.pid})`);
    } catch (err) {
      // A launcher that dies here would leave the child it just spawned running unsupervised.
      this.opts.say(`imgvault cluster: ${this.name} restart failed: ${(err as Error).message}`);
    }
  }

  /**
   * Asks the child to stop (the control message: no handover, the cluster is stopping), kills it
   * if it has not exited within graceMs, and removes its pid file.
   */
  async stop(graceMs = 10_000): Promise<void> {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    const proc = this.proc;
    if (proc && proc.exitCode === null && proc.signalCode === null) {
      const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
      if (proc.connected) proc.send(CLUSTER_STOP_MESSAGE);
      else proc.kill('SIGTERM');
      const timer = setTimeout(() => proc.kill('SIGKILL'), graceMs);
      await exited;
      clearTimeout(timer);
    }
    await rm(this.opts.pidFile, { force: true });
  }

  /** SIGKILL, for a second Ctrl-C: the operator will not wait. */
  kill(): void {
    this.stopping = true;
    clearTimeout(this.restartTimer);
    if (this.running) this.proc?.kill('SIGKILL');
  }
}

/**
 * How a child the launcher did not ask to stop was stopped on purpose, or null for a crash. Our
 * managers and workers exit 0 only after a clean stop on SIGTERM or SIGINT (the launcher's own
 * stops never come here); a second signal forces a worker out with 128 + its number; one that
 * comes before a process has set up its handlers ends it by the signal itself. SIGKILL is left a
 * crash: it is also how the kernel ends a process out of memory.
 */
export function stoppedOnPurpose(code: number | null, signal: NodeJS.Signals | null): string | null {
  if (code === 0) return 'cleanly (exit code 0) by a signal sent to it';
  if (signal === 'SIGTERM' || signal === 'SIGINT') return `by ${signal}`;
  if (code === 128 + 15) return 'by a second SIGTERM (exit code 143)';
  if (code === 128 + 2) return 'by a second SIGINT (exit code 130)';
  return null;
}

function formatDelay(ms: number): string {
  return ms % 1_000 === 0 ? `${ms / 1_000} s` : `${ms} ms`;
}
