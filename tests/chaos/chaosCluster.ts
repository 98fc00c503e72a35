// Three managers and three workers as real child processes, each behind its own NodeProxy: a
// process listens on a private 127.0.0.1 port, and its advertised URL (managers' --peers, workers'
// --managers and --advertise-url) is its proxy's. The nemesis drives faults through the methods
// here; every wait is bounded, close() kills every child and stops every proxy.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { killChild, spawnManager, waitForLeader } from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { spawnWorker } from '../../src/cli/localWorkers.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { type LinkFaults, NodeProxy } from './nodeProxy.ts';
import { connectionOwner } from './socketOwner.ts';

export type Kind = 'manager' | 'worker';

export interface Proc {
  name: string;
  kind: Kind;
  realPort: number;
  proxy: NodeProxy;
  dataDir: string;
  child: ChildProcess | null;
  paused: boolean;
  /** Flags added to this start only (the disk-full fault's quota). */
  extraArgs: string[];
}

/** Largest image the chaos clients upload; also each worker's --max-blob-bytes. */
export const MAX_IMAGE_BYTES = 16 * 1024;
export const ORPHAN_GRACE_MS = 2_000;

const MANAGER_ARGS = [
  '--suspect-after-ms',
  '2500',
  '--down-after-ms',
  '6000',
  '--orphan-grace-ms',
  String(ORPHAN_GRACE_MS),
  '--max-image-bytes',
  String(MAX_IMAGE_BYTES),
];

const WORKER_ARGS = ['--max-blob-bytes', String(MAX_IMAGE_BYTES), '--register-attempts', '1000'];

export class ChaosCluster {
  readonly procs: Proc[] = [];
  /** Exits the nemesis did not cause (a crash, or a worker giving up): each is a finding. */
  readonly unexpectedExits: string[] = [];
  private readonly killing = new Set<ChildProcess>();

  private constructor(
    readonly root: string,
    readonly secretFile: string,
    readonly secret: string,
  ) {}

  static async start(opts: { managers?: number; workers?: number } = {}): Promise<ChaosCluster> {
    const root = await mkdtemp(join(tmpdir(), 'imgvault-chaos-'));
    const secret = randomBytes(32).toString('hex');
    const secretFile = join(root, 'cluster-secret');
    await writeFile(secretFile, secret, { mode: 0o600 });
    const cluster = new ChaosCluster(root, secretFile, secret);
    try {
      for (let i = 1; i <= (opts.managers ?? 3); i++) await cluster.addProc(`m${i}`, 'manager');
      for (let i = 1; i <= (opts.workers ?? 3); i++) await cluster.addProc(`w${i}`, 'worker');
      for (const m of cluster.managers()) cluster.spawn(m);
      await waitForLeader(cluster.managerUrls(), 60_000);
      for (const w of cluster.workers()) cluster.spawn(w);
      await cluster.waitForWorkersUp(60_000);
      return cluster;
    } catch (err) {
      await cluster.close();
      throw err;
    }
  }

  /** Polls until a manager's node table shows every worker up; throws after `timeoutMs`. */
  async waitForWorkersUp(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const body = await fetch(`${this.managerUrls()[0]}/v1/cluster/nodes`, {
        signal: AbortSignal.timeout(2_000),
      })
        .then((r) => r.json() as Promise<{ nodes: { id: string; state: string }[] }>)
        .catch(() => null);
      const up = new Set(body?.nodes.filter((n) => n.state === 'up').map((n) => n.id));
      if (this.workers().every((w) => up.has(w.name))) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`workers not all up within ${timeoutMs} ms; logs in ${this.root}`);
  }

  private async addProc(name: string, kind: Kind): Promise<void> {
    const realPort = await freePort();
    const proxy = await NodeProxy.start(name, realPort, (client, proxyPort) =>
      connectionOwner(client, proxyPort, this.pids()),
    );
    this.procs.push({
      name,
      kind,
      realPort,
      proxy,
      dataDir: join(this.root, name),
      child: null,
      paused: false,
      extraArgs: [],
    });
  }

  private pids(): Map<string, number> {
    const pids = new Map<string, number>();
    for (const p of this.procs) if (p.child?.pid !== undefined) pids.set(p.name, p.child.pid);
    return pids;
  }

  managers(): Proc[] {
    return this.procs.filter((p) => p.kind === 'manager');
  }

  workers(): Proc[] {
    return this.procs.filter((p) => p.kind === 'worker');
  }

  managerUrls(): string[] {
    return this.managers().map((m) => m.proxy.url);
  }

  proc(name: string): Proc {
    const p = this.procs.find((x) => x.name === name);
    if (!p) throw new Error(`no process ${name}`);
    return p;
  }

  spawn(p: Proc): void {
    if (p.child) throw new Error(`${p.name} is already running`);
    const common = {
      id: p.name,
      port: p.realPort,
      dataDir: p.dataDir,
      secretFile: this.secretFile,
      logFile: join(this.root, `${p.name}.log`),
      env: { IMGVAULT_LOG_LEVEL: process.env.IMGVAULT_CHAOS_LOG_LEVEL ?? 'warn' },
    };
    const child =
      p.kind === 'manager'
        ? spawnManager({
            ...common,
            peers: this.managers()
              .map((m) => `${m.name}=${m.proxy.url}`)
              .join(','),
            args: MANAGER_ARGS,
          })
        : spawnWorker({
            ...common,
            managers: this.managerUrls(),
            zone: `zone-${p.name}`,
            args: [...WORKER_ARGS, '--advertise-url', p.proxy.url, ...p.extraArgs],
          });
    child.on('exit', (code, signal) => {
      if (!this.killing.delete(child)) {
        this.unexpectedExits.push(`${p.name} exited (${signal ?? code}); see ${common.logFile}`);
      }
      if (p.child === child) p.child = null;
    });
    p.child = child;
    p.paused = false;
  }

  /** kill -9: no handover, no flush; what is durable is what was fsynced. */
  async kill(p: Proc): Promise<void> {
    const child = p.child;
    if (!child) return;
    this.killing.add(child);
    if (p.paused) child.kill('SIGCONT');
    await killChild(child);
    p.child = null;
    p.paused = false;
    p.proxy.resetAll();
  }

  pause(p: Proc): void {
    if (!p.child || p.paused) return;
    p.child.kill('SIGSTOP');
    p.paused = true;
  }

  resume(p: Proc): void {
    if (!p.child || !p.paused) return;
    p.child.kill('SIGCONT');
    p.paused = false;
  }

  /** Faults on the traffic `from` sends to `to` (connections `from` opens to `to`). */
  setLink(from: string, to: string, faults: Partial<LinkFaults>): void {
    this.proc(to).proxy.set(from, faults);
  }

  /** Cuts both directions between two processes (no byte passes either way). */
  cut(a: string, b: string): void {
    this.setLink(a, b, { dropForward: true, dropBackward: true });
    this.setLink(b, a, { dropForward: true, dropBackward: true });
  }

  /**
   * One-way: no byte from `a` reaches `b`. `a`'s requests to `b` are lost, and so are `a`'s
   * answers to `b`'s requests (which `a` still receives and acts on).
   */
  blockOneWay(a: string, b: string): void {
    this.setLink(a, b, { dropForward: true });
    this.setLink(b, a, { dropBackward: true });
  }

  /** Undoes setLink/cut/blockOneWay between two processes, both directions. */
  clearLinks(a: string, b: string): void {
    this.proc(b).proxy.clear(a);
    this.proc(a).proxy.clear(b);
  }

  healLinks(): void {
    for (const p of this.procs) p.proxy.heal();
  }

  /** A worker's GET with the cluster secret, straight to its private port (no fault applies). */
  async workerGet(p: Proc, path: string, timeoutMs = 10_000): Promise<Response> {
    return fetch(`http://127.0.0.1:${p.realPort}${path}`, {
      headers: { [CLUSTER_SECRET_HEADER]: this.secret },
      signal: AbortSignal.timeout(timeoutMs),
    });
  }

  /** Every process running and unpaused, every link clean. */
  async healEverything(): Promise<void> {
    this.healLinks();
    for (const p of this.procs) {
      this.resume(p);
      if (p.extraArgs.length > 0) {
        await this.kill(p);
        p.extraArgs = [];
      }
      if (!p.child) this.spawn(p);
    }
  }

  async close(opts: { keepData?: boolean } = {}): Promise<void> {
    await Promise.all(this.procs.map((p) => this.kill(p)));
    await Promise.all(this.procs.map((p) => p.proxy.stop()));
    if (!opts.keepData) await rm(this.root, { recursive: true, force: true });
  }
}
