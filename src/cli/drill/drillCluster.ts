// The drill's own embedded cluster: managers and workers as child processes started with the
// same helpers as `imgvault cluster`, on free ports (or the ports given) in a folder of its own,
// so that the drill can kill, pause and restart them without touching anyone else's processes.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import {
  fetchRaftView,
  killChild,
  managerUrl,
  peersSpec,
  spawnManager,
  stopChild,
  waitForLeader,
} from '../localManagers.ts';
import { freePort } from '../localProcess.ts';
import { spawnWorker, workerUrl } from '../localWorkers.ts';

export interface DrillProc {
  id: string;
  port: number;
  url: string;
  dataDir: string;
  child: ChildProcess | null;
  /** Stopped with SIGSTOP: alive, but answers nothing. */
  paused: boolean;
  /**
   * A manager the drill counts as a serving member: sent load, asked who leads, checked at the end.
   * False while it is down, paused, starting up, or not (yet) a member.
   */
  serving: boolean;
}

export interface DrillClusterOptions {
  dataDir: string;
  /** First manager port; the others follow. Free ports when absent. */
  basePort?: number;
  workerBasePort?: number;
  managers: number;
  workers: number;
  /** Liveness and repair settings that make worker faults resolve in seconds. */
  managerArgs: string[];
  workerArgs: string[];
  logLevel: string;
  startTimeoutMs: number;
}

/**
 * Settings for a drill: a worker is suspect after 1 s of silence and down after 3 s, so a worker
 * fault is repaired within seconds, yet a busy machine's late heartbeat does not condemn a live
 * worker; orphans (bytes of uploads cut short) go after the minimum grace.
 */
export const DRILL_MANAGER_ARGS = [
  '--suspect-after-ms',
  '1000',
  '--down-after-ms',
  '3000',
  '--heartbeat-interval-ms',
  '200',
  '--usage-summary-ms',
  '500',
  '--orphan-grace-ms',
  '1000',
];
export const DRILL_WORKER_ARGS = ['--register-backoff-ms', '200', '--heartbeat-interval-ms', '200'];

export class DrillCluster {
  readonly managers: DrillProc[] = [];
  readonly workers: DrillProc[] = [];
  readonly secret = randomBytes(32).toString('hex');
  readonly secretFile: string;
  private nextPort: number | undefined;
  /** The founding members' peer list, which a restarted founding manager is given again. */
  private foundingPeers = '';

  private constructor(private readonly opts: DrillClusterOptions) {
    this.secretFile = join(opts.dataDir, 'cluster-secret');
  }

  static async start(opts: DrillClusterOptions): Promise<DrillCluster> {
    const cluster = new DrillCluster(opts);
    try {
      await cluster.boot();
      return cluster;
    } catch (err) {
      await cluster.stop();
      throw err;
    }
  }

  private async boot(): Promise<void> {
    const { opts } = this;
    await mkdir(opts.dataDir, { recursive: true });
    await writeFile(this.secretFile, `${this.secret}\n`, { mode: 0o600 });
    for (let i = 0; i < opts.managers; i++) {
      this.managers.push(await this.proc(`m${i + 1}`, opts.basePort, i));
    }
    this.foundingPeers = peersSpec(this.managers);
    for (const m of this.managers) this.startManager(m, this.foundingPeers, []);
    await this.leader(opts.startTimeoutMs);
    for (let i = 0; i < opts.workers; i++) {
      const w = await this.proc(`w${i + 1}`, opts.workerBasePort, i, workerUrl);
      this.workers.push(w);
      this.startWorker(w);
    }
    await this.waitForWorkersUp(opts.startTimeoutMs);
  }

  private async proc(
    id: string,
    base: number | undefined,
    offset: number,
    urlOf: (port: number) => string = managerUrl,
  ): Promise<DrillProc> {
    const port = base === undefined ? await freePort() : base + offset;
    return {
      id,
      port,
      url: urlOf(port),
      dataDir: join(this.opts.dataDir, id),
      child: null,
      paused: false,
      serving: true,
    };
  }

  /** A port for a manager added later: the one after the given base's managers, or a free one. */
  async newManager(id: string): Promise<DrillProc> {
    const base = this.opts.basePort;
    this.nextPort ??= base === undefined ? undefined : base + this.managers.length;
    const port = this.nextPort === undefined ? await freePort() : this.nextPort++;
    const m: DrillProc = {
      id,
      port,
      url: managerUrl(port),
      dataDir: join(this.opts.dataDir, id),
      child: null,
      paused: false,
      serving: false,
    };
    this.managers.push(m);
    return m;
  }

  private childOptions(id: string) {
    return { logFile: join(this.opts.dataDir, `${id}.log`), env: { IMGVAULT_LOG_LEVEL: this.opts.logLevel } };
  }

  startManager(m: DrillProc, peers: string, extraArgs: string[]): void {
    if (m.child) throw new Error(`manager ${m.id} is already running`);
    m.child = spawnManager({
      id: m.id,
      port: m.port,
      dataDir: m.dataDir,
      peers,
      secretFile: this.secretFile,
      args: [...this.opts.managerArgs, ...extraArgs],
      ...this.childOptions(m.id),
    });
  }

  /** Restarts a stopped founding manager with its old flags and data. */
  restartManager(m: DrillProc): void {
    this.startManager(m, this.foundingPeers, []);
  }

  startWorker(w: DrillProc): void {
    if (w.child) throw new Error(`worker ${w.id} is already running`);
    w.child = spawnWorker({
      id: w.id,
      port: w.port,
      dataDir: w.dataDir,
      managers: this.running().map((m) => m.url),
      secretFile: this.secretFile,
      zone: `zone-${w.id}`,
      args: this.opts.workerArgs,
      ...this.childOptions(w.id),
    });
  }

  /** Managers that are serving members right now. */
  running(): DrillProc[] {
    return this.managers.filter((m) => m.child !== null && !m.paused && m.serving);
  }

  runningUrls(): string[] {
    return this.running().map((m) => m.url);
  }

  async leader(timeoutMs: number): Promise<DrillProc> {
    const found = await waitForLeader(this.runningUrls(), timeoutMs);
    const m = this.managers.find((x) => x.id === found.id);
    if (!m) throw new Error(`leader ${found.id} is not one of this drill's managers`);
    return m;
  }

  async kill(p: DrillProc): Promise<void> {
    if (p.paused) this.resume(p);
    p.serving = false;
    if (p.child) await killChild(p.child);
    p.child = null;
  }

  async stopGracefully(p: DrillProc): Promise<void> {
    p.serving = false;
    if (p.child) await stopChild(p.child, 10_000);
    p.child = null;
  }

  pause(p: DrillProc): void {
    p.child?.kill('SIGSTOP');
    p.paused = true;
  }

  resume(p: DrillProc): void {
    p.child?.kill('SIGCONT');
    p.paused = false;
    p.serving = true;
  }

  /**
   * Until the leader has counted every running worker up (each at least once: on a busy machine a
   * late heartbeat can make one look suspect for a moment, which is not what this waits for).
   */
  async waitForWorkersUp(timeoutMs: number): Promise<void> {
    const want = new Set(this.workers.filter((w) => w.child !== null).map((w) => w.id));
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const leader = await this.leader(Math.max(1, deadline - Date.now()));
      const states = await this.nodeStates(leader.url).catch(() => new Map<string, string>());
      for (const [id, state] of states) if (state === 'up') want.delete(id);
      if (want.size === 0) return;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`workers ${[...want].join(', ')} not up within ${timeoutMs} ms`);
  }

  /** Worker id -> state as the given manager (the leader, for the liveness view) sees it. */
  async nodeStates(url: string): Promise<Map<string, string>> {
    const res = await fetch(`${url}/v1/cluster/nodes`, { signal: AbortSignal.timeout(2_000) });
    const body = (await res.json()) as { nodes: { id: string; state: string }[] };
    return new Map(body.nodes.map((n) => [n.id, n.state]));
  }

  raftView(m: DrillProc, timeoutMs = 500) {
    return fetchRaftView(m.url, timeoutMs);
  }

  /** Kills every process still running (a paused one is woken first so it can die). */
  async stop(): Promise<void> {
    await Promise.all([...this.managers, ...this.workers].map((p) => this.kill(p)));
  }

  async removeData(): Promise<void> {
    await rm(this.opts.dataDir, { recursive: true, force: true });
  }
}
