// The Raft node driver: the only code that touches the deterministic core, and the one that gives it
// time (a tick timer), a network (the transport) and a disk (the log store). It owns a single
// serialized Ready loop. Anything that reaches the core while a Ready is being handled (a message,
// a tick, a proposal) waits in an inbox and is fed in after advance(), so no await ever interleaves
// two Ready cycles and no input lands between ready() and advance() (hashicorp/raft #695).

import { randomInt } from 'node:crypto';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { createLogger, type Logger } from '../logging.ts';
import type { ProposeError, RaftConfig, RaftLogStore } from './api.ts';
import { bootstrapSnapshot, MemoryStorage, RaftCore } from './core/index.ts';
import { type SnapshotFileRef, type SnapshotFolder, snapshotFileName } from './snapshotFiles.ts';
import {
  captureSnapshot,
  missingSnapshotFile,
  restoreSnapshot,
  snapshotFileOf,
  unwrapSnapshot,
  wrapSnapshot,
} from './snapshots.ts';
import type { AppliedResult, StateMachine } from './stateMachine.ts';
import { type Refusal, refusal } from './transport/messageFilter.ts';
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  Index,
  Message,
  NodeId,
  ProgressStatus,
  RandomInt,
  Ready,
  Role,
  Snapshot,
  Status,
} from './types.ts';

/** A timer handle from a `RaftClock`; only ever handed back to the same clock. */
export type TimerHandle = unknown;

/**
 * Time for the driver: timers, the tick interval, the deferral that batches inputs into one Ready,
 * and `now()` for contact ages. Production uses the process clock; the simulator injects virtual
 * time so the same driver runs deterministically under skewed, paused and crashing nodes.
 */
export interface RaftClock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
  setInterval(fn: () => void, ms: number): TimerHandle;
  clearInterval(handle: TimerHandle): void;
  /** Runs `fn` once the inputs of the current I/O phase have arrived. */
  defer(fn: () => void): void;
}

export const systemClock: RaftClock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as NodeJS.Timeout),
  setInterval: (fn, ms) => setInterval(fn, ms),
  clearInterval: (h) => clearInterval(h as NodeJS.Timeout),
  defer: (fn) => {
    setImmediate(fn);
  },
};

/** What the driver needs from a transport; `HttpTransport` provides it. */
export interface RaftTransport {
  /** Queue messages for delivery; never blocks, never throws on an unreachable peer. */
  send(messages: Message[]): void;
  setPeer(id: NodeId, url: string): void;
  removePeer(id: NodeId): void;
}

export type RaftErrorCode =
  | 'NotLeader'
  | 'ProposalDropped'
  | 'ConfChangeInProgress'
  | 'TransferInProgress'
  | 'Timeout'
  | 'Stopped'
  | 'DuplicateRequest'
  | 'InvalidMember';

/** Every failure the driver reports is one of these, so the HTTP layer maps a code to one status. */
export class RaftError extends Error {
  constructor(
    readonly code: RaftErrorCode,
    message: string,
    /** Set on NotLeader: the leader this node knows of, if any, for a redirect. */
    readonly leader: { id: NodeId; url: string | null } | null = null,
  ) {
    super(message);
    this.name = 'RaftError';
  }
}

export interface RaftNodeOptions {
  id: NodeId;
  store: RaftLogStore;
  stateMachine: StateMachine;
  transport: RaftTransport;
  /**
   * The founding members (id -> URL, this node included) of a brand-new cluster. Used only when
   * the store is empty; a node joining an existing cluster passes null and waits to be added.
   */
  initialMembers: Record<NodeId, string> | null;
  /**
   * URLs of existing members for a node that joins: until the leader's snapshot brings the member
   * map, these are the only way to answer the leader at all.
   */
  contactPeers?: Record<NodeId, string>;
  tickMs?: number;
  electionTick?: number;
  heartbeatTick?: number;
  /** Take a snapshot and compact the log every this many applied entries. */
  snapshotThreshold?: number;
  /**
   * Where snapshots are written as files (snapshots.ts): the Raft log and MsgSnap then carry only
   * their descriptor. Without one, snapshots are inline strings (the simulator, small tests).
   */
  snapshotFolder?: SnapshotFolder;
  proposalTimeoutMs?: number;
  readTimeoutMs?: number;
  /** How long addMember/removeMember/transferLeadership wait for their effect. */
  membershipTimeoutMs?: number;
  /** A learner is promoted once its match index is within this many entries of the leader's last. */
  promoteGap?: number;
  /** Bound on proposals waiting to be applied; beyond it propose() fails fast with ProposalDropped. */
  maxPendingProposals?: number;
  /** Bound, in bytes of entry data, on what the leader has appended but not yet committed. */
  maxUncommittedBytes?: number;
  random?: RandomInt;
  /** Timers and time; the process clock unless a simulator injects its own. */
  clock?: RaftClock;
  logger?: Logger;
  metrics?: Registry;
  /** Called when the Ready loop fails (e.g. the disk refuses a write): the node is stopped. */
  onFatal?: (err: unknown) => void;
}

export interface RaftNodeStatus extends Omit<Status, 'progress'> {
  leaderUrl: string | null;
  members: Record<NodeId, string>;
  /** Only on the leader; lastContactMs is the time since this node last heard from the peer. */
  progress?: Record<NodeId, ProgressStatus & { lastContactMs: number | null }>;
}

interface PendingProposal {
  resolve: (result: unknown) => void;
  reject: (err: RaftError) => void;
  timer: TimerHandle;
}

interface ReadBatch {
  ctx: string;
  index: Index | null;
  waiters: { resolve: () => void; reject: (err: RaftError) => void }[];
  timer: TimerHandle;
}

interface ConditionWaiter {
  check: () => boolean;
  resolve: () => void;
  reject: (err: RaftError) => void;
  timer: TimerHandle;
}

/** A refused message is logged at most once per sender and reason in this long. */
const REFUSAL_LOG_MS = 10_000;

const PROPOSE_ERROR_MESSAGES: Record<ProposeError, string> = {
  ProposalDropped: 'the proposal was dropped (leader busy or changing)',
  NotLeader: 'this node is not the leader',
  ConfChangeInProgress: 'another membership change is still in progress',
  TransferInProgress: 'a leadership transfer is in progress',
};

export class RaftNode {
  readonly id: NodeId;
  private readonly core: RaftCore;
  private readonly storage: MemoryStorage;
  private readonly store: RaftLogStore;
  protected readonly sm: StateMachine;
  protected readonly transport: RaftTransport;
  private readonly log: Logger;
  private readonly opts: Required<
    Pick<
      RaftNodeOptions,
      | 'tickMs'
      | 'snapshotThreshold'
      | 'proposalTimeoutMs'
      | 'readTimeoutMs'
      | 'membershipTimeoutMs'
      | 'promoteGap'
      | 'maxPendingProposals'
    >
  >;
  private readonly onFatal: (err: unknown) => void;
  private readonly clock: RaftClock;
  private readonly random: RandomInt;

  private members: Map<NodeId, string>;
  private confState: ConfState;
  private snapshotIndex: Index;
  private readonly snapshotFolder: SnapshotFolder | null;
  /** A snapshot being built off the Ready loop (see maybeSnapshot), or null. */
  private snapshotTask: Promise<void> | null = null;
  /** The applied index the last snapshot was started at, taken or not: a failed one waits as long. */
  private snapshotStartedAt: Index = 0;
  /** The recorded snapshot's file is missing (see start): take one at the next applied entry. */
  private snapshotDue = false;
  /** The hard state as last written to the store, and a newer one not yet written (commit only). */
  protected durableHardState: HardState;
  protected unsavedHardState: HardState | null = null;
  private role: Role = 'follower';
  private leader: NodeId | null = null;
  private term = 0;

  private inbox: (() => void)[] = [];
  private inCycle = false;
  private readyScheduled = false;
  private stopped = false;
  private cycleDone: Promise<void> = Promise.resolve();
  /** Readies taken from the core so far; the one numbered `n` has sent its messages once `sentThrough >= n`. */
  private readyTaken = 0;
  private sentThrough = 0;
  /** `repliesSent` callers, each waiting for the Ready numbered `after` (or an idle loop). */
  private replyWaiters: { after: number; resolve: () => void }[] = [];
  private ticker: TimerHandle | null = null;
  private ticks = 0;

  private readonly proposals = new Map<string, PendingProposal>();
  private readonly reads = new Map<string, ReadBatch>();
  /** Reads that arrived since the last ReadIndex request went into the core; they share the next. */
  private unsubmittedRead: ReadBatch | null = null;
  private readonly waiters = new Set<ConditionWaiter>();
  private readonly lastContact = new Map<NodeId, number>();
  private readonly promotionProposedAt = new Map<NodeId, number>();
  /** When a refused message was last logged, by reason and sender. */
  private readonly refusalsLogged = new Map<string, number>();

  private readonly metrics: {
    leaderChanges: Counter;
    saveSeconds: Histogram;
    readySeconds: Histogram;
    entriesApplied: Counter;
    proposalsDropped: Counter<'reason'>;
    messagesRefused: Counter<'reason'>;
  } | null;

  /** Protected so a simulator can plant a broken driver (a subclass) and prove its checks catch it. */
  protected constructor(
    opts: RaftNodeOptions,
    core: RaftCore,
    storage: MemoryStorage,
    members: Map<NodeId, string>,
    snapshot: Snapshot,
    hardState: HardState,
  ) {
    this.id = opts.id;
    this.core = core;
    this.storage = storage;
    this.store = opts.store;
    this.sm = opts.stateMachine;
    this.transport = opts.transport;
    this.log = opts.logger ?? createLogger('raft', { nodeId: opts.id });
    this.opts = {
      tickMs: opts.tickMs ?? 50,
      snapshotThreshold: opts.snapshotThreshold ?? 10_000,
      proposalTimeoutMs: opts.proposalTimeoutMs ?? 5_000,
      readTimeoutMs: opts.readTimeoutMs ?? 5_000,
      membershipTimeoutMs: opts.membershipTimeoutMs ?? 30_000,
      promoteGap: opts.promoteGap ?? 100,
      maxPendingProposals: opts.maxPendingProposals ?? 10_000,
    };
    this.clock = opts.clock ?? systemClock;
    this.random = opts.random ?? ((n: number) => randomInt(n));
    this.onFatal =
      opts.onFatal ??
      ((err) => {
        this.log.fatal({ event: 'raft.fatal', err }, 'raft node stopped after a fatal error');
      });
    this.members = members;
    this.confState = snapshot.metadata.confState;
    this.snapshotIndex = snapshot.metadata.index;
    this.snapshotFolder = opts.snapshotFolder ?? null;
    this.durableHardState = hardState;
    this.metrics = opts.metrics ? this.registerMetrics(opts.metrics) : null;
  }

  /**
   * Loads the durable log, restores the state machine if it is behind the last snapshot, and starts
   * ticking. Called on a subclass, it builds that subclass. A founding member with an empty store first persists the bootstrap snapshot.
   */
  static async start(opts: RaftNodeOptions): Promise<RaftNode> {
    const log = opts.logger ?? createLogger('raft', { nodeId: opts.id });
    const loaded = await opts.store.load();
    let snapshot = loaded.snapshot;
    let hardState = loaded.hardState;
    const empty = snapshot === null && loaded.entries.length === 0 && hardState.term === 0;
    if (empty && opts.initialMembers !== null) {
      const founders = new Map(Object.entries(opts.initialMembers));
      if (!founders.has(opts.id)) throw new Error(`node ${opts.id} is not among the initial members`);
      const voters = [...founders.keys()].sort();
      // Every founder builds the same bytes: same sorted voters, same URL map, empty state.
      snapshot = { ...bootstrapSnapshot(voters), data: wrapSnapshot(new Map([...founders].sort()), '') };
      hardState = { term: snapshot.metadata.term, vote: null, commit: snapshot.metadata.index };
      await opts.store.save({ snapshot, hardState });
      log.info({ event: 'raft.bootstrapped', voters }, 'bootstrapped a new cluster');
    } else if (empty) {
      log.info({ event: 'raft.awaiting_membership' }, 'empty log: waiting to be added to a cluster');
    }

    const storage = new MemoryStorage(snapshot ?? undefined);
    storage.setHardState(hardState);
    storage.append(loaded.entries);
    const effectiveSnapshot = storage.snapshot();
    let { members: snapMembers } = unwrapSnapshot(effectiveSnapshot.data);
    if (effectiveSnapshot.metadata.index > opts.stateMachine.appliedIndex()) {
      const folder = opts.snapshotFolder ?? null;
      ({ members: snapMembers } = await restoreSnapshot(
        opts.stateMachine,
        folder,
        effectiveSnapshot.data,
        effectiveSnapshot.metadata.index,
      ));
    }
    const members = new Map(Object.entries(snapMembers));
    for (const [id, url] of members) if (id !== opts.id) opts.transport.setPeer(id, url);
    for (const [id, url] of Object.entries(opts.contactPeers ?? {})) {
      if (id !== opts.id && !members.has(id)) opts.transport.setPeer(id, url);
    }

    // `applied` is deliberately left at the snapshot: the core then hands out every committed entry
    // after it again, so conf changes the state machine had already applied are re-applied to the
    // core and the peer map (the driver skips them for the state machine itself).
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass start() was called on
    const core = this.createCore({
      id: opts.id,
      storage,
      electionTick: opts.electionTick ?? 10,
      heartbeatTick: opts.heartbeatTick ?? 1,
      random: opts.random ?? ((n: number) => randomInt(n)),
      preVote: true,
      checkQuorum: true,
      maxUncommittedEntriesSize: opts.maxUncommittedBytes ?? 64 * 1024 * 1024,
    });
    const node = new this(opts, core, storage, members, effectiveSnapshot, hardState);
    node.term = hardState.term;
    const recordedFile = snapshotFileOf(effectiveSnapshot.data);
    if (recordedFile !== null && !node.snapshotFolder?.holds(recordedFile)) {
      // As leader this node could send no follower a snapshot until the next one is taken.
      log.error(
        { event: 'raft.snapshot_file_missing', index: recordedFile.index, sha256: recordedFile.sha256 },
        'the recorded snapshot file is not in the snapshot folder; taking a new snapshot now',
      );
      node.snapshotDue = true;
    }
    node.ticker = node.clock.setInterval(() => node.input(() => node.onTick()), node.opts.tickMs);
    node.scheduleReady();
    log.info(
      {
        event: 'raft.started',
        term: hardState.term,
        commit: hardState.commit,
        snapshotIndex: effectiveSnapshot.metadata.index,
        lastIndex: storage.lastIndex(),
        applied: opts.stateMachine.appliedIndex(),
      },
      'raft node started',
    );
    return node;
  }

  /** The core this driver runs; a simulator's subclass may plant a broken one here. */
  protected static createCore(config: RaftConfig): RaftCore {
    return new RaftCore(config);
  }

  // ---- inputs from the outside world -------------------------------------------------------

  /**
   * A message from the transport. Returns false, and drops it, when it fails the checks in
   * messageFilter (a non-member, a term far beyond ours, a leader's message from another member).
   */
  receive(msg: Message): boolean {
    const why = refusal(msg, { id: this.id, term: this.term, leader: this.leader, members: this.members });
    if (why !== null) {
      this.noteRefused(msg, why);
      return false;
    }
    const missing = missingSnapshotFile(msg, this.snapshotFolder);
    if (missing !== null) {
      this.log.warn(
        { event: 'raft.snapshot_refused', from: msg.from, index: msg.snapshot?.metadata.index },
        missing,
      );
      return false;
    }
    this.lastContact.set(msg.from, this.clock.now());
    this.input(() => {
      try {
        this.core.step(msg);
      } catch (err) {
        // The core drops malformed input itself; it throws only on a broken invariant, possibly
        // after changing state, so going on could corrupt the log.
        this.fatal(err);
      }
    });
    return true;
  }

  /** Logs a refused message, once per sender and reason every REFUSAL_LOG_MS (a removed member keeps sending). */
  private noteRefused(msg: Message, why: Refusal): void {
    this.metrics?.messagesRefused.inc({ reason: why });
    const key = `${why} ${msg.from}`;
    const now = this.clock.now();
    const last = this.refusalsLogged.get(key);
    if (last !== undefined && now - last < REFUSAL_LOG_MS) return;
    if (this.refusalsLogged.size > 1_000) this.refusalsLogged.clear();
    this.refusalsLogged.set(key, now);
    this.log.warn(
      {
        event: 'raft.message_refused',
        reason: why,
        type: msg.type,
        from: msg.from,
        msgTerm: msg.term,
        term: this.term,
      },
      `refused a raft ${msg.type} from ${msg.from}: ${why}`,
    );
  }

  /**
   * Resolves once the messages received so far have been stepped and the Ready carrying what they
   * produced (e.g. an append's response, after its fsync) has handed its messages to the transport;
   * or when nothing more comes of them; or after `maxWaitMs`. The transport route waits on this to
   * send a peer's replies back in the answer to its request, instead of in a request of its own.
   */
  repliesSent(maxWaitMs: number): Promise<void> {
    return new Promise((resolve) => {
      let settled = false;
      const done = () => {
        if (settled) return;
        settled = true;
        this.clock.clearTimeout(timer);
        resolve();
      };
      const timer = this.clock.setTimeout(done, maxWaitMs);
      if (this.stopped) return done();
      // Inputs run in order: when this one runs, every message received before it has been stepped.
      this.input(() => this.replyWaiters.push({ after: this.readyTaken + 1, resolve: done }));
    });
  }

  /** Wakes the `repliesSent` callers whose Ready has sent its messages, or all of them. */
  private wakeReplyWaiters(all: boolean): void {
    if (this.replyWaiters.length === 0) return;
    const waiting: typeof this.replyWaiters = [];
    for (const w of this.replyWaiters) {
      if (all || w.after <= this.sentThrough) w.resolve();
      else waiting.push(w);
    }
    this.replyWaiters = waiting;
  }

  reportUnreachable(peer: NodeId): void {
    this.input(() => this.core.reportUnreachable(peer));
  }

  reportSnapshot(peer: NodeId, ok: boolean): void {
    this.input(() => this.core.reportSnapshot(peer, ok));
  }

  /**
   * Proposes a state-machine command carrying `requestId` and resolves with the state machine's
   * result once the entry is applied here. Only the leader accepts proposals: a follower rejects
   * with NotLeader (carrying the leader, if known) so the caller can redirect.
   */
  propose(data: string, requestId: string): Promise<unknown> {
    if (this.stopped) return Promise.reject(new RaftError('Stopped', 'raft node is stopped'));
    if (this.role !== 'leader') return Promise.reject(this.notLeader());
    if (this.proposals.size >= this.opts.maxPendingProposals) {
      this.metrics?.proposalsDropped.inc({ reason: 'queue_full' });
      return Promise.reject(
        new RaftError('ProposalDropped', `${this.proposals.size} proposals already pending; retry later`),
      );
    }
    if (this.proposals.has(requestId)) {
      return Promise.reject(new RaftError('DuplicateRequest', `request ${requestId} is already pending`));
    }
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        if (this.proposals.delete(requestId)) {
          this.metrics?.proposalsDropped.inc({ reason: 'timeout' });
          reject(
            new RaftError(
              'Timeout',
              `proposal ${requestId} not applied within ${this.opts.proposalTimeoutMs} ms`,
            ),
          );
        }
      }, this.opts.proposalTimeoutMs);
      this.proposals.set(requestId, { resolve, reject, timer });
      this.input(() => {
        const err = this.core.propose(data);
        if (err === null) return;
        this.metrics?.proposalsDropped.inc({ reason: 'refused' });
        this.failProposal(requestId, this.proposeError(err));
      });
    });
  }

  /**
   * Resolves once a linearizable read may be served from the local state machine: the leader has
   * confirmed its leadership at some commit index (ReadIndex, Raft thesis 6.4) and this node has
   * applied up to it. Works on followers too (the core forwards the request to the leader).
   */
  readIndex(): Promise<void> {
    if (this.stopped) return Promise.reject(new RaftError('Stopped', 'raft node is stopped'));
    if (this.leader === null) return Promise.reject(this.notLeader());
    return new Promise((resolve, reject) => {
      let batch = this.unsubmittedRead;
      if (batch === null) {
        const ctx = this.readContext();
        const created: ReadBatch = {
          ctx,
          index: null,
          waiters: [],
          timer: this.clock.setTimeout(() => {
            if (this.reads.delete(ctx) || this.unsubmittedRead === created) {
              if (this.unsubmittedRead === created) this.unsubmittedRead = null;
              const err = new RaftError(
                'Timeout',
                `read index not confirmed within ${this.opts.readTimeoutMs} ms`,
              );
              for (const w of created.waiters) w.reject(err);
            }
          }, this.opts.readTimeoutMs),
        };
        batch = created;
        this.unsubmittedRead = created;
        this.input(() => {
          if (this.unsubmittedRead === created) this.unsubmittedRead = null;
          this.reads.set(created.ctx, created);
          this.core.readIndex(created.ctx);
        });
      }
      batch.waiters.push({ resolve, reject });
    });
  }

  /** Asks the leader to hand over to `to`; resolves when this node sees `to` as leader. */
  transferLeadership(to: NodeId): Promise<void> {
    if (this.stopped) return Promise.reject(new RaftError('Stopped', 'raft node is stopped'));
    if (!this.confState.voters.includes(to)) {
      return Promise.reject(new RaftError('InvalidMember', `${to} is not a voting member`));
    }
    if (this.leader === to) return Promise.resolve();
    if (this.role !== 'leader') return Promise.reject(this.notLeader());
    const wait = this.waitFor(() => this.leader === to, `leadership transfer to ${to}`);
    this.input(() => this.core.transferLeadership(to));
    return wait.done;
  }

  /**
   * Adds a member: first as a learner that receives the log without voting, then, once it has
   * caught up (see maybePromoteLearners), as a voter. Resolves when it is a voter.
   */
  async addMember(id: NodeId, url: string): Promise<void> {
    if (this.stopped) throw new RaftError('Stopped', 'raft node is stopped');
    if (!/^https?:\/\/[^\s/]+$/.test(url)) throw new RaftError('InvalidMember', `bad member URL ${url}`);
    if (this.confState.voters.includes(id)) {
      if (this.members.get(id) === url) return;
      throw new RaftError('InvalidMember', `${id} is already a member with URL ${this.members.get(id)}`);
    }
    if (this.role !== 'leader') throw this.notLeader();
    const wait = this.waitFor(() => this.confState.voters.includes(id), `promotion of ${id}`);
    if (!this.confState.learners.includes(id)) {
      this.proposeConfChange({ type: 'addLearner', nodeId: id, context: url }, wait.cancel);
    }
    return wait.done;
  }

  /** Removes a member (voter or learner); resolves once the removal is applied here. */
  async removeMember(id: NodeId): Promise<void> {
    if (this.stopped) throw new RaftError('Stopped', 'raft node is stopped');
    const isMember = () => this.confState.voters.includes(id) || this.confState.learners.includes(id);
    if (!isMember()) return;
    if (this.role !== 'leader') throw this.notLeader();
    const wait = this.waitFor(() => !isMember(), `removal of ${id}`);
    this.proposeConfChange({ type: 'remove', nodeId: id }, wait.cancel);
    return wait.done;
  }

  /** 64 random bits: a read context must not match a response meant for an earlier incarnation. */
  private readContext(): string {
    const half = () =>
      this.random(2 ** 32)
        .toString(16)
        .padStart(8, '0');
    return half() + half();
  }

  status(): RaftNodeStatus {
    const s = this.core.status();
    const now = this.clock.now();
    let progress: RaftNodeStatus['progress'];
    if (s.progress) {
      progress = {};
      for (const [peer, p] of Object.entries(s.progress)) {
        const seen = this.lastContact.get(peer);
        progress[peer] = {
          ...p,
          lastContactMs: peer === this.id ? 0 : seen === undefined ? null : now - seen,
        };
      }
    }
    const { progress: _, ...rest } = s;
    return {
      ...rest,
      applied: this.sm.appliedIndex(),
      snapshotIndex: this.snapshotIndex,
      leaderUrl: s.leader === null ? null : (this.members.get(s.leader) ?? null),
      members: Object.fromEntries(this.members),
      ...(progress ? { progress } : {}),
    };
  }

  /** The leader as last seen in a Ready (cheap; no status() walk). */
  leaderInfo(): { id: NodeId; url: string | null } | null {
    return this.leader === null ? null : { id: this.leader, url: this.members.get(this.leader) ?? null };
  }

  isLeader(): boolean {
    return this.role === 'leader';
  }

  /**
   * Stops ticking and taking input, lets the Ready cycle in progress finish (so nothing is half
   * written), and fails every waiter. The caller closes the transport, store and state machine.
   */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) this.clock.clearInterval(this.ticker);
    await this.cycleDone;
    // The owner closes the store and the state machine next: a snapshot still reading them ends first.
    await this.snapshotTask;
    this.failEverything(new RaftError('Stopped', 'raft node stopped'));
    this.log.info({ event: 'raft.stopped' }, 'raft node stopped');
  }

  // ---- the loop -----------------------------------------------------------------------------

  private input(fn: () => void): void {
    if (this.stopped) return;
    if (this.inCycle) {
      this.inbox.push(fn);
      return;
    }
    try {
      fn();
    } catch (err) {
      this.fatal(err);
      return;
    }
    this.scheduleReady();
  }

  /** Deferred (setImmediate in production) so inputs arriving in the same I/O phase share one Ready (one fsync). */
  private scheduleReady(): void {
    if (this.readyScheduled || this.inCycle || this.stopped) return;
    this.readyScheduled = true;
    this.clock.defer(() => {
      this.readyScheduled = false;
      if (!this.inCycle && !this.stopped) this.cycleDone = this.runReadyLoop();
    });
  }

  private async runReadyLoop(): Promise<void> {
    this.inCycle = true;
    try {
      while (!this.stopped) {
        const inbox = this.inbox;
        this.inbox = [];
        for (const fn of inbox) fn();
        if (!this.core.hasReady()) break;
        const rd = this.core.ready();
        this.readyTaken += 1;
        const t0 = performance.now();
        await this.handleReady(rd);
        this.core.advance();
        this.metrics?.readySeconds.observe((performance.now() - t0) / 1000);
      }
    } catch (err) {
      this.fatal(err);
    } finally {
      this.inCycle = false;
      // No Ready is left: whatever the waiters' messages produced has gone out already.
      if (this.inbox.length === 0 || this.stopped) this.wakeReplyWaiters(true);
    }
    if (this.inbox.length > 0) this.scheduleReady();
  }

  /** The documented order: persist, then send, then apply; advance() follows in the caller. */
  protected async handleReady(rd: Ready): Promise<void> {
    if (rd.softState) this.onSoftState(rd.softState.role, rd.softState.leader);
    if (rd.hardState) this.term = rd.hardState.term;

    // A hard state whose only change is the commit index is not worth an fsync of its own (etcd's
    // MustSync): the commit index can always be re-learnt from the leader, so it waits for the next
    // write that must be synced anyway. Term and vote changes are never deferred.
    if (rd.hardState) {
      const durable = this.durableHardState;
      const commitOnly = rd.hardState.term === durable.term && rd.hardState.vote === durable.vote;
      this.unsavedHardState = rd.hardState;
      if (commitOnly && rd.entries.length === 0 && rd.snapshot === undefined) {
        this.storage.setHardState(rd.hardState);
      }
    }
    // A leader's appends go out now, and its own write overlaps the followers' (see Ready).
    if (rd.messagesBeforePersist.length > 0) this.transport.send(rd.messagesBeforePersist);
    const messages = rd.messages;
    if (rd.snapshot !== undefined || rd.entries.length > 0 || this.mustSaveHardState()) {
      await this.persist(rd.entries, rd.snapshot);
      if (rd.snapshot) this.storage.applySnapshot(rd.snapshot);
      if (rd.entries.length > 0) this.storage.append(rd.entries);
      this.storage.setHardState(this.durableHardState);
    }

    if (messages.length > 0) this.transport.send(messages);
    this.sentThrough = this.readyTaken;
    this.wakeReplyWaiters(false);

    if (rd.snapshot) await this.installSnapshot(rd.snapshot);
    if (rd.committedEntries.length > 0) await this.applyEntries(rd.committedEntries);

    for (const rs of rd.readStates) {
      const batch = this.reads.get(rs.context);
      if (batch) batch.index = rs.index;
    }
    this.resolveReads();
    await this.maybeSnapshot();
  }

  /** True when the hard state waiting to be written changes the term or the vote. */
  protected mustSaveHardState(): boolean {
    const hs = this.unsavedHardState;
    return hs !== null && (hs.term !== this.durableHardState.term || hs.vote !== this.durableHardState.vote);
  }

  /** One synced write of a snapshot, entries and the latest hard state not yet on disk. */
  protected async persist(entries: Entry[], snapshot?: Snapshot): Promise<void> {
    const hardState = this.unsavedHardState;
    const t0 = performance.now();
    await this.store.save({
      ...(hardState ? { hardState } : {}),
      ...(entries.length > 0 ? { entries } : {}),
      ...(snapshot ? { snapshot } : {}),
    });
    this.metrics?.saveSeconds.observe((performance.now() - t0) / 1000);
    if (hardState) {
      this.durableHardState = hardState;
      if (this.unsavedHardState === hardState) this.unsavedHardState = null;
    }
  }

  private onSoftState(role: Role, leader: NodeId | null): void {
    if (leader !== this.leader) {
      this.metrics?.leaderChanges.inc();
      this.log.info(
        { event: 'raft.leader_changed', term: this.core.status().term, leader, previous: this.leader, role },
        leader === null ? 'no leader' : `leader is ${leader}`,
      );
    }
    if (role === 'leader' && this.role !== 'leader') {
      this.log.info({ event: 'raft.became_leader', term: this.core.status().term }, 'became leader');
    }
    this.role = role;
    this.leader = leader;
    this.checkWaiters();
  }

  private async installSnapshot(snap: Snapshot): Promise<void> {
    const folder = this.snapshotFolder;
    const { members, file } = await restoreSnapshot(this.sm, folder, snap.data, snap.metadata.index);
    // persist() recorded this snapshot before it was installed: older files are no longer needed.
    if (file !== null) await folder?.removeOlderThan(file);
    this.snapshotIndex = snap.metadata.index;
    this.confState = snap.metadata.confState;
    for (const id of this.members.keys())
      if (!(id in members) && id !== this.id) this.transport.removePeer(id);
    this.members = new Map(Object.entries(members));
    for (const [id, url] of this.members) if (id !== this.id) this.transport.setPeer(id, url);
    this.log.info(
      { event: 'raft.snapshot_installed', index: snap.metadata.index, term: snap.metadata.term },
      'installed a snapshot from the leader',
    );
    this.checkWaiters();
  }

  /**
   * Entries at or below this index are already in the state machine and are not applied again:
   * after a restart the core hands out every committed entry after the snapshot (see start), and
   * the durable state machine may hold many of them.
   */
  protected appliedIndexToSkip(): Index {
    return this.sm.appliedIndex();
  }

  protected async applyEntries(entries: Entry[]): Promise<void> {
    const applied = this.appliedIndexToSkip();
    const fresh = entries[0]!.index > applied ? entries : entries.filter((e) => e.index > applied);
    let results: AppliedResult[] = [];
    if (fresh.length > 0) {
      results = await this.sm.apply(fresh);
      this.metrics?.entriesApplied.inc(fresh.length);
    }
    // Conf changes go to the core even when the state machine had applied them before a restart:
    // the core's membership starts from the snapshot and must replay them.
    let confChanged = false;
    for (const e of entries) {
      if (e.type === 'confChange') {
        this.applyConfChange(JSON.parse(e.data) as ConfChange, e.index);
        confChanged = true;
      }
    }
    for (const r of results) {
      if (r.requestId === null) continue;
      const p = this.proposals.get(r.requestId);
      if (p === undefined) continue;
      this.proposals.delete(r.requestId);
      this.clock.clearTimeout(p.timer);
      p.resolve(r.result);
    }
    if (confChanged) this.checkWaiters();
  }

  private applyConfChange(cc: ConfChange, index: Index): void {
    this.confState = this.core.applyConfChange(cc);
    if (cc.type === 'addLearner' && cc.context) {
      this.members.set(cc.nodeId, cc.context);
      if (cc.nodeId !== this.id) this.transport.setPeer(cc.nodeId, cc.context);
    } else if (cc.type === 'remove') {
      this.members.delete(cc.nodeId);
      this.promotionProposedAt.delete(cc.nodeId);
      if (cc.nodeId !== this.id) this.transport.removePeer(cc.nodeId);
    }
    this.log.info(
      {
        event: 'raft.conf_change_applied',
        index,
        change: cc.type,
        member: cc.nodeId,
        confState: this.confState,
      },
      `membership change ${cc.type} ${cc.nodeId}`,
    );
    if (cc.type === 'remove' && cc.nodeId === this.id) {
      this.log.warn({ event: 'raft.removed_self', index }, 'this node was removed from the cluster');
    }
  }

  private resolveReads(): void {
    const applied = this.sm.appliedIndex();
    for (const [ctx, batch] of this.reads) {
      if (batch.index === null || batch.index > applied) continue;
      this.reads.delete(ctx);
      this.clock.clearTimeout(batch.timer);
      for (const w of batch.waiters) w.resolve();
    }
  }

  private async maybeSnapshot(): Promise<void> {
    if (this.snapshotTask !== null) return;
    const applied = this.sm.appliedIndex();
    const since = applied - Math.max(this.snapshotIndex, this.snapshotStartedAt);
    if (since < (this.snapshotDue ? 1 : this.opts.snapshotThreshold)) return;
    if (applied > this.storage.lastIndex()) return;
    // After a restart the state machine may be ahead of the commit index on disk (see persist);
    // a snapshot must not claim more than the core knows committed.
    if (applied > (this.unsavedHardState ?? this.durableHardState).commit) return;
    // The store refuses to compact past the commit index it holds: write the deferred one first.
    if (this.unsavedHardState !== null && this.durableHardState.commit < applied) await this.persist([]);
    // The state is captured now, between two applies (StateMachine.snapshot), and serialised while
    // the loop goes on: built inside the loop, a large table stopped ticks, heartbeats and votes for
    // seconds (3.9 s at 200,000 images), long enough for the followers to elect a new leader.
    const finish = captureSnapshot(
      this.sm,
      this.snapshotFolder,
      { index: applied, term: this.storage.term(applied) },
      new Map(this.members),
    );
    this.snapshotStartedAt = applied;
    this.snapshotDue = false;
    this.snapshotTask = this.compactTo(
      applied,
      { voters: [...this.confState.voters], learners: [...this.confState.learners] },
      finish,
    )
      .catch((err: unknown) =>
        this.log.error(
          { event: 'raft.snapshot_failed', index: applied, err },
          'snapshot not taken; the next one is tried after more entries',
        ),
      )
      .finally(() => {
        this.snapshotTask = null;
      });
  }

  /** Finishes a snapshot `maybeSnapshot` captured at `index`, unless a newer one came meanwhile. */
  private async compactTo(
    index: Index,
    confState: ConfState,
    finish: () => Promise<{ data: string; file: SnapshotFileRef | null }>,
  ): Promise<void> {
    const { data, file } = await finish();
    // A snapshot installed from the leader meanwhile already covers this one.
    if (this.stopped || index <= this.snapshotIndex) {
      // Never recorded, and newer than what is: removeOlderThan would keep it for good.
      const recorded = snapshotFileOf(this.storage.snapshot().data);
      if (file !== null && (recorded === null || snapshotFileName(recorded) !== snapshotFileName(file)))
        await this.snapshotFolder?.discard(file);
      return;
    }
    const snap = this.storage.createSnapshot(index, confState, data);
    // The store serialises this with the loop's writes, and refuses it if a newer snapshot landed.
    await this.store.compact(snap);
    this.storage.compact(index);
    this.snapshotIndex = Math.max(this.snapshotIndex, index);
    if (file !== null) await this.snapshotFolder?.removeOlderThan(file);
    this.log.info(
      { event: 'raft.snapshot_taken', index, bytes: file?.size ?? data.length },
      'snapshot taken, log compacted',
    );
  }

  private onTick(): void {
    this.core.tick();
    this.ticks++;
    if (this.role === 'leader' && this.ticks % 4 === 0 && this.confState.learners.length > 0) {
      this.maybePromoteLearners();
    }
  }

  /** Learners become voters once they are close enough that promoting them cannot stall commits. */
  private maybePromoteLearners(): void {
    const s = this.core.status();
    if (!s.progress) return;
    const now = this.clock.now();
    for (const learner of this.confState.learners) {
      const p = s.progress[learner];
      // Caught up means: acknowledged in replicate state (it holds the snapshot or the log up to
      // `match`), and close to the end, so that counting it cannot stall commits.
      if (p?.state !== 'replicate' || p.match === 0 || p.match + this.opts.promoteGap < s.lastIndex) continue;
      const last = this.promotionProposedAt.get(learner);
      if (last !== undefined && now - last < 2_000) continue;
      this.promotionProposedAt.set(learner, now);
      const err = this.core.proposeConfChange({ type: 'promote', nodeId: learner });
      this.log.info(
        { event: 'raft.promote_proposed', member: learner, match: p.match, lastIndex: s.lastIndex, err },
        `proposing promotion of learner ${learner}`,
      );
    }
  }

  // ---- helpers --------------------------------------------------------------------------------

  /** Proposes a membership change; a refusal by the core goes to `onError`. */
  private proposeConfChange(cc: ConfChange, onError: (err: RaftError) => void): void {
    this.input(() => {
      const err = this.core.proposeConfChange(cc);
      if (err !== null) onError(this.proposeError(err));
    });
  }

  /** A condition to wait for, checked after every role change, conf change and snapshot. */
  private waitFor(
    check: () => boolean,
    what: string,
  ): { done: Promise<void>; cancel: (err: RaftError) => void } {
    if (check()) return { done: Promise.resolve(), cancel: () => {} };
    let waiter!: ConditionWaiter;
    const done = new Promise<void>((resolve, reject) => {
      waiter = {
        check,
        resolve,
        reject,
        timer: this.clock.setTimeout(() => {
          this.waiters.delete(waiter);
          reject(
            new RaftError('Timeout', `${what} did not happen within ${this.opts.membershipTimeoutMs} ms`),
          );
        }, this.opts.membershipTimeoutMs),
      };
      this.waiters.add(waiter);
    });
    const cancel = (err: RaftError) => {
      if (!this.waiters.delete(waiter)) return;
      this.clock.clearTimeout(waiter.timer);
      waiter.reject(err);
    };
    return { done, cancel };
  }

  private checkWaiters(): void {
    for (const w of this.waiters) {
      if (!w.check()) continue;
      this.waiters.delete(w);
      this.clock.clearTimeout(w.timer);
      w.resolve();
    }
  }

  private failProposal(requestId: string, err: RaftError): void {
    const p = this.proposals.get(requestId);
    if (p === undefined) return;
    this.proposals.delete(requestId);
    this.clock.clearTimeout(p.timer);
    p.reject(err);
  }

  private proposeError(err: ProposeError): RaftError {
    if (err === 'NotLeader') return this.notLeader();
    return new RaftError(err, PROPOSE_ERROR_MESSAGES[err]);
  }

  private notLeader(): RaftError {
    const leader = this.leaderInfo();
    return new RaftError(
      'NotLeader',
      leader ? `not the leader; the leader is ${leader.id}` : 'not the leader, and no leader is known',
      leader,
    );
  }

  private failEverything(err: RaftError): void {
    for (const p of this.proposals.values()) {
      this.clock.clearTimeout(p.timer);
      p.reject(err);
    }
    this.proposals.clear();
    const batches = [...this.reads.values(), ...(this.unsubmittedRead ? [this.unsubmittedRead] : [])];
    for (const b of batches) {
      this.clock.clearTimeout(b.timer);
      for (const w of b.waiters) w.reject(err);
    }
    this.reads.clear();
    this.unsubmittedRead = null;
    for (const w of this.waiters) {
      this.clock.clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiters.clear();
  }

  private fatal(err: unknown): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) this.clock.clearInterval(this.ticker);
    this.failEverything(new RaftError('Stopped', `raft node stopped: ${String(err)}`));
    this.onFatal(err);
  }

  private registerMetrics(registry: Registry) {
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers: [registry],
        collect() {
          this.set(read());
        },
      });
    gauge('imgvault_raft_term', 'Current Raft term', () => this.term);
    gauge(
      'imgvault_raft_commit_index',
      'Highest log index known committed',
      () => (this.unsavedHardState ?? this.durableHardState).commit,
    );
    gauge('imgvault_raft_applied_index', 'Highest log index applied to the state machine', () =>
      this.sm.appliedIndex(),
    );
    gauge('imgvault_raft_last_index', 'Last index in the durable log', () => this.storage.lastIndex());
    gauge('imgvault_raft_snapshot_index', 'Index of the latest snapshot', () => this.snapshotIndex);
    gauge('imgvault_raft_is_leader', '1 when this node is the leader', () =>
      this.role === 'leader' ? 1 : 0,
    );
    gauge('imgvault_raft_proposals_pending', 'Proposals waiting to be applied', () => this.proposals.size);
    return {
      messagesRefused: new Counter({
        name: 'imgvault_raft_messages_refused_total',
        help: 'Peer messages dropped before the Raft core, by reason (see messageFilter)',
        labelNames: ['reason'] as const,
        registers: [registry],
      }),
      leaderChanges: new Counter({
        name: 'imgvault_raft_leader_changes_total',
        help: 'Times this node saw the leader change',
        registers: [registry],
      }),
      saveSeconds: new Histogram({
        name: 'imgvault_raft_save_seconds',
        help: 'Latency of one synced Ready write (entries + hard state)',
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
        registers: [registry],
      }),
      readySeconds: new Histogram({
        name: 'imgvault_raft_ready_seconds',
        help: 'Duration of one whole Ready cycle (persist, send, apply)',
        buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5],
        registers: [registry],
      }),
      entriesApplied: new Counter({
        name: 'imgvault_raft_entries_applied_total',
        help: 'Entries applied to the state machine',
        registers: [registry],
      }),
      proposalsDropped: new Counter({
        name: 'imgvault_raft_proposals_dropped_total',
        help: 'Proposals answered with an error, by reason: queue_full, refused (by the core), timeout (may still commit)',
        labelNames: ['reason'] as const,
        registers: [registry],
      }),
    };
  }
}
