// The contracts between the Raft core and its host. The core (RaftCore) implements `RawNode`;
// the node driver owns timers, I/O and the event loop around it.

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
  Snapshot,
  Status,
} from './types.ts';

export interface RaftConfig {
  id: NodeId;
  /** The core's synchronous view of stable storage (see `MemoryStorage` in core/). */
  storage: CoreStorage;
  /** Ticks without hearing from a leader before campaigning; the real timeout is randomised in [electionTick, 2*electionTick). */
  electionTick: number;
  /** Ticks between leader heartbeats; must be < electionTick. */
  heartbeatTick: number;
  /** Seeded source of randomness for election jitter: the core has no other. */
  random: RandomInt;
  /** The last index the host's state machine has applied (on restart). */
  applied?: Index;
  /** Soft cap, in bytes of entry data, on one MsgApp. */
  maxSizePerMsg?: number;
  /** Max MsgApp in flight to one follower in replicate state. */
  maxInflightMsgs?: number;
  /** Bound on proposals not yet committed, in bytes; proposals beyond it are dropped. */
  maxUncommittedEntriesSize?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
}

/** Errors the core returns as values (never throws on them). */
export type ProposeError = 'ProposalDropped' | 'NotLeader' | 'ConfChangeInProgress' | 'TransferInProgress';

/**
 * Synchronous storage the core reads (etcd's raft.Storage). The host appends to it after
 * persisting each Ready's entries durably, so it only ever holds what is on disk.
 */
export interface CoreStorage {
  initialState(): { hardState: HardState; confState: ConfState };
  /** Entries in [lo, hi), at most maxSize bytes of data but always at least one. Throws if compacted. */
  entries(lo: Index, hi: Index, maxSize: number): Entry[];
  /** Term of entry i; valid for i in [firstIndex()-1, lastIndex()]. */
  term(i: Index): number;
  firstIndex(): Index;
  lastIndex(): Index;
  snapshot(): Snapshot;
}

/** The whole API a host needs, in the spirit of etcd's RawNode. No method awaits or does I/O. */
export interface RawNode {
  tick(): void;
  step(msg: Message): void;
  propose(data: string): ProposeError | null;
  /**
   * A conf change that cannot apply to the current membership (promote a non-learner, add an
   * existing member, remove the last voter) is refused with 'ProposalDropped'.
   */
  proposeConfChange(change: ConfChange): ProposeError | null;
  /**
   * The host applies a committed `confChange` entry: it calls this (in log order, with the other
   * committed entries) and the membership changes now, as in etcd. Returns the resulting
   * membership, which is what a snapshot taken at this point must record.
   */
  applyConfChange(change: ConfChange): ConfState;
  /** Request a linearizable read; a ReadState with this ctx comes out in a later Ready. */
  readIndex(ctx: string): void;
  transferLeadership(to: NodeId): void;
  /** Start an election now (used at bootstrap and in tests). */
  campaign(): void;
  hasReady(): boolean;
  ready(): Ready;
  /** `snapshotApplied` false: the Ready's snapshot is persisted, not yet installed (snapshotApplied). */
  advance(options?: { snapshotApplied?: boolean }): void;
  /** The host installed the snapshot a deferred advance() left; committed entries after it follow. */
  snapshotApplied(index: Index): void;
  /** The host reports that a message to `to` could not be delivered. */
  reportUnreachable(to: NodeId): void;
  /** The host reports how sending a snapshot to `to` ended. */
  reportSnapshot(to: NodeId, ok: boolean): void;
  status(): Status;
}

/**
 * Durable Raft log (async; the node driver's side). One `save` is one synced batch.
 * Implemented by the LevelDB store and by the in-memory store the simulator uses; both pass
 * the same conformance suite (tests/consensus/logStore.conformance.ts).
 */
export interface RaftLogStore {
  /** Everything needed to rebuild the core's storage after a restart. */
  load(): Promise<{ hardState: HardState; snapshot: Snapshot | null; entries: Entry[] }>;
  /**
   * Atomically and durably (fsync) apply, in this order: a received snapshot (dropping every entry it
   * covers), entries (an entry at an index already stored replaces it and every entry after it), and
   * the hard state.
   */
  save(update: { hardState?: HardState; entries?: Entry[]; snapshot?: Snapshot }): Promise<void>;
  /** Log compaction: keep `snapshot` (taken locally) and drop entries up to its index. */
  compact(snapshot: Snapshot): Promise<void>;
  close(): Promise<void>;
  /**
   * Optional reads that answer at once from what the store holds now (the stored entries in
   * [lo, hi), at most maxSize bytes of data but at least one; the term of a stored entry). With
   * them the driver keeps the log behind a snapshot file on disk only (storeBackedStorage.ts).
   */
  entriesSync?(lo: Index, hi: Index, maxSize: number): Entry[];
  termSync?(index: Index): number;
}
