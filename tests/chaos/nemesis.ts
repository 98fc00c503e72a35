// The nemesis: from a seeded generator, every few seconds it heals or injects one fault per slot,
// with two slots, one for the managers and one for the workers, so at most one manager and one
// worker are faulty at any moment (the guarantee imgvault makes) and the two combine freely.
//
// Manager faults: kill -9 (restarted at heal), SIGSTOP (SIGCONT at heal), isolation from every
// other process, the leader isolated, a minority partition (one manager cut from the other two,
// the workers still reach it), a one-way block either way, a slow link. Worker faults: kill -9,
// SIGSTOP, isolation, slow links, and a full disk (restarted with --quota-bytes at what it holds).

import type { ChaosCluster, Proc } from './chaosCluster.ts';
import { MAX_IMAGE_BYTES } from './chaosCluster.ts';
import type { Rng } from './rng.ts';

const MANAGER_FAULTS = [
  'kill',
  'pause',
  'isolate',
  'isolateLeader',
  'minority',
  'oneWayOut',
  'oneWayIn',
  'slow',
] as const;
const WORKER_FAULTS = ['kill', 'pause', 'isolate', 'slow', 'diskFull'] as const;

type FaultName = (typeof MANAGER_FAULTS)[number] | (typeof WORKER_FAULTS)[number];

interface ActiveFault {
  name: FaultName;
  target: Proc;
  heal: () => Promise<void>;
}

export interface NemesisOptions {
  rng: Rng;
  /** Pause between two decisions, drawn in [min, max). */
  stepMs: [number, number];
  log: (line: string) => void;
}

export class Nemesis {
  private readonly active: { manager: ActiveFault | null; worker: ActiveFault | null } = {
    manager: null,
    worker: null,
  };
  /** Faults injected, by name. */
  readonly counts = new Map<string, number>();

  constructor(
    private readonly cluster: ChaosCluster,
    private readonly opts: NemesisOptions,
  ) {}

  async run(until: Promise<void>): Promise<void> {
    let done = false;
    void until.then(() => {
      done = true;
    });
    const { rng } = this.opts;
    while (!done) {
      const [lo, hi] = this.opts.stepMs;
      await Promise.race([until, new Promise((r) => setTimeout(r, lo + rng.int(hi - lo)))]);
      if (done) break;
      for (const slot of ['manager', 'worker'] as const) {
        if (this.active[slot]) {
          if (rng.float() < 0.6) await this.healSlot(slot);
        } else if (rng.float() < 0.6) {
          await this.inject(slot);
        }
      }
    }
  }

  async healAll(): Promise<void> {
    await this.healSlot('manager');
    await this.healSlot('worker');
  }

  private async healSlot(slot: 'manager' | 'worker'): Promise<void> {
    const fault = this.active[slot];
    if (!fault) return;
    this.active[slot] = null;
    this.opts.log(`heal ${fault.name} ${fault.target.name}`);
    await fault.heal();
    await this.awaitRecovery(fault.target);
  }

  /**
   * A healed process is still faulty until it is back in service (a restarted worker registered, a
   * restarted manager following a leader): the slot stays taken until then, bounded, so a second
   * fault never stacks on a process still recovering.
   */
  private async awaitRecovery(target: Proc): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (Date.now() < deadline) {
      if (await this.recovered(target)) return;
      await new Promise((r) => setTimeout(r, 250));
    }
    this.opts.log(`${target.name} not back in service within 30 s`);
  }

  private async recovered(target: Proc): Promise<boolean> {
    if (target.kind === 'manager') {
      const [view, leader] = await Promise.all([this.raftView(target), this.leader()]);
      return leader !== null && view?.leader?.id === leader.name;
    }
    const leader = await this.leader();
    if (!leader) return false;
    const body = await fetch(`${leader.proxy.url}/v1/cluster/nodes`, { signal: AbortSignal.timeout(2_000) })
      .then((r) => r.json() as Promise<{ nodes: { id: string; state: string }[] }>)
      .catch(() => null);
    return body?.nodes.some((n) => n.id === target.name && n.state === 'up') ?? false;
  }

  private async inject(slot: 'manager' | 'worker'): Promise<void> {
    const { rng } = this.opts;
    const pool = slot === 'manager' ? this.cluster.managers() : this.cluster.workers();
    const name: FaultName = rng.pick(slot === 'manager' ? MANAGER_FAULTS : WORKER_FAULTS);
    let target = rng.pick(pool);
    if (name === 'isolateLeader') target = (await this.leader()) ?? target;
    this.counts.set(name, (this.counts.get(name) ?? 0) + 1);
    this.opts.log(`inject ${name} ${target.name}`);
    this.active[slot] = { name, target, heal: await this.apply(name, target) };
  }

  /** Applies a fault; returns how to undo it. */
  private async apply(name: FaultName, target: Proc): Promise<() => Promise<void>> {
    const c = this.cluster;
    const others = c.procs.filter((p) => p !== target);
    const otherManagers = c.managers().filter((p) => p !== target);
    const clear = (peers: Proc[]) => async () => {
      for (const p of peers) c.clearLinks(target.name, p.name);
    };
    switch (name) {
      case 'kill':
        await c.kill(target);
        return async () => c.spawn(target);
      case 'pause':
        c.pause(target);
        return async () => c.resume(target);
      case 'isolate':
      case 'isolateLeader':
        for (const p of others) c.cut(target.name, p.name);
        return clear(others);
      case 'minority':
        for (const p of otherManagers) c.cut(target.name, p.name);
        return clear(otherManagers);
      case 'oneWayOut':
        for (const p of otherManagers) c.blockOneWay(target.name, p.name);
        return clear(otherManagers);
      case 'oneWayIn':
        for (const p of otherManagers) c.blockOneWay(p.name, target.name);
        return clear(otherManagers);
      case 'slow':
        for (const p of others) {
          c.setLink(target.name, p.name, { delayMs: 200 });
          c.setLink(p.name, target.name, { delayMs: 200 });
        }
        return clear(others);
      case 'diskFull':
        return this.fillDisk(target);
    }
  }

  /** Restarts the worker with a quota at what it holds now: it takes nothing new until healed. */
  private async fillDisk(target: Proc): Promise<() => Promise<void>> {
    const c = this.cluster;
    const held = await c
      .workerGet(target, '/stats', 3_000)
      .then(async (r) => ((await r.json()) as { blobBytes: number }).blobBytes)
      .catch(() => 0);
    await c.kill(target);
    target.extraArgs = ['--quota-bytes', String(Math.max(held, MAX_IMAGE_BYTES))];
    c.spawn(target);
    return async () => {
      await c.kill(target);
      target.extraArgs = [];
      c.spawn(target);
    };
  }

  private async raftView(m: Proc): Promise<{ role: string; leader: { id: string } | null } | null> {
    return fetch(`${m.proxy.url}/v1/cluster/raft`, { signal: AbortSignal.timeout(1_000) })
      .then((r) => r.json() as Promise<{ role: string; leader: { id: string } | null }>)
      .catch(() => null);
  }

  private async leader(): Promise<Proc | null> {
    for (const m of this.cluster.managers()) {
      if ((await this.raftView(m))?.role === 'leader') return m;
    }
    return null;
  }
}
