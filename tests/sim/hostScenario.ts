// One seed of the host simulation: the real RaftNode on every manager (hostWorld.ts) under client
// writes and reads, crashes that lose unsynced writes, whole-cluster power loss, paused processes
// that resume with stale state, skewed tick rates, partitions (also one-way), leadership transfers
// and log compaction (inline snapshots, a file at each compaction, or, in half the seeds, the
// managers' way: no file, durable tables, a file built only for a follower that needs one, with
// small catch-up windows and log budgets and snapshot file writes that fail); then a liveness phase. Client writes are checked as a history: each
// acknowledged write applied once, at one index, in an order consistent with real time.

import type { RaftNode } from '../../src/consensus/raftNode.ts';
import { SafetyViolation, type Violation } from './checker.ts';
import type { HostVariant } from './hostVariants.ts';
import { ELECTION_TICK, type HostNode, HostWorld, type LazyOptions, type SnapshotMode } from './hostWorld.ts';
import { Prng } from './prng.ts';
import type { RunResult } from './scenario.ts';

export interface HostRunOptions {
  seed: number;
  variant?: HostVariant;
  verbose?: boolean;
  /** Run over the real LevelLogStore (default: every fifth seed). */
  levelDb?: boolean;
  /** How snapshots are kept (default by seed: lazy for half, files and inline for a quarter each). */
  snapshots?: SnapshotMode;
  ticks?: number;
  livenessTicks?: number;
}

interface HostProfile {
  crashRate: number;
  restartRate: number;
  powerLossRate: number;
  pauseRate: number;
  partitionRate: number;
  proposeRate: number;
  readRate: number;
  transferRate: number;
  confChangeRate: number;
}

/** Client writes as a history (Porcupine-style for a log): what was invoked, acknowledged, applied. */
export class WriteHistory {
  /** value -> the highest index acknowledged before the write was invoked. */
  private readonly floorAtInvoke = new Map<string, number>();
  /** value -> the index it was applied at (the same on every replica, or state-machine safety fails). */
  private readonly appliedAt = new Map<string, number>();
  private maxAcked = 0;
  acked = 0;

  constructor(private readonly fail: (message: string) => never) {}

  invoke(value: string): void {
    this.floorAtInvoke.set(value, this.maxAcked);
  }

  onApplied(node: string, value: string, index: number): void {
    const known = this.appliedAt.get(value);
    if (known !== undefined && known !== index) {
      this.fail(`write ${value} applied twice: at ${known} and, on ${node}, at ${index}`);
    }
    this.appliedAt.set(value, index);
    const floor = this.floorAtInvoke.get(value);
    if (floor !== undefined && index <= floor) {
      this.fail(`write ${value} applied at ${index}, before ${floor}, acknowledged before it was invoked`);
    }
  }

  ack(value: string, index: number): void {
    const applied = this.appliedAt.get(value);
    if (applied !== index) this.fail(`write ${value} acknowledged at ${index} but applied at ${applied}`);
    this.acked++;
    if (index > this.maxAcked) this.maxAcked = index;
  }
}

const SNAPSHOT_MODES: readonly SnapshotMode[] = ['lazy', 'inline', 'lazy', 'files'];

/**
 * Compaction settings far below the defaults (5,000 entries and 16 MiB of catch-up window, a 64 MiB
 * budget), so that in a run of a few hundred entries the log is compacted often, by count and by
 * bytes, and a follower a few entries behind already needs a file.
 */
function chooseLazy(rng: Prng, planted: boolean): LazyOptions & { threshold: number } {
  return {
    threshold: rng.pick([5, 12, 30, 10_000]),
    durability: planted ? 'onSync' : rng.pick(['batches', 'onSync'] as const),
    catchUpEntries: rng.pick([1, 3, 10, 40]),
    catchUpBytes: rng.pick([16, 200, 16 * 1024 * 1024]),
    logBudgetBytes: rng.pick([24, 100, 64 * 1024 * 1024]),
    fileFailRate: rng.pick([0, 0, 0.1, 0.25]),
    // Drawn last, so the draws above stay those of earlier runs: a bound of a few entries gives up
    // the hold kept on disk for a file's member within a few compactions (the default: never here).
    holdBytes: rng.pick([1, 40, undefined]),
  };
}

function chooseProfile(rng: Prng): HostProfile {
  return {
    crashRate: rng.pick([0, 0.004, 0.01]),
    restartRate: rng.pick([0, 0.005, 0.01]),
    powerLossRate: rng.pick([0, 0.002, 0.005]),
    pauseRate: rng.pick([0, 0.01, 0.03]),
    partitionRate: rng.pick([0, 0.01, 0.03]),
    proposeRate: rng.pick([0.2, 0.5]),
    readRate: rng.pick([0.05, 0.2]),
    transferRate: rng.pick([0, 0.005]),
    confChangeRate: rng.pick([0, 0.005, 0.01]),
  };
}

export async function runHostSeed(options: HostRunOptions): Promise<RunResult> {
  const setup = new Prng(options.seed ^ 0x4057);
  const voters = setup.chance(0.5) ? 3 : 5;
  const profile = chooseProfile(setup);
  const skewed = setup.chance(0.5);
  const skews = Array.from({ length: voters }, () => (skewed ? setup.pick([0.7, 0.85, 1, 1.2, 1.4]) : 1));
  const faults = {
    dropRate: setup.pick([0, 0.01, 0.05]),
    duplicateRate: setup.pick([0, 0.02]),
    minDelay: 1,
    maxDelay: setup.pick([1, 2, 3]),
    reorderRate: setup.pick([0, 0.05]),
    lateRate: setup.pick([0, 0.01]),
    lateDelay: 20,
  };
  const levelDb = options.levelDb ?? options.seed % 5 === 0;
  const variant = options.variant ?? 'correct';
  const snapshots =
    variant === 'syncAppliedEarly' ? 'lazy' : (options.snapshots ?? SNAPSHOT_MODES[options.seed % 4]!);
  // Drawn apart from the profile above, which every mode shares.
  const lazy = chooseLazy(new Prng(options.seed ^ 0x1a2e), variant === 'syncAppliedEarly');
  let history: WriteHistory | null = null;
  const world = new HostWorld(
    {
      seed: options.seed,
      voters,
      variant,
      faults,
      diskLatencyMax: setup.pick([0, 1, 2, 3]),
      skews,
      snapshotThreshold: snapshots === 'lazy' ? lazy.threshold : setup.pick([8, 30, 10_000]),
      snapshots,
      ...(snapshots === 'lazy' ? { lazy } : {}),
      levelDb,
      verbose: options.verbose ?? false,
    },
    {
      onWriteApplied: (node, value, index) => {
        // In the verbose trace only: the trace hash stays that of the quiet run.
        if (options.verbose) world.lines.push(`${world.tick} ${node} applies ${value} at ${index}`);
        history?.onApplied(node, value, index);
      },
    },
  );
  history = new WriteHistory((m) => world.checker.fail('linearizability', m));
  const driver = new HostDriver(world, profile, history);
  const ticks = options.ticks ?? 400;
  let violation: Violation | null = null;
  world.trace(
    `host seed ${options.seed}: ${voters} voters, skews ${skews.join(' ')}, ${levelDb ? 'LevelDB' : 'memory'} disks, ${snapshots} snapshots${snapshots === 'lazy' ? ` ${JSON.stringify(lazy)}` : ''}, ${JSON.stringify(profile)} ${JSON.stringify(faults)}`,
  );
  try {
    await world.bootstrap();
    for (let t = 0; t < ticks; t++) {
      await driver.act();
      await world.runTick();
    }
    await driver.checkLiveness(options.livenessTicks ?? 60 * ELECTION_TICK, options.seed);
  } catch (err) {
    if (!(err instanceof SafetyViolation)) {
      violation = {
        kind: 'host-error',
        tick: world.tick,
        message: err instanceof Error ? (err.stack ?? err.message) : String(err),
      };
    } else violation = err.violation;
    world.trace(`VIOLATION ${violation.kind}: ${violation.message}`);
  } finally {
    await world.cleanup();
  }
  return {
    seed: options.seed,
    violation,
    traceHash: world.digest.hex,
    trace: world.lines,
    stats: {
      ticks: world.tick,
      voters,
      committed: world.checker.maxCommitted,
      leaders: world.checker.leaders.size,
      crashes: world.crashes,
      partitions: driver.partitions,
      snapshotsSent: world.snapshotsSent,
      compactions: world.compactions,
      filesBuilt: world.filesBuilt(),
      messages: world.network.sent,
      reads: driver.reads,
      confChanges: driver.confChanges,
      checks: world.checker.checks,
    },
    profile: `host ${JSON.stringify(profile)}`,
  };
}

class HostDriver {
  partitions = 0;
  reads = 0;
  confChanges = 0;
  private writes = 0;
  private healAt = 0;
  private readonly restartAt = new Map<HostNode, number>();
  private readonly resumeAt = new Map<HostNode, number>();

  constructor(
    private readonly world: HostWorld,
    private readonly profile: HostProfile,
    private readonly history: WriteHistory,
  ) {}

  async act(): Promise<void> {
    const w = this.world;
    const rng = w.rng;
    const p = this.profile;
    for (const [node, at] of this.restartAt) {
      if (w.tick < at) continue;
      this.restartAt.delete(node);
      if (node.retired) continue;
      w.trace(
        `${node.id} restarts from disk (term ${node.disk.hardState.term}, vote ${node.disk.hardState.vote})`,
      );
      await w.start(node);
    }
    for (const [node, at] of this.resumeAt) {
      if (w.tick < at) continue;
      this.resumeAt.delete(node);
      await w.resume(node);
    }
    if (w.network.partitioned && w.tick >= this.healAt) {
      w.network.heal();
      w.trace('partition heals');
    }
    // Power cuts aim at the moments right after a vote, when a vote not yet synced can be lost.
    const justVoted = w.tick - w.lastVoteAt <= 2;
    if (rng.chance(justVoted ? 20 * p.powerLossRate : p.powerLossRate)) await this.powerLoss();
    if (rng.chance(p.crashRate)) await this.crashOne();
    if (rng.chance(p.restartRate)) await w.restartCleanly(rng.pick(w.current()));
    if (rng.chance(p.pauseRate)) this.pauseOne();
    if (rng.chance(p.partitionRate)) this.partition();
    if (rng.chance(p.proposeRate)) this.propose();
    if (rng.chance(p.readRate)) this.read();
    if (rng.chance(p.transferRate)) this.transfer();
    if (rng.chance(p.confChangeRate)) await this.changeMembership();
    await w.settle();
  }

  private down(): number {
    return this.world.current().filter((n) => !n.alive || n.paused).length;
  }

  /** Bounded so a majority of the current members stays up and running. */
  private mayStop(): boolean {
    return this.down() < Math.floor((this.world.current().length - 1) / 2);
  }

  /** Every manager loses power at once; each comes back from its disk a little later. */
  private async powerLoss(): Promise<void> {
    const w = this.world;
    w.trace('power loss on the whole cluster');
    for (const node of w.liveNodes()) {
      await w.crash(node, 'power loss');
      this.resumeAt.delete(node);
      this.restartAt.set(node, w.tick + w.rng.range(1, 3 * ELECTION_TICK));
    }
  }

  /** Favours the leader and a node with a write in flight; at most a minority down or paused. */
  private async crashOne(): Promise<void> {
    const w = this.world;
    if (!this.mayStop()) return;
    const live = w.liveNodes().filter((n) => !n.paused);
    if (live.length === 0) return;
    const leader = w.leader();
    const writing = live.filter((n) => n.store?.writing);
    const roll = w.rng.float();
    const victim =
      leader && roll < 0.3
        ? leader
        : writing.length > 0 && roll < 0.8
          ? w.rng.pick(writing)
          : w.rng.pick(live);
    await w.crash(victim, 'crash');
    const downFor = w.rng.chance(0.5) ? w.rng.range(1, 5) : w.rng.range(5, 12 * ELECTION_TICK);
    this.restartAt.set(victim, w.tick + downFor);
  }

  /** A stopped process (GC, SIGSTOP, a VM migration): the leader more often than not. */
  private pauseOne(): void {
    const w = this.world;
    if (!this.mayStop()) return;
    const running = w.liveNodes().filter((n) => !n.paused);
    if (running.length === 0) return;
    const leader = w.leader();
    const victim = leader && w.rng.chance(0.6) ? leader : w.rng.pick(running);
    w.pause(victim);
    this.resumeAt.set(victim, w.tick + w.rng.range(ELECTION_TICK / 2, 5 * ELECTION_TICK));
  }

  private partition(): void {
    const w = this.world;
    const rng = w.rng;
    const ids = w.current().map((n) => n.id);
    const leader = w.leader();
    const kind = rng.pick(['isolateLeader', 'minority', 'oneWay', 'oneWay'] as const);
    if (kind === 'oneWay') {
      // The leader still reaches its followers but hears nothing back (or the reverse).
      const a = leader?.id ?? rng.pick(ids);
      const others = ids.filter((id) => id !== a);
      const inbound = rng.chance(0.5);
      for (const b of others) {
        if (inbound) w.network.cutOneWay(b, a);
        else w.network.cutOneWay(a, b);
      }
      w.trace(`one-way cut: ${inbound ? `nothing reaches ${a}` : `nothing leaves ${a}`}`);
    } else {
      const side = kind === 'isolateLeader' && leader ? [leader.id] : [rng.pick(ids)];
      const rest = ids.filter((id) => !side.includes(id));
      w.network.partition([rest, side]);
      w.trace(`partition (${kind}) [${side.join(' ')}] | [${rest.join(' ')}]`);
    }
    this.partitions++;
    this.healAt = w.tick + rng.range(ELECTION_TICK / 2, 10 * ELECTION_TICK);
  }

  private propose(): void {
    const w = this.world;
    const live = w.liveNodes().filter((n) => n.raft);
    if (live.length === 0) return;
    // Clients do not know who leads now: some still talk to a deposed, stranded or paused leader.
    const claimants = live.filter((n) => n.raft!.isLeader());
    const target = claimants.length > 0 && w.rng.chance(0.9) ? w.rng.pick(claimants) : w.rng.pick(live);
    const value = `w${++this.writes}`;
    this.history.invoke(value);
    w.trace(`client writes ${value} at ${target.id}`);
    const raft = target.raft!;
    w.clientCall(target, () => this.sendWrite(raft, value));
  }

  private sendWrite(raft: RaftNode, value: string): void {
    const w = this.world;
    raft.propose(value, value).then(
      (index) =>
        w.guard(() => {
          w.trace(`client write ${value} acknowledged at ${index}`);
          this.history.ack(value, index as number);
        }),
      () => {},
    );
  }

  private read(): void {
    const w = this.world;
    const live = w.liveNodes().filter((n) => n.raft);
    if (live.length === 0) return;
    const leader = w.leader();
    const paused = live.filter((n) => n.paused);
    // Some clients keep asking the leader they knew, paused or not.
    const target =
      paused.length > 0 && w.rng.chance(0.3)
        ? w.rng.pick(paused)
        : leader && w.rng.chance(0.5)
          ? leader
          : w.rng.pick(live);
    const ctx = `r${++this.reads}`;
    const floor = w.checker.readFloor;
    const incarnation = target.incarnation;
    w.trace(`client reads ${ctx} at ${target.id} (must see ${floor})`);
    const raft = target.raft!;
    w.clientCall(target, () => this.sendRead(raft, target, incarnation, ctx, floor));
  }

  private sendRead(raft: RaftNode, target: HostNode, incarnation: number, ctx: string, floor: number): void {
    const w = this.world;
    raft.readIndex().then(
      () =>
        w.guard(() => {
          if (!target.alive || target.incarnation !== incarnation) return;
          w.trace(`${target.id} serves read ${ctx} at applied ${target.sm.applied}`);
          w.checker.onReadServed(target.id, ctx, floor, target.sm.applied, target.sm.applied);
        }),
      () => {},
    );
  }

  private transfer(): void {
    const w = this.world;
    const leader = w.leader();
    if (!leader?.raft) return;
    const others = w.current().filter((n) => n !== leader);
    if (others.length === 0) return;
    const to = w.rng.pick(others).id;
    w.trace(`transfer leadership ${leader.id} -> ${to}`);
    leader.raft.transferLeadership(to).catch(() => {});
  }

  /**
   * One single-server change through the driver's own API: add an empty manager (a learner the
   * driver promotes once caught up) while the cluster has its founding size, else remove a voter.
   */
  private async changeMembership(): Promise<void> {
    const w = this.world;
    const leader = w.leader();
    if (!leader?.raft) return;
    const raft = leader.raft;
    const { voters, learners } = raft.status().confState;
    if (learners.length > 0) return;
    this.confChanges++;
    if (voters.length <= w.options.voters) {
      const fresh = await w.addNode();
      w.trace(`add member ${fresh.id} at ${leader.id}`);
      raft.addMember(fresh.id, `http://${fresh.id}.sim`).then(
        () => w.guard(() => w.trace(`${fresh.id} is a voter`)),
        () => {},
      );
      return;
    }
    const target = w.rng.pick(voters.filter((v) => v !== leader.id));
    const node = w.nodes.find((n) => n.id === target)!;
    w.trace(`remove member ${target} at ${leader.id}`);
    raft.removeMember(target).then(
      () =>
        w.retire(node).catch((err: unknown) =>
          w.guard(() => {
            throw err;
          }),
        ),
      () => {},
    );
  }

  /** Heal, resume and restart everything, then a fresh write must be applied on a majority. */
  async checkLiveness(budget: number, seed: number): Promise<void> {
    const w = this.world;
    w.network.heal();
    w.network.faults = {
      ...w.network.faults,
      dropRate: 0,
      duplicateRate: 0,
      maxDelay: 2,
      reorderRate: 0,
      lateRate: 0,
    };
    w.fileFailRate = 0;
    for (const node of w.current()) {
      if (!node.alive) await w.start(node);
      else await w.resume(node);
    }
    this.restartAt.clear();
    this.resumeAt.clear();
    w.trace('liveness phase: faults stop, partitions heal, every node is up');
    let acked: number | null = null;
    let attempts = 0;
    let value = '';
    let proposedAt = Number.NEGATIVE_INFINITY;
    const deadline = w.tick + budget;
    while (w.tick < deadline) {
      await w.runTick();
      const leader = w.leader();
      if (acked === null && leader?.raft && w.tick - proposedAt > 10 * ELECTION_TICK) {
        proposedAt = w.tick;
        // A retry is a new write: the simulated state machine does not deduplicate, so an earlier
        // attempt that committed without an answer must not look like one write applied twice.
        value = `live-${seed}-${++attempts}`;
        this.history.invoke(value);
        const attempt = value;
        leader.raft.propose(attempt, attempt).then(
          (index) =>
            w.guard(() => {
              acked = index as number;
              value = attempt;
              this.history.ack(attempt, acked);
            }),
          () => {},
        );
      }
      if (acked === null) continue;
      const index = acked;
      const voters = leader?.raft?.status().confState.voters ?? [];
      const applied = w.nodes.filter((n) => voters.includes(n.id) && n.alive && n.sm.applied >= index);
      if (voters.length > 0 && applied.length > voters.length / 2) {
        w.trace(`liveness ok: ${value} at ${index} applied on ${applied.map((n) => n.id).join(' ')}`);
        return;
      }
    }
    w.checker.fail('liveness', `no fresh write applied on a majority within ${budget} ticks after healing`);
  }
}
