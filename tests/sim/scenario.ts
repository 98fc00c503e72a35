// One seed = one run. The seed picks the cluster size and a fault mix (swarm testing: each run
// stresses a different combination), then drives client traffic, crashes, partitions, compaction,
// membership changes and leadership transfers for a fixed number of ticks, checking every
// invariant as it goes. It ends with a liveness phase: faults stop, partitions heal, crashed nodes
// restart, and a leader must commit a fresh proposal on a majority within a bounded time.

import { SafetyViolation, type Violation } from './checker.ts';
import { Cluster } from './cluster.ts';
import type { CoreVariant } from './coreAdapter.ts';
import { Prng } from './prng.ts';
import type { NetworkFaults } from './simNetwork.ts';
import type { HostOrder } from './simNode.ts';

export interface RunOptions {
  seed: number;
  verbose?: boolean;
  coreVariant?: CoreVariant;
  hostOrder?: HostOrder;
  /** Ticks of the faulty phase (default 1200). */
  ticks?: number;
  /** Ticks the liveness phase may take (default 60 election timeouts). */
  livenessTicks?: number;
  /** Overrides the seed's chance that a message ignores its link's order (e.g. 1: no FIFO at all). */
  reorderRate?: number;
  /**
   * One voter and up to two learners that are never promoted: the voter commits alone, so its own
   * write is all that makes a commit durable, while its appends reach the learners before it.
   */
  singleVoter?: boolean;
}

export interface RunResult {
  seed: number;
  violation: Violation | null;
  traceHash: string;
  trace: string[];
  stats: {
    ticks: number;
    voters: number;
    committed: number;
    leaders: number;
    crashes: number;
    partitions: number;
    snapshotsSent: number;
    messages: number;
    reads: number;
    confChanges: number;
    checks: number;
    /** Host seeds: local compactions by the form of snapshot they recorded. */
    compactions?: { file: number; inline: number; tables: number };
    /** Host seeds with a snapshot folder: files written, and writes that failed. */
    filesBuilt?: { built: number; failed: number };
  };
  profile: string;
}

interface FaultProfile {
  maxSizePerMsg: number;
  maxInflightMsgs: number;
  faults: NetworkFaults;
  diskLatencyMax: number;
  diskStallRate: number;
  crashRate: number;
  readyCrashRate: number;
  partitionRate: number;
  compactRate: number;
  proposeRate: number;
  readRate: number;
  confChangeRate: number;
  transferRate: number;
}

/**
 * Swarm testing: most seeds draw each knob independently; a share of them draws the "churn"
 * family, where leaders change constantly while they hold uncommitted tails and replicate them one
 * small message at a time. That is the shape of the paper's figure 8 (an old-term entry stored on
 * a majority without the new leader's own entry), which independent draws rarely combine.
 */
function chooseProfile(rng: Prng): { family: 'mixed' | 'churn'; profile: FaultProfile } {
  const mixed = mixedProfile(rng);
  if (!rng.chance(0.3)) return { family: 'mixed', profile: mixed };
  return {
    family: 'churn',
    profile: {
      ...mixed,
      maxSizePerMsg: 1,
      maxInflightMsgs: rng.pick([1, 2, 4]),
      diskLatencyMax: rng.pick([1, 2, 3]),
      crashRate: rng.pick([0.01, 0.03]),
      readyCrashRate: rng.pick([0.02, 0.1]),
      partitionRate: rng.pick([0.03, 0.06]),
      proposeRate: 0.8,
      transferRate: rng.pick([0.003, 0.01]),
    },
  };
}

function mixedProfile(rng: Prng): FaultProfile {
  return {
    maxSizePerMsg: rng.pick([1 << 20, 8, 1]),
    maxInflightMsgs: rng.pick([1, 4, 256]),
    faults: {
      dropRate: rng.pick([0, 0.01, 0.05, 0.15]),
      duplicateRate: rng.pick([0, 0.02, 0.1]),
      minDelay: 1,
      maxDelay: rng.pick([1, 2, 3, 5]),
      reorderRate: rng.pick([0, 0.01, 0.1]),
      lateRate: rng.pick([0, 0.01, 0.05]),
      lateDelay: rng.pick([10, 40]),
    },
    diskLatencyMax: rng.pick([0, 1, 2, 3]),
    diskStallRate: rng.pick([0, 0, 0.01, 0.05]),
    crashRate: rng.pick([0, 0.004, 0.01, 0.03]),
    readyCrashRate: rng.pick([0, 0.02, 0.1]),
    partitionRate: rng.pick([0, 0.01, 0.03, 0.06]),
    compactRate: rng.pick([0.002, 0.01, 0.05]),
    proposeRate: rng.pick([0.1, 0.3, 0.8]),
    readRate: rng.pick([0.05, 0.2]),
    confChangeRate: rng.pick([0, 0.005, 0.02]),
    transferRate: rng.pick([0, 0.003, 0.01]),
  };
}

export function runSeed(options: RunOptions): RunResult {
  const setup = new Prng(options.seed ^ 0x5eed);
  const drawnVoters = setup.chance(0.5) ? 3 : 5;
  const voters = options.singleVoter ? 1 : drawnVoters;
  const { family, profile } = chooseProfile(setup);
  if (options.reorderRate !== undefined) profile.faults.reorderRate = options.reorderRate;
  if (options.singleVoter) profile.confChangeRate = Math.max(profile.confChangeRate, 0.02);
  const cluster = new Cluster({
    seed: options.seed,
    voters,
    hostOrder: options.hostOrder ?? 'persistThenSend',
    coreVariant: options.coreVariant ?? 'correct',
    electionTick: 10,
    heartbeatTick: 2,
    maxSizePerMsg: profile.maxSizePerMsg,
    maxInflightMsgs: profile.maxInflightMsgs,
    faults: profile.faults,
    diskLatencyMax: profile.diskLatencyMax,
    diskStallRate: profile.diskStallRate,
    readyCrashRate: profile.readyCrashRate,
    verbose: options.verbose ?? false,
  });
  const driver = new Driver(cluster, profile);
  const ticks = options.ticks ?? 1200;
  const livenessTicks = options.livenessTicks ?? 60 * cluster.electionTick;
  let violation: Violation | null = null;
  cluster.trace(`seed ${options.seed}: ${voters} voters, ${family} profile ${JSON.stringify(profile)}`);
  try {
    cluster.bootstrap();
    for (let t = 0; t < ticks; t++) {
      driver.act();
      cluster.runTick();
    }
    driver.checkLiveness(livenessTicks, options.seed);
  } catch (err) {
    if (!(err instanceof SafetyViolation)) {
      violation = {
        kind: 'host-error',
        tick: cluster.now,
        message: err instanceof Error ? (err.stack ?? err.message) : String(err),
      };
    } else violation = err.violation;
    cluster.trace(`VIOLATION ${violation.kind}: ${violation.message}`);
  }
  return {
    seed: options.seed,
    violation,
    traceHash: cluster.digest.hex,
    trace: cluster.traceLines,
    stats: {
      ticks: cluster.now,
      voters,
      committed: cluster.checker.maxCommitted,
      leaders: cluster.checker.leaders.size,
      crashes: cluster.crashes,
      partitions: driver.partitions,
      snapshotsSent: cluster.snapshotsSent,
      messages: cluster.network.sent,
      reads: driver.reads,
      confChanges: driver.confChanges,
      checks: cluster.checker.checks,
    },
    profile: `${family} ${JSON.stringify(profile)}`,
  };
}

/** The scenario's hands: picks and performs the random operations of each tick. */
class Driver {
  partitions = 0;
  reads = 0;
  confChanges = 0;
  private writes = 0;
  private healAt = 0;

  constructor(
    private readonly cluster: Cluster,
    private readonly profile: FaultProfile,
  ) {}

  act(): void {
    const c = this.cluster;
    const rng = c.rng;
    const p = this.profile;
    c.restartDue();
    if (c.network.partitioned && c.now >= this.healAt) {
      c.network.heal();
      c.trace('partition heals');
    }
    if (rng.chance(p.crashRate)) this.crashOne();
    // A new partition may replace one in force: rolling partitions strand leaders of several
    // terms with divergent tails, the raw material of the paper's figure 8.
    if (rng.chance(p.partitionRate)) this.partition();
    if (rng.chance(p.proposeRate)) this.propose();
    if (rng.chance(p.readRate)) this.read();
    if (rng.chance(p.confChangeRate)) this.changeMembership();
    if (rng.chance(p.transferRate)) this.transfer();
    for (const node of c.liveNodes()) if (rng.chance(p.compactRate)) node.compact();
    c.drain();
  }

  private crashOne(): void {
    const c = this.cluster;
    const live = c.liveNodes();
    if (!c.mayCrash() || live.length === 0) return;
    // Favour the leader (its loss changes terms) and the window between taking a Ready and
    // saving it (where hosts lose state).
    const leader = c.leader();
    const persisting = live.filter((n) => n.persisting);
    const roll = c.rng.float();
    const victim =
      leader && roll < 0.3
        ? leader.node
        : persisting.length > 0 && roll < 0.8
          ? c.rng.pick(persisting)
          : c.rng.pick(live);
    c.crash(victim);
  }

  private partition(): void {
    const c = this.cluster;
    const rng = c.rng;
    const ids = [...c.nodes.values()].filter((n) => !n.retired).map((n) => n.id);
    if (ids.length < 2) return;
    const kind = rng.pick(['isolateLeader', 'isolateLeader', 'split', 'minority'] as const);
    let side: string[];
    if (kind === 'isolateLeader') {
      const leader = c.leader();
      side = leader ? [leader.node.id] : [rng.pick(ids)];
    } else if (kind === 'minority') {
      rng.shuffle(ids);
      side = ids.slice(0, rng.range(1, Math.max(1, Math.floor((ids.length - 1) / 2))));
    } else {
      side = ids.filter(() => rng.chance(0.5));
    }
    const rest = ids.filter((id) => !side.includes(id));
    c.network.partition([rest, side]);
    this.partitions++;
    this.healAt = c.now + rng.range(c.electionTick / 2, 15 * c.electionTick);
    c.trace(`partition (${kind}) [${side.join(' ')}] | [${rest.join(' ')}] until ${this.healAt}`);
  }

  private propose(): void {
    const c = this.cluster;
    const rng = c.rng;
    const leader = c.leader();
    const live = c.liveNodes();
    if (live.length === 0) return;
    // Clients back off while the leader has a long uncommitted tail, as the real API's bounded
    // proposal queue makes them do; otherwise the backlog, not Raft, decides the liveness phase.
    if (leader && leader.status.lastIndex - leader.status.commit > 64) return;
    // Clients do not know who leads now: some still talk to a deposed or stranded leader.
    const claimants = live.filter((n) => n.core.node.raft.role === 'leader');
    const roll = rng.float();
    const target =
      leader && roll < 0.6
        ? leader.node
        : claimants.length > 0 && roll < 0.85
          ? rng.pick(claimants)
          : rng.pick(live);
    const value = `w${++this.writes}`;
    const err = target.propose(value);
    c.trace(`client proposes ${value} at ${target.id}${err ? `: ${err}` : ''}`);
  }

  private read(): void {
    const c = this.cluster;
    const live = c.liveNodes();
    if (live.length === 0) return;
    const target = c.rng.pick(live);
    const ctx = `r${++this.reads}`;
    const floor = c.checker.readFloor;
    c.trace(`client reads ${ctx} at ${target.id} (must see ${floor})`);
    target.read(ctx, floor);
  }

  private transfer(): void {
    const c = this.cluster;
    const leader = c.leader();
    if (!leader) return;
    const others = leader.status.confState.voters.filter((v) => v !== leader.node.id);
    if (others.length === 0) return;
    const to = c.rng.pick(others);
    c.trace(`transfer leadership ${leader.node.id} -> ${to}`);
    leader.node.transferLeadership(to);
  }

  /** Add a learner, promote a caught-up learner, or remove a voter; never below three voters. */
  private changeMembership(): void {
    const c = this.cluster;
    const rng = c.rng;
    const leader = c.leader();
    if (!leader) return;
    const { voters, learners } = leader.status.confState;
    const progress = leader.status.progress ?? {};
    const caughtUp = learners.filter((l) => {
      const pr = progress[l];
      return pr !== undefined && pr.match >= leader.status.commit - 2 && c.nodes.get(l)?.alive;
    });
    let change: { type: 'addLearner' | 'promote' | 'remove'; nodeId: string } | null = null;
    if (c.options.voters === 1) {
      if (learners.length < 2) change = { type: 'addLearner', nodeId: c.addNode().id };
    } else if (caughtUp.length > 0 && voters.length < 6)
      change = { type: 'promote', nodeId: rng.pick(caughtUp) };
    else if (voters.length > 3 && rng.chance(0.6)) {
      const others = voters.filter((v) => v !== leader.node.id);
      change = { type: 'remove', nodeId: rng.chance(0.2) ? leader.node.id : rng.pick(others) };
    } else if (voters.length + learners.length < 6 && learners.length === 0) {
      const fresh = c.addNode();
      change = { type: 'addLearner', nodeId: fresh.id };
    }
    if (!change) return;
    const err = leader.node.proposeConfChange(change);
    c.trace(
      `propose conf change ${change.type} ${change.nodeId} at ${leader.node.id}${err ? `: ${err}` : ''}`,
    );
    if (!err) this.confChanges++;
    else if (change.type === 'addLearner') c.retire(c.nodes.get(change.nodeId)!);
  }

  /** Heal everything, restart everyone, then demand a leader and a commit on a majority. */
  checkLiveness(budget: number, seed: number): void {
    const c = this.cluster;
    c.network.heal();
    // A round trip must fit well inside an election timeout or check-quorum deposes every leader.
    c.network.faults = {
      dropRate: 0,
      duplicateRate: 0,
      minDelay: 1,
      maxDelay: 2,
      reorderRate: 0,
      lateRate: 0,
      lateDelay: 0,
    };
    c.readyCrashRate = 0;
    c.diskStallRate = 0;
    for (const node of c.downNodes()) c.restart(node);
    c.trace('liveness phase: faults stop, partitions heal, every node is up');
    const value = `live-${seed}`;
    const deadline = c.now + budget;
    let proposedAt = Number.NEGATIVE_INFINITY;
    while (c.now < deadline) {
      c.runTick();
      const leader = c.leader();
      if (!leader) continue;
      if (c.now - proposedAt > 5 * c.electionTick) {
        const err = leader.node.propose(value);
        c.trace(`liveness proposal ${value} at ${leader.node.id}${err ? `: ${err}` : ''}`);
        if (!err) proposedAt = c.now;
      }
      const index = c.checker.ackedIndex(value);
      if (index === undefined) continue;
      const voters = leader.status.confState.voters;
      const applied = voters.filter((v) => {
        const n = c.nodes.get(v);
        return n?.alive && n.sm.applied >= index;
      });
      if (applied.length > voters.length / 2) {
        c.trace(`liveness ok: ${value} at ${index} applied on ${applied.join(' ')}`);
        return;
      }
    }
    const leader = c.leader();
    c.checker.fail(
      'liveness',
      `no commit of a fresh proposal on a majority within ${budget} ticks after healing (leader: ${leader ? `${leader.node.id} term ${leader.status.term}` : 'none'})`,
    );
  }
}
