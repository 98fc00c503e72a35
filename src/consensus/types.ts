// The vocabulary shared by the Raft core, its storage, its transport and its driver.
// Modelled on etcd-io/raft's raftpb: plain data, JSON-serialisable, so the same values
// cross the HTTP transport, land in LevelDB and flow through the simulator unchanged.

export type NodeId = string;

/** Index and term 0 mean "nothing": the log starts at index 1, terms start at 1. */
export type Index = number;
export type Term = number;

export type EntryType = 'normal' | 'confChange';

export interface Entry {
  term: Term;
  index: Index;
  type: EntryType;
  /**
   * Opaque to the core. For `normal` entries: the state machine's command (empty string for the
   * leader's no-op of Raft section 8). For `confChange` entries: JSON of a `ConfChange`.
   */
  data: string;
}

/** Single-server membership change (Raft thesis 4.1); one at a time. */
export type ConfChangeType = 'addLearner' | 'promote' | 'remove';

export interface ConfChange {
  type: ConfChangeType;
  nodeId: NodeId;
  /** Opaque to the core: the host keeps e.g. the new member's URL here. */
  context?: string;
}

export interface ConfState {
  voters: NodeId[];
  /** Non-voting members catching up before promotion; they receive the log but never vote or count. */
  learners: NodeId[];
}

/** What must be on disk before any message that depends on it is sent. */
export interface HardState {
  term: Term;
  vote: NodeId | null;
  commit: Index;
}

export interface SnapshotMetadata {
  index: Index;
  term: Term;
  confState: ConfState;
}

export interface Snapshot {
  metadata: SnapshotMetadata;
  /** The state machine's serialised state at `metadata.index`; opaque to the core. */
  data: string;
}

/** Every Raft message type; the transport's schema and the simulator enumerate this list. */
export const MESSAGE_TYPES = [
  'MsgApp',
  'MsgAppResp',
  'MsgVote',
  'MsgVoteResp',
  'MsgPreVote',
  'MsgPreVoteResp',
  'MsgHeartbeat',
  'MsgHeartbeatResp',
  'MsgSnap',
  'MsgTimeoutNow',
  'MsgTransferLeader',
  'MsgProp',
  'MsgReadIndex',
  'MsgReadIndexResp',
] as const;

export type MessageType = (typeof MESSAGE_TYPES)[number];

/**
 * One Raft message. Field meanings follow etcd's raftpb.Message:
 * - MsgApp: `index`/`logTerm` identify the entry preceding `entries`; `commit` is the leader's commit.
 * - MsgAppResp: `index` is the last index the follower now matches, or on `reject` the rejected
 *   `index`, with `rejectHint`/`logTerm` giving the follower's hint for fast backtracking.
 * - MsgVote/MsgPreVote: `index`/`logTerm` are the candidate's last entry. A pre-vote is sent with
 *   the term the candidate would campaign in, without the candidate changing its own term.
 * - MsgHeartbeat: `commit` is min(leader commit, follower match); `context` carries ReadIndex ctx.
 * - MsgSnap: `snapshot` is set.
 */
export interface Message {
  type: MessageType;
  from: NodeId;
  to: NodeId;
  term: Term;
  logTerm?: Term;
  index?: Index;
  entries?: Entry[];
  commit?: Index;
  reject?: boolean;
  rejectHint?: Index;
  snapshot?: Snapshot;
  context?: string;
}

export type Role = 'follower' | 'preCandidate' | 'candidate' | 'leader';

export interface SoftState {
  leader: NodeId | null;
  role: Role;
}

/** A linearizable read may be served once the local applied index reaches `index`. */
export interface ReadState {
  index: Index;
  context: string;
}

/**
 * Everything the core wants done, handed out by `ready()`. The host must, in order:
 * 0. send `messagesBeforePersist`, while the write of step 1 runs or with `messages`;
 * 1. persist `snapshot`, `entries` and `hardState` in one synced write;
 * 2. send `messages`;
 * 3. apply `snapshot` (if any) then `committedEntries` to the state machine;
 * 4. call `advance()`.
 * Persist before send: a vote or an append ack must never reach the network before it is on disk.
 */
export interface Ready {
  softState?: SoftState;
  hardState?: HardState;
  /** Entries to append to stable storage; a first index at or below the stored last index truncates the suffix. */
  entries: Entry[];
  snapshot?: Snapshot;
  committedEntries: Entry[];
  /**
   * A leader's MsgApp/MsgHeartbeat/MsgSnap in a term already durable: the host may send them
   * before or while it persists this Ready, so the leader's write overlaps the followers' (thesis
   * 10.2.1). Sending them with `messages` is always correct too.
   */
  messagesBeforePersist: Message[];
  /** Sent only after this Ready is persisted: votes and acks promise what is on disk. */
  messages: Message[];
  readStates: ReadState[];
}

export interface ProgressStatus {
  match: Index;
  next: Index;
  state: 'probe' | 'replicate' | 'snapshot';
  isLearner: boolean;
  /** Ticks since the leader last heard from this peer (check-quorum bookkeeping). */
  recentActive: boolean;
}

export interface Status {
  id: NodeId;
  term: Term;
  vote: NodeId | null;
  commit: Index;
  applied: Index;
  lastIndex: Index;
  firstIndex: Index;
  snapshotIndex: Index;
  role: Role;
  leader: NodeId | null;
  confState: ConfState;
  leadTransferee: NodeId | null;
  /** Only on the leader. */
  progress?: Record<NodeId, ProgressStatus>;
}

/** Deterministic randomness injected into the core (election jitter). Returns an integer in [0, n). */
export type RandomInt = (n: number) => number;
