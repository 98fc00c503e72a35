// The Raft node driver: the only code that touches the deterministic core, and the one that gives it
// time (a tick timer), a network (the transport) and a disk (the log store). It owns a single
// serialized Ready loop. Anything that reaches the core while a Ready is being handled (a message,
// a tick, a proposal) waits in an inbox and is fed in after advance(), so no await ever interleaves
// two Ready cycles and no input lands between ready() and advance() (hashicorp/raft #695).
//
// The driver composes one module per concern (node/): pending proposals, ReadIndex batching,
// membership, condition waiters, metrics and status. What stays here is the loop, the snapshots,
// and the public API, which checks a call against the node's state and hands it to those modules.

import { randomInt } from 'node:crypto';
import type { Registry } from 'prom-client';
import { createLogger, type Logger } from '../logging.ts';
import type { ProposeError, RaftConfig, RaftLogStore } from './api.ts';
import { bootstrapSnapshot, entriesSize, MemoryStorage, RaftCore } from './core/index.ts';
import { type RaftClock, systemClock, type TimerHandle } from './node/clock.ts';
import { CommitNotices } from './node/commitNotices.ts';
import { ConditionWaiters } from './node/conditionWaiters.ts';
import { leaderQuietMs } from './node/leaderQuiet.ts';
import { Membership } from './node/membership.ts';
import { type NodeMetrics, registerNodeMetrics } from './node/nodeMetrics.ts';
import { nodeStatus, PeerContacts, type RaftNodeStatus } from './node/nodeStatus.ts';
import { PendingProposals } from './node/pendingProposals.ts';
import { notLeaderError, proposeRefusal, RaftError, stoppedError } from './node/raftError.ts';
import { ReadIndexBatcher } from './node/readIndexBatcher.ts';
import { RefusalLog } from './node/refusalLog.ts';
import { type SnapshotFileRef, type SnapshotFolder, snapshotFileName } from './snapshotFiles.ts';
import {
  captureSnapshot,
  describeTablesSnapshot,
  isTablesSnapshot,
  missingSnapshotFile,
  restoreSnapshot,
  snapshotFileOf,
  unwrapSnapshot,
  wrapSnapshot,
} from './snapshots.ts';
import type { AppliedResult, StateMachine } from './stateMachine.ts';
import { StoreBackedStorage, type SyncLogReader } from './storeBackedStorage.ts';
import { refusal } from './transport/messageFilter.ts';
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  Index,
  Message,
  NodeId,
  RandomInt,
  Ready,
  Role,
  Snapshot,
} from './types.ts';

export { type RaftClock, systemClock, type TimerHandle } from './node/clock.ts';
export type { RaftNodeStatus } from './node/nodeStatus.ts';
export { RaftError, type RaftErrorCode } from './node/raftError.ts';

/** The first wait after a failed build of a snapshot file a follower wants, and the longest. */
const FILE_RETRY_MIN_MS = 1_000;
const FILE_RETRY_MAX_MS = 60_000;
/**
 * The log kept in memory behind a file built on demand (heldFileIndex) may hold this many log
 * budgets, when the store cannot be read synchronously; else it is kept on disk only, up to
 * snapshotHoldBytes (storeBackedStorage.ts), by default one budget less, as a leader restarted
 * during the hold loads all of it next to its log in memory.
 */
const FILE_HOLD_BUDGETS = 4;
const DEFAULT_LOG_BUDGET_BYTES = 64 * 1024 * 1024;

/** What the driver needs from a transport; `HttpTransport` provides it. */
export interface RaftTransport {
  /** Queue messages for delivery; never blocks, never throws on an unreachable peer. */
  send(messages: Message[]): void;
  setPeer(id: NodeId, url: string): void;
  removePeer(id: NodeId): void;
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
  /**
   * Compact the log every this many applied entries. With a state machine that keeps its state
   * durably (StateMachine.syncApplied) and a snapshot folder, compacting writes no file (a file is
   * built only when a follower needs one: maybeSnapshot); else each compaction takes a snapshot.
   */
  snapshotThreshold?: number;
  /**
   * Compact also once the applied entries in the log hold this many bytes of data (default
   * 64 MiB), so the log's memory stays bounded whatever the entries' size. Only when compacting
   * writes no file.
   */
  logBudgetBytes?: number;
  /**
   * Bytes of entry data the store may keep behind the log in memory for a member catching up from
   * a snapshot file built for it (default three log budgets, 192 MiB): past it the member needs
   * another file. Disk, not memory, unless the leader restarts meanwhile: its log is then loaded
   * whole, which the default keeps within FILE_HOLD_BUDGETS log budgets with the log in memory.
   */
  snapshotHoldBytes?: number;
  /**
   * Entries kept behind a compaction that writes no file, so a follower a little behind catches up
   * from the log rather than a snapshot (etcd's SnapshotCatchUpEntries): at most this many
   * (default 5,000) and this many bytes of data (default 16 MiB).
   */
  snapshotCatchUpEntries?: number;
  snapshotCatchUpBytes?: number;
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
  /**
   * How long a leader holds a commit notice (an append without entries) for the next append to
   * carry instead (node/commitNotices.ts); 0 sends each at once. Default half the heartbeat
   * interval (tickMs x heartbeatTick / 2: 25 ms): a heartbeat carries the commit index too.
   */
  commitNoticeHoldMs?: number;
  random?: RandomInt;
  /** Timers and time; the process clock unless a simulator injects its own. */
  clock?: RaftClock;
  logger?: Logger;
  metrics?: Registry;
  /** Called when the Ready loop fails (e.g. the disk refuses a write): the node is stopped. */
  onFatal?: (err: unknown) => void;
}

/** String.prototype.isWellFormed (Node 20; ES2024, past the lib this project compiles against). */
type WellFormedCheck = { isWellFormed(): boolean };

/** Times a leadership transfer is asked again, an election timeout apart (transferLeadership). */
const TRANSFER_RETRIES = 3;

export class RaftNode {
  readonly id: NodeId;
  private readonly core: RaftCore;
  private readonly storage: MemoryStorage;
  /** What the core reads: `storage`, and the store's log behind it (fileHold) once compacted past. */
  private readonly coreStorage: StoreBackedStorage;
  /** Bytes of entry data the store keeps behind the log in memory for a file's member (fileHold). */
  private storeOnlyBytes = 0;
  private readonly store: RaftLogStore;
  protected readonly sm: StateMachine;
  protected readonly transport: RaftTransport;
  private readonly log: Logger;
  private readonly opts: Required<
    Pick<
      RaftNodeOptions,
      | 'tickMs'
      | 'snapshotThreshold'
      | 'logBudgetBytes'
      | 'snapshotHoldBytes'
      | 'snapshotCatchUpEntries'
      | 'snapshotCatchUpBytes'
      | 'proposalTimeoutMs'
      | 'readTimeoutMs'
      | 'membershipTimeoutMs'
      | 'promoteGap'
      | 'maxPendingProposals'
    >
  >;
  private readonly onFatal: (err: unknown) => void;
  /** An election timeout: how long the core keeps a leadership transfer before abandoning it. */
  private readonly transferRetryMs: number;
  /**
   * Silence after which this node's leader no longer counts as alive (leaderQuiet.ts): reads here
   * are refused past it, and the manager's requests wait for a live leader by the same measure.
   */
  readonly leaderQuietMs: number;
  private readonly clock: RaftClock;
  private readonly random: RandomInt;

  private readonly membership: Membership;
  private snapshotIndex: Index;
  private readonly snapshotFolder: SnapshotFolder | null;
  /** A snapshot being built off the Ready loop (see maybeSnapshot), or null. */
  private snapshotTask: Promise<void> | null = null;
  /**
   * The leader's snapshots being installed off the Ready loop, in order (startInstall), or null.
   * Until one ends the core hands out no committed entry after it (RaftCore.snapshotApplied).
   */
  private installing: Promise<void> | null = null;
  /** The Ready being handled started an install: advance() must not count its snapshot applied. */
  private installStarted = false;
  /**
   * The index of the last file built on demand, kept in the log while a member the leader sent it
   * to has not reached it (heldFileIndex), so that member goes on from the log once the file is
   * installed instead of needing another file; 0 when none.
   */
  private fileHold: Index = 0;
  /**
   * The indexes of the conf changes in the log in memory, ascending (noteConfChanges): the
   * compaction checks for one between two points at every Ready, and scanning the log kept behind
   * a file built on demand (hundreds of thousands of entries) each time was quadratic.
   */
  private confChangeIndexes: Index[] = [];
  /** The applied index the last snapshot was started at, taken or not: a failed one waits as long. */
  private snapshotStartedAt: Index = 0;
  /** The recorded snapshot's file is missing (see start): take one at the next applied entry. */
  private snapshotDue = false;
  /** Compacting writes no file (see start and maybeSnapshot). */
  private compactsWithoutFile = false;
  /** A follower needs a snapshot and the recorded one names no file: build one (maybeSnapshot). */
  private fileWanted = false;
  /** The snapshot being built (snapshotTask) is a file a follower wanted: it will be sent. */
  private buildingWantedFile = false;
  /**
   * After a failed build of a wanted file, none is tried before this time (clock ms): the core
   * probes the follower about every heartbeat, and each probe would start another build.
   */
  private fileRetryAt = 0;
  /** The wait after the next failed build: doubles from FILE_RETRY_MIN_MS to FILE_RETRY_MAX_MS. */
  private fileRetryMs = FILE_RETRY_MIN_MS;
  /** Bytes of entry data in the log after the snapshot, counted up to `countedTo` (countLog). */
  private logBytes = 0;
  private countedTo: Index = 0;
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
  private ticker: TimerHandle | null = null;
  private ticks = 0;
  /** Heartbeats stepped ahead of the inbox (onTickTimer). */
  private beatsStepped = 0;

  private readonly proposals: PendingProposals;
  private readonly reads: ReadIndexBatcher;
  private readonly conditions: ConditionWaiters;
  private readonly contacts = new PeerContacts();
  private readonly refusals: RefusalLog;
  private readonly notices: CommitNotices;
  private readonly metrics: NodeMetrics | null;

  /** Protected so a simulator can plant a broken driver (a subclass) and prove its checks catch it. */
  protected constructor(
    opts: RaftNodeOptions,
    core: RaftCore,
    storage: MemoryStorage,
    members: Map<NodeId, string>,
    snapshot: Snapshot,
    hardState: HardState,
    coreStorage = new StoreBackedStorage(storage, null),
  ) {
    this.id = opts.id;
    this.core = core;
    this.storage = storage;
    this.coreStorage = coreStorage;
    this.noteConfChanges(
      storage.entries(storage.firstIndex(), storage.lastIndex() + 1, Number.MAX_SAFE_INTEGER),
    );
    this.store = opts.store;
    this.sm = opts.stateMachine;
    this.transport = this.holdingTablesSnapshots(opts.transport);
    this.log = opts.logger ?? createLogger('raft', { nodeId: opts.id });
    this.opts = {
      tickMs: opts.tickMs ?? 50,
      snapshotThreshold: opts.snapshotThreshold ?? 10_000,
      logBudgetBytes: opts.logBudgetBytes ?? DEFAULT_LOG_BUDGET_BYTES,
      snapshotHoldBytes:
        opts.snapshotHoldBytes ?? (FILE_HOLD_BUDGETS - 1) * (opts.logBudgetBytes ?? DEFAULT_LOG_BUDGET_BYTES),
      snapshotCatchUpEntries: opts.snapshotCatchUpEntries ?? 5_000,
      snapshotCatchUpBytes: opts.snapshotCatchUpBytes ?? 16 * 1024 * 1024,
      proposalTimeoutMs: opts.proposalTimeoutMs ?? 5_000,
      readTimeoutMs: opts.readTimeoutMs ?? 5_000,
      membershipTimeoutMs: opts.membershipTimeoutMs ?? 30_000,
      promoteGap: opts.promoteGap ?? 100,
      maxPendingProposals: opts.maxPendingProposals ?? 10_000,
    };
    this.clock = opts.clock ?? systemClock;
    this.transferRetryMs = this.opts.tickMs * (opts.electionTick ?? 10);
    this.leaderQuietMs = leaderQuietMs({
      tickMs: this.opts.tickMs,
      heartbeatTick: opts.heartbeatTick ?? 1,
      electionTick: opts.electionTick ?? 10,
    });
    this.random = opts.random ?? ((n: number) => randomInt(n));
    this.onFatal =
      opts.onFatal ??
      ((err) => {
        this.log.fatal({ event: 'raft.fatal', err }, 'raft node stopped after a fatal error');
      });
    this.membership = new Membership(
      this.id,
      members,
      snapshot.metadata.confState,
      this.transport,
      this.log,
      this.opts.promoteGap,
    );
    this.snapshotIndex = snapshot.metadata.index;
    this.countedTo = snapshot.metadata.index;
    this.snapshotFolder = opts.snapshotFolder ?? null;
    this.durableHardState = hardState;
    this.metrics = opts.metrics ? this.registerMetrics(opts.metrics) : null;
    this.proposals = new PendingProposals({
      clock: this.clock,
      timeoutMs: this.opts.proposalTimeoutMs,
      max: this.opts.maxPendingProposals,
      onDropped: (reason) => this.metrics?.proposalsDropped.inc({ reason }),
    });
    this.reads = new ReadIndexBatcher({
      clock: this.clock,
      random: this.random,
      timeoutMs: this.opts.readTimeoutMs,
      input: (fn) => this.input(fn),
      requestReadIndex: (ctx) => this.core.readIndex(ctx),
    });
    this.conditions = new ConditionWaiters(this.clock, this.opts.membershipTimeoutMs);
    this.refusals = new RefusalLog(this.clock, this.log, (why) =>
      this.metrics?.messagesRefused.inc({ reason: why }),
    );
    // Under uploads at concurrency 8 the next append comes 10-15 ms after a commit: held 2 ms, every
    // notice went out alone, and woke both followers once more per entry (docs/measurements.md,
    // "What the record costs at 1 MiB and concurrency 8").
    const noticeHoldMs = opts.commitNoticeHoldMs ?? (this.opts.tickMs * (opts.heartbeatTick ?? 1)) / 2;
    this.notices = new CommitNotices(this.clock, noticeHoldMs, (messages) => {
      if (!this.stopped) this.transport.send(messages);
    });
  }

  // The snapshot code (start, installSnapshot, maybeSnapshot) reads and replaces the membership it
  // carries under these two names.
  private get members(): Map<NodeId, string> {
    return this.membership.urls;
  }

  private set members(urls: Map<NodeId, string>) {
    this.membership.urls = urls;
  }

  private get confState(): ConfState {
    return this.membership.confState;
  }

  private set confState(cs: ConfState) {
    this.membership.confState = cs;
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
    // The state machine applies only entries this log made durable first, so one that applied past
    // the log's end means the log lost entries it held (LevelDB drops a corrupt tail when it opens;
    // the commit index, synced lazily, need not show it). Going on, this node would acknowledge
    // entries anew and count toward commits it no longer holds.
    const applied = opts.stateMachine.appliedIndex();
    if (applied > storage.lastIndex()) {
      throw new Error(
        `the Raft log ends at index ${storage.lastIndex()}, but the state machine applied up to ${applied}: ` +
          'the log lost entries it held (a damaged store). Remove this member, then add it again with an empty ' +
          'data folder and --join (docs/operations.md, Membership)',
      );
    }
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
    const coreStorage = new StoreBackedStorage(storage, syncReader(opts.store));
    // biome-ignore lint/complexity/noThisInStatic: `this` is the subclass start() was called on
    const core = this.createCore({
      id: opts.id,
      storage: coreStorage,
      electionTick: opts.electionTick ?? 10,
      heartbeatTick: opts.heartbeatTick ?? 1,
      random: opts.random ?? ((n: number) => randomInt(n)),
      preVote: true,
      checkQuorum: true,
      maxUncommittedEntriesSize: opts.maxUncommittedBytes ?? 64 * 1024 * 1024,
    });
    const node = new this(opts, core, storage, members, effectiveSnapshot, hardState, coreStorage);
    node.term = hardState.term;
    // A state machine that answers syncApplied keeps its state durably: the log is compacted
    // without a file, and a file is built only for a follower that needs one.
    node.compactsWithoutFile =
      node.snapshotFolder !== null && ((await opts.stateMachine.syncApplied?.()) ?? null) !== null;
    const recordedFile = snapshotFileOf(effectiveSnapshot.data);
    if (recordedFile !== null && !node.snapshotFolder?.holds(recordedFile)) {
      // As leader this node could send no follower a snapshot until the next one is taken.
      log.error(
        { event: 'raft.snapshot_file_missing', index: recordedFile.index, sha256: recordedFile.sha256 },
        'the recorded snapshot file is not in the snapshot folder; taking a new snapshot now',
      );
      node.snapshotDue = true;
    }
    node.ticker = node.clock.setInterval(() => node.onTickTimer(), node.opts.tickMs);
    // A write the state machine finished behind its answers failed: stop as an apply that threw does.
    opts.stateMachine.onWriteFailure?.((err) => node.fatal(err));
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
    // Dropped like any input once stopped (input() takes none), the heartbeat shortcut included.
    if (this.stopped) return true;
    const why = refusal(msg, { id: this.id, term: this.term, leader: this.leader, members: this.members });
    if (why !== null) {
      this.refusals.note(msg, why, this.term);
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
    this.contacts.heard(msg.from, this.clock.now());
    if (this.inCycle && this.isHeartbeatNow(msg)) {
      if (msg.type === 'MsgHeartbeat') this.beatsStepped++;
      this.stepDuringCycle(() => this.core.step(msg));
      return true;
    }
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
    if (this.stopped) return Promise.reject(stoppedError());
    if (this.role !== 'leader') return Promise.reject(this.notLeader());
    // The wire carries entries as UTF-8, which turns a lone surrogate into U+FFFD: the followers
    // would store other bytes than the leader.
    if (!(data as unknown as WellFormedCheck).isWellFormed()) {
      return Promise.reject(
        new RaftError('InvalidProposal', 'the proposal is not well-formed UTF-16 (a lone surrogate)'),
      );
    }
    const refused = this.proposals.admit(requestId);
    if (refused !== null) return Promise.reject(refused);
    const result = this.proposals.track(requestId);
    this.input(() => {
      // The core may have stepped down since the check above (a newer term arrived, and the next
      // Ready tells the driver): it would forward the proposal as a MsgProp, which a network that
      // delivers a message twice appends twice (host simulation seed 150). Refused, as on a follower.
      if (this.core.raft.role !== 'leader') {
        const lead = this.core.raft.lead;
        const known =
          lead === null || lead === this.id ? null : { id: lead, url: this.membership.urlOf(lead) };
        this.proposals.refused(requestId, notLeaderError(known));
        return;
      }
      const err = this.core.propose(data);
      if (err !== null) this.proposals.refused(requestId, this.proposeError(err));
    });
    return result;
  }

  /**
   * Resolves once a linearizable read may be served from the local state machine: the leader has
   * confirmed its leadership at some commit index (ReadIndex, Raft thesis 6.4) and this node has
   * applied up to it. Works on followers too (the core forwards the request to the leader).
   * Refused at once (NotLeader, no leader) while the leader is not known to be alive: right after
   * it dies the follower still names it until its election timeout, and a read sent to it would
   * wait out readTimeoutMs for an answer that never comes. The caller retries once a leader lives.
   */
  readIndex(): Promise<void> {
    if (this.stopped) return Promise.reject(stoppedError());
    const silence = this.leaderSilenceMs();
    if (silence === null || silence > this.leaderQuietMs) return Promise.reject(notLeaderError(null));
    return this.reads.wait();
  }

  /** Asks the leader to hand over to `to`; resolves when this node sees `to` as leader. */
  transferLeadership(to: NodeId): Promise<void> {
    if (this.stopped) return Promise.reject(stoppedError());
    if (!this.membership.isVoter(to)) {
      return Promise.reject(new RaftError('InvalidMember', `${to} is not a voting member`));
    }
    if (this.leader === to) return Promise.resolve();
    if (this.role !== 'leader') return Promise.reject(this.notLeader());
    const wait = this.conditions.waitFor(() => this.leader === to, `leadership transfer to ${to}`);
    this.input(() => this.core.transferLeadership(to));
    // The transferee ignores MsgTimeoutNow while a committed conf change is unapplied there (as
    // etcd's hup), e.g. just after its own promotion, and the leader abandons a transfer after an
    // election timeout: ask again each election timeout while this node leads, a few times only,
    // since the leader refuses proposals while it transfers and a transferee that is down would
    // otherwise keep writes refused for the whole wait.
    let retries = TRANSFER_RETRIES;
    const retry = this.clock.setInterval(() => {
      if (retries <= 0 || this.role !== 'leader' || this.leader === to) return;
      retries -= 1;
      this.input(() => this.core.transferLeadership(to));
    }, this.transferRetryMs);
    return wait.done.finally(() => this.clock.clearInterval(retry));
  }

  /**
   * Adds a member: first as a learner that receives the log without voting, then, once it has
   * caught up (see Membership.promoteCaughtUp), as a voter. Resolves when it is a voter.
   */
  async addMember(id: NodeId, url: string): Promise<void> {
    if (this.stopped) throw stoppedError();
    if (this.membership.alreadyVoter(id, url)) return;
    if (this.role !== 'leader') throw this.notLeader();
    const wait = this.conditions.waitFor(() => this.membership.isVoter(id), `promotion of ${id}`);
    if (!this.membership.isLearner(id)) {
      this.proposeConfChange({ type: 'addLearner', nodeId: id, context: url }, wait.cancel);
    }
    return wait.done;
  }

  /** Removes a member (voter or learner); resolves once the removal is applied here. */
  async removeMember(id: NodeId): Promise<void> {
    if (this.stopped) throw stoppedError();
    if (!this.membership.isMember(id)) return;
    if (this.role !== 'leader') throw this.notLeader();
    const wait = this.conditions.waitFor(() => !this.membership.isMember(id), `removal of ${id}`);
    this.proposeConfChange({ type: 'remove', nodeId: id }, wait.cancel);
    return wait.done;
  }

  status(): RaftNodeStatus {
    return nodeStatus(this.core.status(), {
      self: this.id,
      now: this.clock.now(),
      applied: this.sm.appliedIndex(),
      snapshotIndex: this.snapshotIndex,
      members: this.members,
      contacts: this.contacts,
    });
  }

  /** Every member's URL, as applied (the leader's and the learners' included). */
  memberUrls(): string[] {
    return [...this.membership.urls.values()];
  }

  /** The leader as last seen in a Ready (cheap; no status() walk). */
  leaderInfo(): { id: NodeId; url: string | null } | null {
    return this.leader === null ? null : { id: this.leader, url: this.membership.urlOf(this.leader) };
  }

  /** Whether this node is in the configuration (a voter or a learner); false once removed. */
  isMember(): boolean {
    return this.membership.isMember(this.id);
  }

  isLeader(): boolean {
    return this.role === 'leader';
  }

  /**
   * Milliseconds since a message from the leader this node knows passed receive()'s checks: 0 on
   * the leader itself, null with no leader known, none heard from it, or none since a path to it
   * closed (notePeerLost). A leader heard from within a few heartbeats is alive; one silent for
   * longer may be dead while no election has started yet, and a follower should not send clients
   * to it (src/manager/leaderWait.ts).
   */
  leaderSilenceMs(): number | null {
    if (this.leader === null) return null;
    if (this.leader === this.id) return 0;
    return this.contacts.silenceMs(this.leader, this.clock.now());
  }

  /**
   * The transport saw a connection to `peer` end or fail (a process killed outright closes its
   * sockets at once): until heard from again it counts as silent. Raft itself ignores this.
   */
  notePeerLost(peer: NodeId): void {
    this.contacts.lost(peer, this.clock.now());
    // Reads forwarded to a leader that is gone get no answer: fail them now, not at their timeout.
    if (peer === this.leader && this.role !== 'leader') this.failReads();
  }

  private failReads(): void {
    if (this.reads.pending()) this.reads.failAll(notLeaderError(null));
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
    // After the cycle: it may still have held a notice, and armed its timer.
    this.notices.clear();
    // The owner closes the store and the state machine next: a snapshot still reading them ends first.
    await this.snapshotTask;
    await this.installing?.catch(() => {});
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
        const t0 = performance.now();
        this.installStarted = false;
        await this.handleReady(rd);
        this.core.advance({ snapshotApplied: !this.installStarted });
        this.metrics?.readySeconds.observe((performance.now() - t0) / 1000);
        if (rd.entries.length > 0) this.metrics?.readyEntries.observe(rd.entries.length);
      }
    } catch (err) {
      this.fatal(err);
    } finally {
      this.inCycle = false;
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
    // The core reads no more of the store's log this snapshot replaces (storeBackedStorage.ts).
    if (rd.snapshot) this.dropStoreLog(rd.snapshot);
    // A leader's appends go out first, then its synced write starts and runs beside the followers'
    // (see Ready): a follower's answer, not the leader's write, is what a commit waits for, and the
    // write's call (LevelDB's batch, on this thread) held the appends back by that much
    // (docs/measurements.md, "Appends sent before the leader's write").
    const mayHold = this.noticeHold(rd);
    if (rd.messagesBeforePersist.length > 0) this.notices.sendOrHold(rd.messagesBeforePersist, mayHold);
    const written = this.startPersist(rd);
    const messages = rd.messages;
    if (written !== null) {
      await written;
      if (rd.snapshot) this.storage.applySnapshot(rd.snapshot);
      if (rd.entries.length > 0) {
        this.storage.append(rd.entries);
        this.noteConfChanges(rd.entries);
      }
      this.storage.setHardState(this.durableHardState);
    }

    if (messages.length > 0) this.notices.sendOrHold(messages, mayHold);

    if (rd.snapshot) this.startInstall(rd.snapshot);
    if (rd.committedEntries.length > 0) await this.applyEntries(rd.committedEntries);

    this.reads.confirmed(rd.readStates);
    this.resolveReads();
    // The state machine is behind the log until the install ends: nothing to compact or build.
    if (this.installing === null) await this.maybeSnapshot();
  }

  /**
   * Which of a Ready's commit notices may wait for the next append (node/commitNotices.ts): a
   * leader's, to a follower it replicates to, outside a leadership transfer, and none once a conf
   * change commits (the transferee of a later transfer must have applied it) or a follower's read
   * index is answered (that follower applies up to it before it reads, and the heartbeats of the
   * round carried it only min(its match, commit)). Anything held is sent at once when none may be.
   */
  private noticeHold(rd: Ready): (msg: Message) => boolean {
    const r = this.core.raft;
    const calm =
      r.role === 'leader' &&
      r.leadTransferee === null &&
      !rd.committedEntries.some((e) => e.type === 'confChange') &&
      !rd.messages.some(answersReadIndex) &&
      !rd.messagesBeforePersist.some(answersReadIndex);
    if (!calm) {
      this.notices.flush();
      return () => false;
    }
    return (msg) => r.prs.get(msg.to)?.state === 'replicate';
  }

  /**
   * Starts the Ready's synced write, if it needs one (null if not). Nothing of the Ready counts as
   * durable before the promise resolves: the caller mirrors it into the core's storage and sends
   * `rd.messages` only then, and advance() (which moves the leader's own match) comes after.
   */
  private startPersist(rd: Ready): Promise<void> | null {
    if (rd.snapshot === undefined && rd.entries.length === 0 && !this.mustSaveHardState()) return null;
    return this.persist(rd.entries, rd.snapshot);
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
    // The core drops the read requests it forwarded to, or held as, the old leader: no answer comes.
    const lostReads = this.leader !== null && leader !== this.leader;
    if (role !== 'leader') this.notices.clear();
    this.role = role;
    this.leader = leader;
    if (lostReads) this.failReads();
    this.checkWaiters();
  }

  /**
   * Installs a snapshot from the leader, already persisted, off the Ready loop: restoring millions
   * of rows takes minutes, and a loop held that long answered no vote and ticked no timer. The
   * membership it carries is taken at once (the core already holds it); the state machine's state
   * when the install ends, and only then does the core hand out the entries after it. Installs
   * run one after another, in the order the snapshots came.
   */
  private startInstall(snap: Snapshot): void {
    this.installStarted = true;
    const { members } = unwrapSnapshot(snap.data);
    this.snapshotIndex = snap.metadata.index;
    this.confState = snap.metadata.confState;
    for (const id of this.members.keys())
      if (!(id in members) && id !== this.id) this.transport.removePeer(id);
    this.members = new Map(Object.entries(members));
    for (const [id, url] of this.members) if (id !== this.id) this.transport.setPeer(id, url);
    this.checkWaiters();
    const run = (this.installing ?? Promise.resolve()).then(() => this.installSnapshot(snap));
    this.installing = run;
    run.then(
      () =>
        this.input(() => {
          if (this.installing === run) this.installing = null;
          this.core.snapshotApplied(snap.metadata.index);
          this.logCompacted();
          this.checkWaiters();
        }),
      (err: unknown) => this.fatal(err),
    );
  }

  private async installSnapshot(snap: Snapshot): Promise<void> {
    if (this.stopped) return;
    const folder = this.snapshotFolder;
    const { index, term } = snap.metadata;
    const file = snapshotFileOf(snap.data);
    const t0 = this.clock.now();
    this.log.info(
      { event: 'raft.snapshot_install_started', index, term, bytes: file?.size },
      'installing a snapshot from the leader',
    );
    await restoreSnapshot(this.sm, folder, snap.data, index);
    // persist() recorded this snapshot before it was installed: older files are no longer needed.
    if (file !== null) await folder?.removeOlderThan(file);
    this.log.info(
      {
        event: 'raft.snapshot_installed',
        index,
        term,
        bytes: file?.size,
        ms: this.clock.now() - t0,
        applied: this.sm.appliedIndex(),
        lastIndex: this.storage.lastIndex(),
      },
      'installed a snapshot from the leader',
    );
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
      if (e.type !== 'confChange') continue;
      const cc = JSON.parse(e.data) as ConfChange;
      this.membership.applied(cc, e.index, this.core.applyConfChange(cc));
      confChanged = true;
    }
    this.proposals.applied(results);
    if (confChanged) this.checkWaiters();
  }

  private resolveReads(): void {
    this.reads.release(this.sm.appliedIndex());
  }

  /**
   * Compacts the log when it is due (every snapshotThreshold applied entries, or past the byte
   * budget when compacting writes no file), and builds a snapshot file when one is missing or a
   * follower needs one (etcd v3: the state is the backend, a file is made only to send it).
   */
  private async maybeSnapshot(): Promise<void> {
    if (this.snapshotTask !== null) return;
    const applied = this.sm.appliedIndex();
    if (this.compactsWithoutFile) this.countLog(applied);
    const onDemand = this.fileWanted && this.clock.now() >= this.fileRetryAt;
    const wantsFile = this.snapshotDue || onDemand;
    const since = applied - Math.max(this.snapshotIndex, this.snapshotStartedAt);
    const due = wantsFile
      ? applied > this.snapshotIndex
      : since >= this.opts.snapshotThreshold ||
        (this.compactsWithoutFile && since > 0 && this.logBytes >= this.opts.logBudgetBytes);
    if (!due) return;
    if (applied > this.storage.lastIndex()) return;
    // After a restart the state machine may be ahead of the commit index on disk (see persist);
    // a snapshot must not claim more than the core knows committed.
    if (applied > (this.unsavedHardState ?? this.durableHardState).commit) return;
    // The store refuses to compact past the commit index it holds: write the deferred one first.
    if (this.unsavedHardState !== null && this.durableHardState.commit < applied) await this.persist([]);
    if (this.compactsWithoutFile && !wantsFile) {
      this.compactWithoutFile(applied);
      return;
    }
    // The capture below must hold exactly `applied`: the last apply's write may still be running.
    await this.sm.flush?.();
    this.buildingWantedFile = this.fileWanted;
    this.fileWanted = false;
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
    const wanted = this.buildingWantedFile;
    if (wanted) {
      this.log.info(
        { event: 'raft.snapshot_file_build_started', index: applied },
        'building a snapshot file for a follower',
      );
    }
    this.snapshotTask = this.compactTo(
      applied,
      { voters: [...this.confState.voters], learners: [...this.confState.learners] },
      finish,
      wanted,
    )
      .then(() => {
        this.fileRetryMs = FILE_RETRY_MIN_MS;
      })
      .catch((err: unknown) => {
        if (onDemand) this.backOffFileBuild();
        this.metrics?.compactionFailures.inc({ kind: 'snapshot' });
        this.log.error(
          {
            event: 'raft.snapshot_failed',
            index: applied,
            err,
            retryMs: onDemand ? this.fileRetryMs : undefined,
          },
          'snapshot not taken; the next one is tried after more entries, or a wait if a follower wants it',
        );
      })
      .finally(() => {
        this.snapshotTask = null;
        this.buildingWantedFile = false;
      });
  }

  private backOffFileBuild(): void {
    this.fileRetryAt = this.clock.now() + this.fileRetryMs;
    this.fileRetryMs = Math.min(2 * this.fileRetryMs, FILE_RETRY_MAX_MS);
  }

  /** Finishes a snapshot `maybeSnapshot` captured at `index`, unless a newer one came meanwhile. */
  private async compactTo(
    index: Index,
    confState: ConfState,
    finish: () => Promise<{ data: string; file: SnapshotFileRef | null }>,
    wanted = false,
  ): Promise<void> {
    const t0 = this.clock.now();
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
    this.dropStoreLog(snap);
    this.coreStorage.keepSnapshot(wanted ? snap : null);
    // The store serialises this with the loop's writes, and refuses it if a newer snapshot landed.
    await this.store.compact(snap);
    // A file built on demand keeps the catch-up window in memory for followers a little behind.
    this.storage.compact(this.compactsWithoutFile ? this.compactionPoint(index) : index);
    this.snapshotIndex = Math.max(this.snapshotIndex, index);
    if (wanted) this.fileHold = index;
    this.logCompacted();
    if (file !== null) await this.snapshotFolder?.removeOlderThan(file);
    this.log.info(
      {
        event: 'raft.snapshot_taken',
        index,
        bytes: file?.size ?? data.length,
        ms: this.clock.now() - t0,
        onDemand: wanted,
      },
      'snapshot taken, log compacted',
    );
  }

  /**
   * Compacts the log some entries behind `applied` (compactionPoint) without writing the state
   * anywhere: once the state machine has made everything applied durable (syncApplied), the
   * snapshot's metadata (the tables form) and the truncation are one synced write of the store.
   * A crash before it leaves the whole log; after it, the tables hold the compacted entries.
   */
  private compactWithoutFile(applied: Index): void {
    const coreApplied = this.core.status().applied;
    let index = this.compactionPoint(applied);
    // The core hears of the entries just applied at advance(). A point past what it has seen (one
    // Ready larger than the catch-up window) moves back to it, unless a conf change lies between:
    // waiting for a Ready small enough could wait for good.
    if (index > coreApplied && !this.confChangeIn(coreApplied, index)) index = coreApplied;
    const held = this.heldFileIndex(index);
    // A file's member still needs the log after `held`: the store keeps it and the core reads it
    // there (storeBackedStorage.ts), so only the memory is compacted; without synchronous reads of
    // the store, both stop at `held`.
    const keepStore = index > held && this.coreStorage.readsStore;
    if (index > held && !keepStore) {
      // The membership recorded is the current one: it must be that of the point compacted at.
      if (this.confChangeIn(held, applied)) {
        this.snapshotStartedAt = applied;
        return;
      }
      index = held;
    }
    if (index <= this.snapshotIndex) {
      this.snapshotStartedAt = applied;
      return;
    }
    // A conf change the core has not applied yet: the next Ready compacts.
    if (index > coreApplied) return;
    this.snapshotStartedAt = applied;
    // Membership as of `applied`, which is that of `index`: no conf change lies between them.
    const confState = { voters: [...this.confState.voters], learners: [...this.confState.learners] };
    const data = describeTablesSnapshot(new Map(this.members));
    this.snapshotTask = this.truncateTo(index, confState, data, keepStore)
      .catch((err: unknown) => {
        this.metrics?.compactionFailures.inc({ kind: 'truncate' });
        this.log.error(
          { event: 'raft.compaction_failed', index, err },
          'log not compacted; the next compaction is tried after more entries',
        );
      })
      .finally(() => {
        this.snapshotTask = null;
      });
  }

  /** `keepStore`: only the memory is compacted, the store keeps its log for a file's member. */
  private async truncateTo(
    index: Index,
    confState: ConfState,
    data: string,
    keepStore: boolean,
  ): Promise<void> {
    const durable = await this.sm.syncApplied?.();
    if (durable === undefined || durable === null || durable < index) {
      throw new Error(`the state machine made only index ${durable} durable, not ${index}`);
    }
    if (this.stopped || index <= this.snapshotIndex) return;
    const snap = this.storage.createSnapshot(index, confState, data);
    if (keepStore) {
      this.storeOnlyBytes += this.bytesThrough(index);
    } else {
      this.dropStoreLog(snap);
      await this.store.compact(snap);
    }
    this.storage.compact(index);
    this.snapshotIndex = Math.max(this.snapshotIndex, index);
    this.logCompacted();
    // No file older than the compaction serves a follower: the entries after it are gone.
    if (!keepStore) await this.snapshotFolder?.removeBefore(index);
    this.log.info(
      { event: 'raft.log_compacted', index, logBytes: this.logBytes, storeOnlyBytes: this.storeOnlyBytes },
      'log compacted without a file',
    );
  }

  /** Bytes of entry data in the log in memory up to `index`. */
  private bytesThrough(index: Index): number {
    const first = this.storage.firstIndex();
    if (index < first) return 0;
    return entriesSize(this.storage.entries(first, index + 1, Number.MAX_SAFE_INTEGER));
  }

  /**
   * Before a write that drops the store's log through `snap` (a compaction, a snapshot received):
   * the core must not read there any more, and nothing is kept on disk only after it.
   */
  private dropStoreLog(snap: Snapshot): void {
    this.coreStorage.dropThrough(snap);
    if (snap.metadata.index >= this.storage.firstIndex() - 1) this.storeOnlyBytes = 0;
  }

  /**
   * The index to compact at: behind `applied` by at most snapshotCatchUpEntries entries and
   * snapshotCatchUpBytes bytes, and by one entry at least (a follower needing a file then finds
   * `applied` above the snapshot: see maybeSnapshot); with no conf change after it, so the current
   * membership is that of the compaction point (once the core has seen it applied: after a
   * restart the state machine is ahead of the conf changes replayed to the core, see start).
   * 0 when there is none.
   */
  private compactionPoint(applied: Index): Index {
    const keep = Math.max(1, this.opts.snapshotCatchUpEntries);
    const lo = Math.max(this.storage.firstIndex(), applied - keep + 1);
    if (lo > applied) return 0;
    const entries = this.storage.entries(lo, applied + 1, Number.MAX_SAFE_INTEGER);
    let bytes = 0;
    for (let i = entries.length - 1; i >= 0; i--) {
      const e = entries[i]!;
      if (e.type === 'confChange') return e.index < applied ? e.index : 0;
      bytes += e.data.length;
      if (bytes > this.opts.snapshotCatchUpBytes) return Math.min(e.index, applied - 1);
    }
    return lo - 1;
  }

  /**
   * The last index compaction may reach while a file built on demand is in use (fileHold): the
   * file's, or the least match of the members the leader tracks if that is further, until that
   * least match has passed `point`, where compaction would otherwise cut. A member that has just
   * acknowledged the file holds nothing after it yet; cutting at `point` then would send it
   * another file instead of the log (etcd keeps its catch-up entries behind the snapshot it sends
   * for the same reason). Given up past snapshotHoldBytes of entries the store keeps behind the
   * memory (FILE_HOLD_BUDGETS log budgets in memory, with a store that cannot be read
   * synchronously), so a member that never comes back does not grow the log without bound.
   */
  private heldFileIndex(point: Index): Index {
    if (this.fileHold === 0) return Number.MAX_SAFE_INTEGER;
    const least = this.leastFollowerMatch();
    // A point at or behind the snapshot compacts nothing: no reason to decide yet.
    if (least < point || point <= this.snapshotIndex) {
      const onDisk = this.coreStorage.readsStore;
      const kept = onDisk ? this.storeOnlyBytes : this.logBytes;
      const bound = onDisk ? this.opts.snapshotHoldBytes : FILE_HOLD_BUDGETS * this.opts.logBudgetBytes;
      if (kept <= bound) return Math.max(this.fileHold, least);
      this.log.warn(
        {
          event: 'raft.snapshot_file_hold_released',
          index: this.fileHold,
          match: least,
          logBytes: this.logBytes,
          storeOnlyBytes: this.storeOnlyBytes,
        },
        'the log kept for a member catching up from a snapshot file grew too large: compacting past it',
      );
    }
    this.fileHold = 0;
    return Number.MAX_SAFE_INTEGER;
  }

  /** The least match of the other members the leader tracks (MAX_SAFE_INTEGER when none). */
  private leastFollowerMatch(): Index {
    let least = Number.MAX_SAFE_INTEGER;
    for (const [id, pr] of Object.entries(this.core.status().progress ?? {}))
      if (id !== this.id) least = Math.min(least, pr.match);
    return least;
  }

  /** Whether an entry in (from, to] of the log in memory is a conf change. */
  private confChangeIn(from: Index, to: Index): boolean {
    const lo = Math.max(from + 1, this.storage.firstIndex());
    return this.confChangeIndexes.some((i) => i >= lo && i <= to);
  }

  /** Entries appended to the log in memory: they replace any from their first index on. */
  private noteConfChanges(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.storage.firstIndex();
    const kept = this.confChangeIndexes.filter((i) => i >= first && i < entries[0]!.index);
    for (const e of entries) if (e.type === 'confChange') kept.push(e.index);
    this.confChangeIndexes = kept;
  }

  /** Counts the data of the entries applied since the last count (the byte budget's measure). */
  private countLog(applied: Index): void {
    const from = Math.max(this.countedTo, this.storage.firstIndex() - 1);
    const to = Math.min(applied, this.storage.lastIndex());
    if (to <= from) return;
    for (const e of this.storage.entries(from + 1, to + 1, Number.MAX_SAFE_INTEGER))
      this.logBytes += e.data.length;
    this.countedTo = to;
  }

  /** After a compaction or an installed snapshot: counts what the log still holds. */
  private logCompacted(): void {
    this.logBytes = 0;
    this.countedTo = this.storage.firstIndex() - 1;
    if (this.compactsWithoutFile) this.countLog(this.sm.appliedIndex());
  }

  /**
   * The transport, less the MsgSnaps whose snapshot is the tables form: such a snapshot holds no
   * state to send. The core hears the snapshot failed (it probes the follower again later, as etcd's
   * leader does on ErrSnapshotTemporarilyUnavailable) and maybeSnapshot builds a file meanwhile.
   */
  private holdingTablesSnapshots(transport: RaftTransport): RaftTransport {
    const held = (m: Message): boolean =>
      m.type === 'MsgSnap' && m.snapshot !== undefined && isTablesSnapshot(m.snapshot.data);
    return {
      send: (messages) => {
        if (!messages.some(held)) return transport.send(messages);
        for (const m of messages.filter(held)) this.reportSnapshot(m.to, false);
        // The core probes again while the file is built: that file is the one it will send.
        if (this.buildingWantedFile) return this.sendRest(transport, messages, held);
        if (!this.fileWanted) {
          this.log.info(
            {
              event: 'raft.snapshot_file_wanted',
              to: messages.filter(held).map((m) => m.to),
              firstIndex: this.storage.firstIndex(),
              applied: this.sm.appliedIndex(),
            },
            'a follower needs a snapshot: building a snapshot file',
          );
        }
        this.fileWanted = true;
        this.sendRest(transport, messages, held);
      },
      setPeer: (id, url) => transport.setPeer(id, url),
      removePeer: (id) => transport.removePeer(id),
    };
  }

  private sendRest(transport: RaftTransport, messages: Message[], held: (m: Message) => boolean): void {
    const rest = messages.filter((m) => !held(m));
    if (rest.length > 0) transport.send(rest);
  }

  /**
   * Heartbeats keep their timing while a Ready is being handled (a synced write under a burst of
   * uploads can outlast an election timeout): a leader's tick, a follower's heartbeat from its
   * leader and the leader's answer to one are stepped at once (the core takes inputs between
   * ready() and advance()), and the heartbeats and answers they make go out at once
   * (RaftCore.takeHeartbeats). Had the ticks run while the answers waited, check-quorum would
   * depose a leader that is merely slow. Every other input waits in the inbox.
   */
  private onTickTimer(): void {
    if (this.stopped) return;
    if (this.inCycle && this.core.raft.role === 'leader') {
      this.stepDuringCycle(() => {
        this.core.tick();
        this.ticks++;
      });
      return;
    }
    // A tick that waited while a heartbeat was stepped ahead of it is spent: in arrival order, the
    // heartbeat would have reset the election timer after it.
    const beats = this.beatsStepped;
    this.input(() => {
      if (this.beatsStepped === beats) this.onTick();
    });
  }

  /** A heartbeat (or its answer) in our term, between this node as a follower and its leader. */
  private isHeartbeatNow(msg: Message): boolean {
    const r = this.core.raft;
    if (msg.term !== r.term) return false;
    if (msg.type === 'MsgHeartbeat') return r.role === 'follower' && msg.from === r.lead;
    return msg.type === 'MsgHeartbeatResp' && r.role === 'leader';
  }

  private stepDuringCycle(fn: () => void): void {
    // A node stopping drains its last cycle: nothing more is stepped or sent.
    if (this.stopped) return;
    try {
      fn();
    } catch (err) {
      this.fatal(err);
      return;
    }
    const beats = this.core.takeHeartbeats();
    if (beats.length > 0) this.transport.send(beats);
  }

  private onTick(): void {
    this.core.tick();
    this.ticks++;
    // Every fourth tick is often enough to notice a learner that caught up, and spares a status walk.
    if (this.role === 'leader' && this.ticks % 4 === 0 && this.confState.learners.length > 0) {
      this.membership.promoteCaughtUp(this.core.status(), this.clock.now(), (cc) =>
        this.core.proposeConfChange(cc),
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

  /** Role changes, conf changes and snapshot installs are what the condition waiters wait for. */
  private checkWaiters(): void {
    this.conditions.recheck();
  }

  private proposeError(err: ProposeError): RaftError {
    return proposeRefusal(err, () => this.leaderInfo());
  }

  private notLeader(): RaftError {
    return notLeaderError(this.leaderInfo());
  }

  private failEverything(err: RaftError): void {
    this.proposals.failAll(err);
    this.reads.failAll(err);
    this.conditions.failAll(err);
  }

  private fatal(err: unknown): void {
    if (this.stopped) return;
    this.stopped = true;
    if (this.ticker) this.clock.clearInterval(this.ticker);
    this.notices.clear();
    this.failEverything(new RaftError('Stopped', `raft node stopped: ${String(err)}`));
    this.onFatal(err);
  }

  private registerMetrics(registry: Registry): NodeMetrics {
    return registerNodeMetrics(registry, {
      term: () => this.term,
      commitIndex: () => (this.unsavedHardState ?? this.durableHardState).commit,
      appliedIndex: () => this.sm.appliedIndex(),
      lastIndex: () => this.storage.lastIndex(),
      snapshotIndex: () => this.snapshotIndex,
      isLeader: () => this.role === 'leader',
      proposalsPending: () => this.proposals.size,
      logMemoryBytes: () => this.logBytes,
    });
  }
}

/** The store's synchronous reads, if it has them (LevelLogStore, the simulators' stores). */
function syncReader(store: RaftLogStore): SyncLogReader | null {
  if (store.entriesSync === undefined || store.termSync === undefined) return null;
  return {
    entriesSync: (lo, hi, maxSize) => store.entriesSync!(lo, hi, maxSize),
    termSync: (index) => store.termSync!(index),
  };
}

/** A leader's answer to a follower's read index request. */
function answersReadIndex(msg: Message): boolean {
  return msg.type === 'MsgReadIndexResp';
}
