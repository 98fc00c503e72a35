// The world of the host simulation: the real RaftNode driver (src/consensus/raftNode.ts) on every
// manager, given virtual time (virtualTime.ts), a simulated network (simNetwork.ts), a synced-write
// disk (hostStore.ts, optionally over the real LevelLogStore), a durable state machine and, in the
// `files` and `lazy` snapshot modes, a snapshot folder (hostFiles.ts). The
// simulator owns every callback the drivers schedule and runs them one at a time; after each, it
// lets the drivers' promise chains settle (a macrotask turn drains every microtask) before the
// next, so a seed replays exactly.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import type { RaftNode, RaftTransport } from '../../src/consensus/raftNode.ts';
import { isTablesSnapshot, snapshotFileOf } from '../../src/consensus/snapshots.ts';
import type { Message, NodeId, Snapshot } from '../../src/consensus/types.ts';
import { Checker, SafetyViolation } from './checker.ts';
import { BOOTSTRAP_DIGEST, describe, messageFingerprint } from './cluster.ts';
import { TraceDigest } from './digest.ts';
import { FileBytes, SimSnapshotFolder } from './hostFiles.ts';
import {
  type ApplyObserver,
  type DurabilityMode,
  DurableHostStateMachine,
  HostStateMachine,
} from './hostStateMachine.ts';
import { SimLogStore } from './hostStore.ts';
import { driverClass, type HostVariant } from './hostVariants.ts';
import { Prng } from './prng.ts';
import { SimDisk } from './simDisk.ts';
import { type InFlight, type NetworkFaults, SimNetwork } from './simNetwork.ts';
import { NodeClock, VirtualTime } from './virtualTime.ts';

export const TICK_MS = 10;
export const ELECTION_TICK = 10;
const SILENT = pino({ level: 'silent' });

/**
 * How snapshots are kept: `inline` (no snapshot folder: the state in the Raft log, as in small
 * tests); `files` (a snapshot folder, a file at every compaction: a state machine without
 * syncApplied); `lazy` (a snapshot folder and a state machine answering syncApplied, as every
 * manager runs: the log is compacted without a file, and a file is built only for a follower that
 * needs one).
 */
/** A network that delivers every message once, in order, a tick later: for tests of one scenario. */
export const CALM_NETWORK: NetworkFaults = {
  dropRate: 0,
  duplicateRate: 0,
  minDelay: 1,
  maxDelay: 1,
  reorderRate: 0,
  lateRate: 0,
  lateDelay: 20,
};

/**
 * Three voters of the correct driver on CALM_NETWORK, in memory, with true-time clocks and no
 * compaction to speak of: for tests of one scenario, which add their seed and disk latency.
 */
export const CALM_WORLD: Omit<WorldOptions, 'seed' | 'diskLatencyMax'> = {
  voters: 3,
  variant: 'correct',
  faults: CALM_NETWORK,
  skews: [1, 1, 1],
  snapshotThreshold: 10_000,
  levelDb: false,
  verbose: false,
};

export type SnapshotMode = 'inline' | 'files' | 'lazy';

/** The driver's compaction settings and the disk faults of the `lazy` mode, small so they bite often. */
export interface LazyOptions {
  durability: DurabilityMode;
  catchUpEntries: number;
  catchUpBytes: number;
  logBudgetBytes: number;
  /** Share of snapshot file writes that fail (a full disk). */
  fileFailRate: number;
  /** The driver's snapshotHoldBytes; its default (three log budgets) when undefined. */
  holdBytes?: number | undefined;
}

export interface WorldOptions {
  seed: number;
  voters: number;
  variant: HostVariant;
  faults: NetworkFaults;
  diskLatencyMax: number;
  /** Per node, virtual ms per ms of its timers (1 = true time). */
  skews: number[];
  snapshotThreshold: number;
  /** Default `inline`. */
  snapshots?: SnapshotMode;
  /** The driver's defaults unless given. */
  lazy?: LazyOptions;
  /** Run the nodes over the real LevelLogStore in temp folders. */
  levelDb: boolean;
  verbose: boolean;
}

export class HostNode {
  readonly disk: SimDisk;
  /** Durable, like the managers' tables: survives crashes. */
  readonly sm: HostStateMachine;
  /** The snapshot folder (durable), in the `files` and `lazy` modes. */
  readonly files: SimSnapshotFolder | null;
  alive = false;
  /** Removed from the cluster and shut down for good. */
  retired = false;
  incarnation = 0;
  clock: NodeClock | null = null;
  store: SimLogStore | null = null;
  raft: RaftNode | null = null;
  level: LevelLogStore | null = null;
  folder: string | null = null;
  /** Messages that reached the node while it was paused (its TCP buffers), in arrival order. */
  held: InFlight[] = [];
  /** Client requests that reached it while paused: served first when it resumes. */
  heldClient: (() => void)[] = [];
  lastTerm = 0;
  lastCommit = 0;

  constructor(
    readonly id: NodeId,
    readonly skew: number,
    /** A founding member bootstraps from initialMembers; a later one waits to be added. */
    readonly founder: boolean,
    world: HostWorld,
  ) {
    const { checker, options, fileBytes } = world;
    const mode = options.snapshots ?? 'inline';
    this.disk = new SimDisk((data) => fileBytes.digestOf(data));
    const write = (perform: () => void) => this.device().synced(perform);
    this.sm =
      mode === 'lazy'
        ? new DurableHostStateMachine(
            id,
            checker,
            world.observer,
            options.lazy?.durability ?? 'batches',
            write,
            options.variant === 'syncAppliedEarly',
          )
        : new HostStateMachine(id, checker, world.observer);
    this.files =
      mode === 'inline'
        ? null
        : new SimSnapshotFolder(id, fileBytes, () => ({
            synced: write,
            fails: () => world.fileWriteFails(),
          }));
  }

  /** The disk of the running incarnation. */
  private device(): SimLogStore {
    if (this.store === null) throw new Error(`${this.id} writes with no disk`);
    return this.store;
  }

  get paused(): boolean {
    return this.clock?.isPaused ?? false;
  }
}

export class HostWorld {
  readonly time = new VirtualTime();
  tick = 0;
  readonly checker = new Checker();
  readonly network: SimNetwork;
  readonly nodes: HostNode[] = [];
  readonly digest = new TraceDigest();
  readonly lines: string[] = [];
  readonly rng: Prng;
  /** Every snapshot file written, by sha256. */
  readonly fileBytes = new FileBytes();
  private readonly diskRng: Prng;
  private readonly fileRng: Prng;
  private readonly nodeRng: Prng;
  private readonly members: Record<NodeId, string> = {};
  private fatal: unknown = null;
  crashes = 0;
  snapshotsSent = 0;
  /** Share of snapshot file writes that fail; the liveness phase sets it to 0. */
  fileFailRate: number;
  /** Local compactions completed (the tables form counted apart). */
  compactions = { file: 0, inline: 0, tables: 0 };
  /** The last tick a vote was granted: the nemesis aims power cuts just after elections. */
  lastVoteAt = Number.NEGATIVE_INFINITY;

  constructor(
    readonly options: WorldOptions,
    readonly observer: ApplyObserver,
  ) {
    const root = new Prng(options.seed);
    this.rng = root.fork(1);
    this.diskRng = root.fork(2);
    this.nodeRng = root.fork(3);
    this.network = new SimNetwork(root.fork(4), options.faults);
    this.fileRng = root.fork(5);
    this.fileFailRate = options.lazy?.fileFailRate ?? 0;
  }

  /** Whether the snapshot file write starting now fails (drawn at its start). */
  fileWriteFails(): boolean {
    const rate = this.fileFailRate;
    return rate > 0 && this.fileRng.chance(rate);
  }

  /** Every founder's disk starts with the bootstrap snapshot at index 1, as `RaftNode.start` writes it. */
  async bootstrap(): Promise<void> {
    const ids: NodeId[] = [];
    for (let i = 1; i <= this.options.voters; i++) ids.push(`n${i}`);
    for (const id of ids) this.members[id] = `http://${id}.sim`;
    const image = JSON.stringify({ applied: 1, digest: BOOTSTRAP_DIGEST, writes: 0 });
    const snapshot = {
      metadata: { index: 1, term: 1, confState: { voters: [...ids], learners: [] } },
      data: `${JSON.stringify(this.members)}\n${image}`,
    };
    const hardState = { term: 1, vote: null, commit: 1 };
    for (const [i, id] of ids.entries()) {
      const node = new HostNode(id, this.options.skews[i] ?? 1, true, this);
      node.disk.save({ snapshot, hardState });
      // Durable tables start empty: the driver restores the bootstrap snapshot, with a synced write.
      if (!(node.sm instanceof DurableHostStateMachine)) await node.sm.restore(image, 1);
      if (this.options.levelDb) {
        node.folder = await mkdtemp(join(tmpdir(), `imgvault-sim-${id}-`));
        const level = await LevelLogStore.open(node.folder);
        await level.save({ snapshot, hardState });
        await level.close();
      }
      this.nodes.push(node);
    }
    for (const node of this.nodes) await this.start(node);
  }

  /** Boots (or reboots) the real driver from what the node's disk holds. */
  async start(node: HostNode): Promise<void> {
    node.incarnation++;
    node.alive = true;
    node.held = [];
    node.heldClient = [];
    node.lastTerm = node.disk.hardState.term;
    node.lastCommit = 0;
    if (node.folder !== null) node.level = await LevelLogStore.open(node.folder);
    const clock = new NodeClock(this.time, node.skew);
    const store = new SimLogStore(
      node.id,
      node.disk,
      node.level,
      this.checker,
      { tick: () => this.tick, latency: () => this.diskLatency() },
      (snap) => this.snapshotState(node, snap),
    );
    node.clock = clock;
    node.store = store;
    const random = this.nodeRng.fork(this.nodeRng.int(1 << 30));
    const lazy = this.options.lazy;
    node.raft = await driverClass(this.options.variant).start({
      id: node.id,
      store,
      stateMachine: node.sm,
      transport: this.transportFor(node, node.incarnation),
      initialMembers: node.founder ? this.members : null,
      contactPeers: this.members,
      tickMs: TICK_MS,
      electionTick: ELECTION_TICK,
      heartbeatTick: 2,
      snapshotThreshold: this.options.snapshotThreshold,
      ...(node.files ? { snapshotFolder: node.files.asFolder() } : {}),
      ...(lazy
        ? {
            logBudgetBytes: lazy.logBudgetBytes,
            snapshotCatchUpEntries: lazy.catchUpEntries,
            snapshotCatchUpBytes: lazy.catchUpBytes,
            ...(lazy.holdBytes === undefined ? {} : { snapshotHoldBytes: lazy.holdBytes }),
          }
        : {}),
      proposalTimeoutMs: 40 * ELECTION_TICK * TICK_MS,
      readTimeoutMs: 20 * ELECTION_TICK * TICK_MS,
      membershipTimeoutMs: 40 * ELECTION_TICK * TICK_MS,
      random: (n) => random.int(n),
      clock,
      logger: SILENT,
      onFatal: (err) => {
        this.fatal ??= err;
      },
    });
    store.starting = false;
    await this.settle();
  }

  /**
   * The digest of the state a locally taken snapshot holds. The tables form holds none: the state
   * machine is the only copy of the entries it compacts, so it must have made them durable.
   */
  private snapshotState(node: HostNode, snap: Snapshot): number | undefined {
    if (!isTablesSnapshot(snap.data)) {
      this.compactions[snapshotFileOf(snap.data) === null ? 'inline' : 'file']++;
      return this.fileBytes.digestOf(snap.data);
    }
    this.compactions.tables++;
    const index = snap.metadata.index;
    const durable = node.sm instanceof DurableHostStateMachine ? node.sm.durableApplied : 0;
    if (durable < index) {
      this.checker.fail(
        'state-machine-safety',
        `${node.id} compacted its log at ${index} without a file while its state machine had made only ${durable} durable`,
      );
    }
    return this.checker.appliedDigestAt(index);
  }

  /** Power loss: unsynced writes are gone, the process with everything it had in memory. */
  async crash(node: HostNode, why: string): Promise<void> {
    if (!node.alive) return;
    this.trace(`${node.id} crashes (${why})${node.store?.writing ? ', losing a write in flight' : ''}`);
    node.alive = false;
    if (node.clock) node.clock.alive = false;
    node.store?.crash();
    node.raft = null;
    node.held = [];
    node.heldClient = [];
    this.crashes++;
    await node.level?.close();
    node.level = null;
    node.sm.afterUncleanStop();
  }

  /**
   * A graceful restart (an upgrade, an operator's restart): the driver stops once its write in
   * flight is done, and the state machine keeps what it applied.
   */
  async restartCleanly(node: HostNode): Promise<void> {
    if (!node.alive || node.paused || !node.raft || node.store?.writing) return;
    this.trace(`${node.id} restarts cleanly`);
    const stopped = node.raft.stop();
    await this.settle();
    await stopped;
    node.alive = false;
    if (node.clock) node.clock.alive = false;
    node.raft = null;
    node.sm.afterCleanStop();
    await node.level?.close();
    node.level = null;
    await this.start(node);
  }

  /** A fresh, empty manager that waits to be added (it joins as a learner). */
  async addNode(): Promise<HostNode> {
    const id = `n${this.nodes.length + 1}`;
    this.members[id] = `http://${id}.sim`;
    const node = new HostNode(id, 1, false, this);
    if (this.options.levelDb) node.folder = await mkdtemp(join(tmpdir(), `imgvault-sim-${id}-`));
    this.nodes.push(node);
    this.trace(`${id} boots empty`);
    await this.start(node);
    return node;
  }

  /** Once its removal is committed, the operator shuts the manager down for good. */
  async retire(node: HostNode): Promise<void> {
    if (node.retired) return;
    await this.crash(node, 'retired');
    node.retired = true;
  }

  /** Members not retired. */
  current(): HostNode[] {
    return this.nodes.filter((n) => !n.retired);
  }

  pause(node: HostNode): void {
    this.trace(`${node.id} pauses`);
    node.clock?.pause();
  }

  async resume(node: HostNode): Promise<void> {
    if (!node.alive || !node.paused) return;
    this.trace(`${node.id} resumes`);
    node.clock?.resume();
    await this.settle();
    // A resumed process reads its sockets in no fixed order: clients first is the case a lease
    // (a leader trusting that it still leads) gets wrong.
    const clients = node.heldClient;
    node.heldClient = [];
    for (const call of clients) call();
    await this.settle();
    const held = node.held;
    node.held = [];
    for (const f of held) await this.deliver(f);
    await node.store?.completeDue(() => this.settle());
  }

  /** One tick of virtual time: timers, due disk writes, due messages, then the invariants. */
  async runTick(): Promise<void> {
    this.tick++;
    this.checker.now = this.tick;
    this.time.advanceTo(this.tick * TICK_MS);
    await this.settle();
    for (const node of this.nodes) {
      if (node.alive && !node.paused) await node.store?.completeDue(() => this.settle());
    }
    const { deliver, cut } = this.network.takeDue(this.tick);
    for (const f of deliver) await this.deliver(f);
    for (const f of cut) if (f.msg.type === 'MsgSnap') this.reportSnapshot(f, false);
    await this.settle();
    for (const node of this.nodes) this.observe(node);
  }

  /** Snapshot files written, and failed writes. */
  filesBuilt(): { built: number; failed: number } {
    let built = 0;
    let failed = 0;
    for (const n of this.nodes) {
      built += n.files?.built ?? 0;
      failed += n.files?.failed ?? 0;
    }
    return { built, failed };
  }

  liveNodes(): HostNode[] {
    return this.nodes.filter((n) => n.alive);
  }

  /** The live, running node claiming leadership in the highest term. */
  leader(): HostNode | null {
    let best: HostNode | null = null;
    for (const n of this.nodes) {
      if (!n.alive || n.paused || !n.raft?.isLeader()) continue;
      if (!best || n.raft.status().term > best.raft!.status().term) best = n;
    }
    return best;
  }

  trace(line: string): void {
    const text = `${this.tick} ${line}`;
    this.digest.add(text);
    if (this.options.verbose) this.lines.push(text);
  }

  async cleanup(): Promise<void> {
    for (const node of this.nodes) {
      if (node.clock) node.clock.alive = false;
      await node.level?.close();
      if (node.folder) await rm(node.folder, { recursive: true, force: true });
    }
  }

  /** A client request to `node`: handled now, or when the node resumes if it is paused. */
  clientCall(node: HostNode, call: () => void): void {
    if (node.paused) node.heldClient.push(call);
    else call();
  }

  /** Runs a client callback; a check failing in it stops the run at the next settle. */
  guard(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.fatal ??= err;
    }
  }

  /** Runs deferred driver work and lets every promise chain it started settle, until quiet. */
  async settle(): Promise<void> {
    for (let guard = 0; guard < 10_000; guard++) {
      const ran = this.time.runSoon();
      await new Promise<void>((resolve) => setImmediate(resolve));
      if (this.fatal !== null) {
        const err = this.fatal;
        this.fatal = null;
        // A check that failed inside a driver's loop (its transport, disk or state machine) is
        // reported as itself, not as the fatal error the driver turned it into.
        if (err instanceof SafetyViolation) throw err;
        this.checker.fail('host-error', `a driver stopped on a fatal error: ${String(err)}`);
      }
      if (!ran && !this.time.hasSoon()) return;
    }
    this.checker.fail('host-error', 'driver work did not settle');
  }

  private diskLatency(): number {
    const max = this.options.diskLatencyMax;
    return max === 0 ? 0 : this.diskRng.int(max + 1);
  }

  private transportFor(node: HostNode, incarnation: number): RaftTransport {
    return {
      send: (messages) => {
        if (!node.alive || node.incarnation !== incarnation) return;
        for (const m of messages) this.send(node, m);
      },
      setPeer: () => {},
      removePeer: () => {},
    };
  }

  private send(from: HostNode, msg: Message): void {
    if (msg.type === 'MsgVoteResp' && !msg.reject) {
      this.checker.onVoteGranted(msg.from, msg.to, msg.term, from.disk);
      this.lastVoteAt = this.tick;
    }
    if (msg.type === 'MsgAppResp' && !msg.reject) this.checkAck(from, msg);
    if (msg.type === 'MsgSnap') {
      this.snapshotsSent++;
      // The real sender streams the file from its folder before the MsgSnap: none, no transfer.
      const file = snapshotFileOf(msg.snapshot?.data ?? '');
      if (file !== null && !from.files?.holds(file)) {
        this.trace(`${from.id} has no file for its snapshot at ${file.index} to ${msg.to}`);
        from.raft?.reportSnapshot(msg.to, false);
        return;
      }
    }
    const dropped = this.network.send(msg, this.tick, from.incarnation);
    this.digest.addNumbers(messageFingerprint(this.tick, msg, dropped));
    if (this.options.verbose)
      this.lines.push(`${this.tick} ${describe(msg)}${dropped ? ` (${dropped})` : ''}`);
    // A real transport learns a peer is unreachable from the failed connection.
    if (dropped === 'partition') from.raft?.reportUnreachable(msg.to);
    if (dropped !== null && msg.type === 'MsgSnap') from.raft?.reportSnapshot(msg.to, false);
  }

  /** The leader's disk holds its own log up to what it sent (it persists before sending). */
  private checkAck(from: HostNode, msg: Message): void {
    const leader = this.nodes.find((n) => n.id === msg.to);
    const leads = leader?.alive && leader.raft?.isLeader() && leader.lastTerm === msg.term;
    const leaderTerm = leads ? leader!.disk.termAt(msg.index ?? 0) : undefined;
    this.checker.onAppendAck(from.id, from.disk, msg.term, msg.index ?? 0, msg.to, leaderTerm);
  }

  private async deliver(f: InFlight): Promise<void> {
    const dest = this.nodes.find((n) => n.id === f.msg.to);
    if (!dest?.alive || !dest.raft) {
      if (f.msg.type === 'MsgSnap') this.reportSnapshot(f, false);
      return;
    }
    if (dest.paused) {
      dest.held.push(f);
      return;
    }
    const file = f.msg.type === 'MsgSnap' ? snapshotFileOf(f.msg.snapshot?.data ?? '') : null;
    if (file !== null) dest.files?.receive(file);
    const taken = dest.raft.receive(f.msg);
    if (f.msg.type === 'MsgSnap') this.reportSnapshot(f, taken);
    await this.settle();
  }

  private reportSnapshot(f: InFlight, ok: boolean): void {
    const sender = this.nodes.find((n) => n.id === f.msg.from);
    if (!sender?.alive || sender.incarnation !== f.senderIncarnation) return;
    sender.raft?.reportSnapshot(f.msg.to, ok);
  }

  /** Term and commit never go back within an incarnation; one leader per term. */
  private observe(node: HostNode): void {
    if (!node.alive || node.paused || !node.raft) return;
    const st = node.raft.status();
    if (st.term < node.lastTerm) {
      this.checker.fail('monotonicity', `${node.id} term went from ${node.lastTerm} to ${st.term}`);
    }
    if (st.commit < node.lastCommit) {
      this.checker.fail('monotonicity', `${node.id} commit went from ${node.lastCommit} to ${st.commit}`);
    }
    node.lastTerm = st.term;
    node.lastCommit = st.commit;
    if (st.role === 'leader') this.checker.onLeader(node.id, st.term);
  }
}
