// Roles and message handling (etcd raft.go). Pure and synchronous: inputs are tick(), step(),
// propose...; outputs accumulate in `msgs` and `readStates` and in the log, and RaftCore turns
// them into a Ready.
//
// Overridable on purpose: `maybeCommit()` (the commit rule), `handleAppendEntries()` (the
// follower's AppendEntries receiver) and `createLog()` (so a RaftLog subclass can change
// `maybeAppend`/`findConflict`) are protected so the simulator can build deliberately broken
// variants and check that its invariant checkers catch them. Do not make them private.

import type { CoreStorage, ProposeError, RaftConfig } from '../api.ts';
import type {
  ConfChange,
  ConfState,
  Entry,
  HardState,
  Index,
  Message,
  MessageType,
  NodeId,
  RandomInt,
  ReadState,
  Role,
  Snapshot,
  SoftState,
  Status,
  Term,
} from '../types.ts';
import {
  type ConfChangeLeader,
  leaderAfterConfChange,
  refuseConfChanges,
  replayConfChanges,
  switchConfig,
  withConfChange,
} from './confChange.ts';
import { entriesSize } from './entrySize.ts';
import { Progress } from './progress.ts';
import { committedIndex, voteResult } from './quorum.ts';
import { RaftLog } from './raftLog.ts';
import { ReadOnly } from './readOnly.ts';

/** Marks a (pre)vote that comes from a leadership transfer: it may disturb a live leader. */
export const CAMPAIGN_TRANSFER = 'transfer';

export const DEFAULT_MAX_SIZE_PER_MSG = 1024 * 1024;
export const DEFAULT_MAX_INFLIGHT_MSGS = 256;

function voteRespType(t: MessageType): MessageType {
  return t === 'MsgPreVote' ? 'MsgPreVoteResp' : 'MsgVoteResp';
}

/** One Raft peer (etcd's `raft` struct); RaftCore (rawNode.ts) is the host's API to it. */
export class Raft {
  readonly id: NodeId;
  term: Term = 0;
  vote: NodeId | null = null;
  role: Role = 'follower';
  lead: NodeId | null = null;
  readonly raftLog: RaftLog;

  msgs: Message[] = [];
  readStates: ReadState[] = [];

  readonly voters = new Set<NodeId>();
  readonly learners = new Set<NodeId>();
  /** Per-member replication progress; only meaningful on the leader, kept in sync with the config. */
  readonly prs = new Map<NodeId, Progress>();
  private votes = new Map<NodeId, boolean>();

  leadTransferee: NodeId | null = null;
  /** Index of the latest conf-change entry the leader appended; none may be proposed until it is applied. */
  pendingConfIndex: Index = 0;
  /** Bytes of entry data appended by this leader and not yet applied (maxUncommittedEntriesSize). */
  uncommittedSize = 0;
  private readOnly = new ReadOnly();
  /** ReadIndex requests that arrived before this leader committed an entry of its own term. */
  private pendingReadIndexMessages: Message[] = [];

  electionElapsed = 0;
  private heartbeatElapsed = 0;
  private randomizedElectionTimeout = 0;

  readonly electionTimeout: number;
  readonly heartbeatTimeout: number;
  readonly checkQuorum: boolean;
  readonly preVote: boolean;
  readonly maxMsgSize: number;
  readonly maxInflight: number;
  readonly maxUncommittedSize: number;
  private readonly random: RandomInt;

  constructor(config: RaftConfig) {
    if (config.heartbeatTick <= 0) throw new Error('RaftConfig.heartbeatTick must be > 0');
    if (config.electionTick <= config.heartbeatTick) {
      throw new Error('RaftConfig.electionTick must be greater than heartbeatTick');
    }
    this.id = config.id;
    this.electionTimeout = config.electionTick;
    this.heartbeatTimeout = config.heartbeatTick;
    this.random = config.random;
    this.checkQuorum = config.checkQuorum ?? true;
    this.preVote = config.preVote ?? true;
    this.maxMsgSize = config.maxSizePerMsg ?? DEFAULT_MAX_SIZE_PER_MSG;
    this.maxInflight = config.maxInflightMsgs ?? DEFAULT_MAX_INFLIGHT_MSGS;
    this.maxUncommittedSize = config.maxUncommittedEntriesSize ?? Number.POSITIVE_INFINITY;

    const storage = config.storage;
    this.raftLog = this.createLog(storage);
    const { hardState, confState } = storage.initialState();
    this.loadHardState(hardState);
    const applied = config.applied ?? 0;
    if (applied > this.raftLog.committed) {
      if (applied > this.raftLog.lastIndex()) {
        throw new Error(`Raft ${this.id}: applied ${applied} beyond last index ${this.raftLog.lastIndex()}`);
      }
      // Only committed entries are ever applied. A host that defers syncing a commit-only hard
      // state (etcd's MustSync) can restart with a stored commit below its applied index.
      this.raftLog.committed = applied;
    }
    if (applied > 0) this.raftLog.appliedTo(applied);
    this.restoreConfig(this.replayAppliedConfChanges(storage, confState));
    this.becomeFollower(this.term, null);
  }

  /** The log implementation; overridable so tests and the simulator can inject a faulty log. */
  protected createLog(storage: CoreStorage): RaftLog {
    return new RaftLog(storage);
  }

  private loadHardState(hs: HardState): void {
    if (hs.commit > this.raftLog.lastIndex()) {
      throw new Error(
        `Raft ${this.id}: hard state commit ${hs.commit} beyond last index ${this.raftLog.lastIndex()}`,
      );
    }
    // A snapshot's index is committed by definition, even if the stored hard state lags it.
    this.raftLog.committed = Math.max(this.raftLog.committed, hs.commit);
    this.term = hs.term;
    this.vote = hs.vote;
  }

  /**
   * The storage's ConfState is the snapshot's; conf changes applied after it (up to `applied`)
   * are in the log and will not be handed out again, so replay them here. Each change is
   * idempotent, so a storage whose ConfState already includes them is fine too.
   */
  private replayAppliedConfChanges(storage: CoreStorage, cs: ConfState): ConfState {
    const from = storage.firstIndex();
    const to = Math.min(this.raftLog.applied, storage.lastIndex());
    if (to < from) return cs;
    return replayConfChanges(cs, storage.entries(from, to + 1, Number.POSITIVE_INFINITY));
  }

  // ---------------------------------------------------------------------------------------------
  // State transitions

  hardState(): HardState {
    return { term: this.term, vote: this.vote, commit: this.raftLog.committed };
  }

  softState(): SoftState {
    return { leader: this.lead, role: this.role };
  }

  /** A node may campaign only if it is a voter and is not in the middle of installing a snapshot. */
  promotable(): boolean {
    return this.voters.has(this.id) && this.raftLog.unstable.snapshot === null;
  }

  private reset(term: Term): void {
    if (this.term !== term) {
      this.term = term;
      this.vote = null;
    }
    this.lead = null;
    this.electionElapsed = 0;
    this.heartbeatElapsed = 0;
    this.resetRandomizedElectionTimeout();
    this.abortLeaderTransfer();
    this.votes = new Map();
    const last = this.raftLog.lastIndex();
    for (const [id, pr] of this.prs) {
      const fresh = new Progress(last + 1, this.maxInflight, pr.isLearner);
      if (id === this.id) fresh.match = this.raftLog.durableLastIndex();
      this.prs.set(id, fresh);
    }
    this.pendingConfIndex = 0;
    this.uncommittedSize = 0;
    this.readOnly = new ReadOnly();
    this.pendingReadIndexMessages = [];
  }

  private resetRandomizedElectionTimeout(): void {
    const jitter = this.random(this.electionTimeout);
    if (!Number.isInteger(jitter) || jitter < 0 || jitter >= this.electionTimeout) {
      throw new Error(
        `RaftConfig.random(${this.electionTimeout}) returned ${jitter}, not an integer in range`,
      );
    }
    this.randomizedElectionTimeout = this.electionTimeout + jitter;
  }

  becomeFollower(term: Term, lead: NodeId | null): void {
    this.reset(term);
    this.lead = lead;
    this.role = 'follower';
  }

  private becomePreCandidate(): void {
    if (this.role === 'leader') throw new Error('Raft: leader cannot become pre-candidate');
    // A pre-candidate changes neither its term nor its vote (thesis 9.6): a partitioned node that
    // keeps failing pre-vote never inflates the term and never disrupts the cluster on return.
    this.votes = new Map();
    this.lead = null;
    this.role = 'preCandidate';
  }

  private becomeCandidate(): void {
    if (this.role === 'leader') throw new Error('Raft: leader cannot become candidate');
    this.reset(this.term + 1);
    this.vote = this.id;
    this.role = 'candidate';
  }

  private becomeLeader(): void {
    if (this.role === 'follower') throw new Error('Raft: follower cannot become leader directly');
    this.reset(this.term);
    this.lead = this.id;
    this.role = 'leader';
    const self = this.prs.get(this.id);
    if (self) {
      self.becomeReplicate();
      self.recentActive = true;
    }
    // Conservatively treat every entry before this term as a possibly pending conf change.
    this.pendingConfIndex = this.raftLog.lastIndex();
    // Raft section 8: an entry of the new term lets the leader commit everything before it (5.4.2).
    const ok = this.appendEntries([{ term: 0, index: 0, type: 'normal', data: '' }]);
    if (!ok) throw new Error('Raft: a new leader failed to append its empty entry');
  }

  // ---------------------------------------------------------------------------------------------
  // Elections

  /** Starts an election if allowed; `transfer` marks a leadership-transfer campaign (skips pre-vote). */
  hup(transfer: boolean): void {
    if (this.role === 'leader') return;
    if (!this.promotable()) return;
    // A node still installing a snapshot campaigns, as etcd's does once the snapshot is persisted
    // (promotable): refusing would leave a cluster whose most up-to-date voter installs without a
    // leader for the whole install. As a leader it hands out nothing after the snapshot until it
    // is installed, and ReadIndex waits for the state machine, so a leader behind is only slow.
    if (this.hasUnappliedConfChanges()) return;
    if (this.preVote && !transfer) this.campaign('pre', false);
    else this.campaign('election', transfer);
  }

  private hasUnappliedConfChanges(): boolean {
    const { applied, committed } = this.raftLog;
    if (applied >= committed) return false;
    const lo = Math.max(applied + 1, this.raftLog.firstIndex());
    const hi = Math.min(committed, this.raftLog.lastIndex());
    if (hi < lo) return false;
    return this.raftLog.slice(lo, hi + 1).some((e) => e.type === 'confChange');
  }

  private campaign(kind: 'pre' | 'election', transfer: boolean): void {
    let voteMsg: MessageType;
    let term: Term;
    if (kind === 'pre') {
      this.becomePreCandidate();
      voteMsg = 'MsgPreVote';
      term = this.term + 1;
    } else {
      this.becomeCandidate();
      voteMsg = 'MsgVote';
      term = this.term;
    }
    const res = this.poll(this.id, true);
    if (res === 'won') {
      if (kind === 'pre') this.campaign('election', transfer);
      else this.becomeLeader();
      return;
    }
    const index = this.raftLog.lastIndex();
    const logTerm = this.raftLog.lastTerm();
    for (const id of [...this.voters].sort()) {
      if (id === this.id) continue;
      const m: Message = { type: voteMsg, from: this.id, to: id, term, index, logTerm };
      if (transfer) m.context = CAMPAIGN_TRANSFER;
      this.msgs.push(m);
    }
  }

  private poll(id: NodeId, granted: boolean) {
    if (!this.votes.has(id)) this.votes.set(id, granted);
    return voteResult(this.voters, this.votes);
  }

  // ---------------------------------------------------------------------------------------------
  // Ticks

  tick(): void {
    if (this.role === 'leader') this.tickHeartbeat();
    else this.tickElection();
  }

  private tickElection(): void {
    this.electionElapsed++;
    if (this.promotable() && this.electionElapsed >= this.randomizedElectionTimeout) {
      this.electionElapsed = 0;
      this.hup(false);
    }
  }

  private tickHeartbeat(): void {
    this.heartbeatElapsed++;
    this.electionElapsed++;
    if (this.electionElapsed >= this.electionTimeout) {
      this.electionElapsed = 0;
      if (this.checkQuorum) this.checkQuorumActive();
      // A transfer that has not completed within an election timeout is abandoned.
      if (this.role === 'leader' && this.leadTransferee !== null) this.abortLeaderTransfer();
    }
    if (this.role !== 'leader') return;
    if (this.heartbeatElapsed >= this.heartbeatTimeout) {
      this.heartbeatElapsed = 0;
      this.bcastHeartbeat();
    }
  }

  /** Check-quorum (thesis 6.2): step down unless a majority of voters was heard from this round. */
  private checkQuorumActive(): void {
    let active = 0;
    for (const id of this.voters) {
      const pr = this.prs.get(id);
      if (id === this.id || pr?.recentActive) active++;
    }
    if (active < Math.floor(this.voters.size / 2) + 1) this.becomeFollower(this.term, null);
    for (const [id, pr] of this.prs) if (id !== this.id) pr.recentActive = false;
  }

  // ---------------------------------------------------------------------------------------------
  // Messages in

  private send(m: Message): void {
    // Votes carry the term they are for (a pre-vote's is the future term); MsgProp and
    // MsgReadIndex are forwarded requests and carry no term (0) so they never disturb terms.
    const keepsTerm =
      m.type === 'MsgVote' ||
      m.type === 'MsgVoteResp' ||
      m.type === 'MsgPreVote' ||
      m.type === 'MsgPreVoteResp';
    if (!keepsTerm && m.type !== 'MsgProp' && m.type !== 'MsgReadIndex') m.term = this.term;
    this.msgs.push(m);
  }

  step(m: Message): void {
    if (!wellFormed(m)) return;
    if (m.term === 0) {
      // Local or forwarded request: no term to compare.
    } else if (m.term > this.term) {
      if (m.type === 'MsgVote' || m.type === 'MsgPreVote') {
        const force = m.context === CAMPAIGN_TRANSFER;
        const inLease = this.checkQuorum && this.lead !== null && this.electionElapsed < this.electionTimeout;
        // Thesis 4.2.3: a node that heard from a live leader recently ignores (pre)votes, so a
        // removed or partitioned node cannot depose a working leader.
        if (!force && inLease) return;
      }
      if (m.type === 'MsgPreVote') {
        // A pre-vote never changes our term.
      } else if (m.type === 'MsgPreVoteResp' && !m.reject) {
        // The term is bumped when the pre-candidate wins a majority and campaigns for real.
      } else if (m.type === 'MsgApp' || m.type === 'MsgHeartbeat' || m.type === 'MsgSnap') {
        this.becomeFollower(m.term, m.from);
      } else {
        this.becomeFollower(m.term, null);
      }
    } else if (m.term < this.term) {
      if (m.type === 'MsgHeartbeat' || m.type === 'MsgApp') {
        // Figure 2: reply with our term so a stale leader (e.g. after a partition heals) steps
        // down. With pre-vote and check-quorum this answer may be the only way it learns.
        this.send({ type: 'MsgAppResp', from: this.id, to: m.from, term: this.term });
      } else if (m.type === 'MsgPreVote') {
        this.send({ type: 'MsgPreVoteResp', from: this.id, to: m.from, term: this.term, reject: true });
      }
      return;
    }

    if (m.type === 'MsgVote' || m.type === 'MsgPreVote') {
      this.handleVoteRequest(m);
      return;
    }
    switch (this.role) {
      case 'leader':
        this.stepLeader(m);
        return;
      case 'candidate':
      case 'preCandidate':
        this.stepCandidate(m);
        return;
      case 'follower':
        this.stepFollower(m);
        return;
    }
  }

  private handleVoteRequest(m: Message): void {
    const canVote =
      this.vote === m.from ||
      (this.vote === null && this.lead === null) ||
      (m.type === 'MsgPreVote' && m.term > this.term);
    if (canVote && this.raftLog.isUpToDate(m.index ?? 0, m.logTerm ?? 0)) {
      // The response carries the request's term: for a pre-vote we did not (and must not) adopt it.
      this.send({ type: voteRespType(m.type), from: this.id, to: m.from, term: m.term });
      if (m.type === 'MsgVote') {
        this.electionElapsed = 0;
        this.vote = m.from;
      }
    } else {
      this.send({ type: voteRespType(m.type), from: this.id, to: m.from, term: this.term, reject: true });
    }
  }

  private stepFollower(m: Message): void {
    switch (m.type) {
      case 'MsgProp':
        if (this.lead === null) return;
        this.send({ ...m, from: m.from, to: this.lead, term: 0 });
        return;
      case 'MsgApp':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleAppendEntries(m);
        return;
      case 'MsgHeartbeat':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleHeartbeat(m);
        return;
      case 'MsgSnap':
        this.electionElapsed = 0;
        this.lead = m.from;
        this.handleSnapshot(m);
        return;
      case 'MsgTransferLeader':
        if (this.lead === null) return;
        this.send({ ...m, to: this.lead, term: 0 });
        return;
      case 'MsgTimeoutNow':
        // The leader chose us: campaign now, skipping pre-vote, marked so live followers vote.
        this.hup(true);
        return;
      case 'MsgReadIndex':
        if (this.lead === null) return;
        this.send({ ...m, to: this.lead, term: 0 });
        return;
      case 'MsgReadIndexResp':
        this.readStates.push({ index: m.index ?? 0, context: m.context ?? '' });
        return;
      default:
        return;
    }
  }

  private stepCandidate(m: Message): void {
    const myResp: MessageType = this.role === 'preCandidate' ? 'MsgPreVoteResp' : 'MsgVoteResp';
    switch (m.type) {
      case 'MsgApp':
        this.becomeFollower(m.term, m.from);
        this.handleAppendEntries(m);
        return;
      case 'MsgHeartbeat':
        this.becomeFollower(m.term, m.from);
        this.handleHeartbeat(m);
        return;
      case 'MsgSnap':
        this.becomeFollower(m.term, m.from);
        this.handleSnapshot(m);
        return;
      default:
        break;
    }
    if (m.type !== myResp) return;
    const res = this.poll(m.from, !m.reject);
    if (res === 'won') {
      if (this.role === 'preCandidate') {
        this.campaign('election', false);
      } else {
        this.becomeLeader();
        this.bcastAppend();
      }
    } else if (res === 'lost') {
      this.becomeFollower(this.term, null);
    }
  }

  private stepLeader(m: Message): void {
    switch (m.type) {
      case 'MsgProp':
        // Forwarded by a follower; the result is not reported back (the client times out).
        this.proposeEntries(m.entries ?? []);
        return;
      case 'MsgReadIndex':
        this.handleReadIndex(m);
        return;
      default:
        break;
    }
    const pr = this.prs.get(m.from);
    if (pr === undefined) return;
    switch (m.type) {
      case 'MsgAppResp':
        this.handleAppendResponse(m, pr);
        return;
      case 'MsgHeartbeatResp':
        this.handleHeartbeatResponse(m, pr);
        return;
      case 'MsgTransferLeader':
        this.handleTransferLeader(m.from, pr);
        return;
      default:
        return;
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Replication: leader side

  private handleAppendResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    if (m.reject) {
      // Fast backtracking (etcd rejectHint/logTerm): skip every index whose term cannot match.
      let nextProbe = m.rejectHint ?? 0;
      if ((m.logTerm ?? 0) > 0) nextProbe = this.raftLog.findConflictByTerm(nextProbe, m.logTerm ?? 0)[0];
      if (pr.maybeDecrTo(m.index ?? 0, nextProbe)) {
        if (pr.state === 'replicate') pr.becomeProbe();
        this.sendAppend(m.from);
      }
      return;
    }
    // An ack beyond our log cannot be genuine (our log only grows within a term); counting it
    // could commit entries that do not exist.
    if ((m.index ?? 0) > this.raftLog.lastIndex()) return;
    const oldPaused = pr.isPaused();
    if (!pr.maybeUpdate(m.index ?? 0)) return;
    if (pr.state === 'probe') {
      pr.becomeReplicate();
    } else if (pr.state === 'snapshot' && pr.match + 1 >= this.raftLog.firstIndex()) {
      // The follower caught up through the snapshot (or otherwise) and can take entries again.
      pr.becomeProbe();
      pr.becomeReplicate();
    } else if (pr.state === 'replicate') {
      pr.inflights.freeLE(m.index ?? 0);
    }
    if (this.commitAndRelease()) {
      this.bcastAppend();
    } else if (oldPaused) {
      this.sendAppend(m.from);
    }
    // Pipelining: keep the window full while there is something to send.
    while (this.maybeSendAppend(m.from, false)) {
      // loop
    }
    if (m.from === this.leadTransferee && pr.match === this.raftLog.lastIndex()) {
      this.sendTimeoutNow(m.from);
    }
  }

  private handleHeartbeatResponse(m: Message, pr: Progress): void {
    pr.recentActive = true;
    pr.msgAppFlowPaused = false;
    // The follower is alive; if appends were lost the window would stay full forever otherwise.
    if (pr.state === 'replicate' && pr.inflights.full()) pr.inflights.freeFirstOne();
    // A caught-up follower knocked back to probe (reportUnreachable) would stay there, since no
    // append is due to it. Its match is exact and it has just answered, so replicate is safe: the
    // next append starts right after match. (Unlike etcd, which sends an empty probe, this does
    // not let duplicated acks of `match` flip a lagging follower into a full window of appends.)
    if (pr.state === 'probe' && pr.match === this.raftLog.lastIndex()) pr.becomeReplicate();
    if (pr.match < this.raftLog.lastIndex()) this.sendAppend(m.from);

    const ctx = m.context;
    if (ctx === undefined) return;
    const acks = this.readOnly.recvAck(m.from, ctx);
    if (acks === undefined) return;
    const votes = new Map<NodeId, boolean>();
    for (const a of acks) votes.set(a, true);
    if (voteResult(this.voters, votes) !== 'won') return;
    for (const rs of this.readOnly.advance(ctx)) this.respondToReadIndex(rs.req, rs.index);
  }

  /**
   * The commit rule (Raft 5.3, 5.4.2): the highest index replicated on a majority of voters,
   * committed only if it is an entry of the current term. Protected: broken variants override it.
   */
  protected maybeCommit(): boolean {
    const mci = committedIndex(this.voters, (id) => this.prs.get(id)?.match);
    if (!Number.isFinite(mci)) return false;
    return this.raftLog.maybeCommit(mci, this.term);
  }

  private commitAndRelease(): boolean {
    if (!this.maybeCommit()) return false;
    this.releasePendingReadIndexMessages();
    return true;
  }

  committedEntryInCurrentTerm(): boolean {
    return this.raftLog.term(this.raftLog.committed) === this.term;
  }

  sendAppend(to: NodeId): void {
    this.maybeSendAppend(to, true);
  }

  /** Sends a MsgApp (or a snapshot) to `to` if its progress allows; returns whether it sent. */
  private maybeSendAppend(to: NodeId, sendIfEmpty: boolean): boolean {
    const pr = this.prs.get(to);
    if (pr === undefined || pr.isPaused()) return false;
    const prevIndex = pr.next - 1;
    if (this.raftLog.isCompacted(prevIndex)) return this.maybeSendSnapshot(to, pr);
    const prevTerm = this.raftLog.term(prevIndex);
    const entries = this.raftLog.entries(pr.next, this.maxMsgSize);
    if (entries.length === 0 && !sendIfEmpty) return false;
    this.send({
      type: 'MsgApp',
      from: this.id,
      to,
      term: this.term,
      index: prevIndex,
      logTerm: prevTerm,
      entries,
      commit: this.raftLog.committed,
    });
    const last = entries.length > 0 ? entries[entries.length - 1]!.index : prevIndex;
    pr.sentEntries(entries.length, entriesSize(entries), last);
    return true;
  }

  private maybeSendSnapshot(to: NodeId, pr: Progress): boolean {
    // A peer not heard from lately is probably down: do not make the host ship a snapshot into the void.
    if (!pr.recentActive) return false;
    const snapshot = this.raftLog.snapshot();
    if (snapshot.metadata.index === 0)
      throw new Error(`Raft ${this.id}: need a snapshot for ${to} but have none`);
    this.send({ type: 'MsgSnap', from: this.id, to, term: this.term, snapshot });
    pr.becomeSnapshot(snapshot.metadata.index);
    return true;
  }

  private sendHeartbeat(to: NodeId, ctx: string | undefined): void {
    const pr = this.prs.get(to);
    // Never tell a follower to commit past what it is known to hold: it may not have those entries.
    const commit = Math.min(pr?.match ?? 0, this.raftLog.committed);
    const m: Message = { type: 'MsgHeartbeat', from: this.id, to, term: this.term, commit };
    if (ctx !== undefined) m.context = ctx;
    this.send(m);
  }

  bcastAppend(): void {
    for (const id of this.sortedPeers()) this.sendAppend(id);
  }

  private bcastHeartbeat(): void {
    const ctx = this.readOnly.lastPendingRequestCtx();
    for (const id of this.sortedPeers()) this.sendHeartbeat(id, ctx);
  }

  private sortedPeers(): NodeId[] {
    return [...this.prs.keys()].filter((id) => id !== this.id).sort();
  }

  private sendTimeoutNow(to: NodeId): void {
    this.send({ type: 'MsgTimeoutNow', from: this.id, to, term: this.term });
  }

  // ---------------------------------------------------------------------------------------------
  // Replication: follower side

  /**
   * AppendEntries receiver (Raft Figure 2). Protected: broken variants override it. On a mismatch
   * the reply hints where our log may match so the leader can skip a whole term at a time.
   */
  protected handleAppendEntries(m: Message): void {
    const index = m.index ?? 0;
    if (index < this.raftLog.committed) {
      this.send({
        type: 'MsgAppResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: this.raftLog.committed,
      });
      return;
    }
    const lastNew = this.raftLog.maybeAppend(index, m.logTerm ?? 0, m.commit ?? 0, m.entries ?? []);
    if (lastNew !== undefined) {
      this.send({ type: 'MsgAppResp', from: this.id, to: m.from, term: this.term, index: lastNew });
      return;
    }
    const [hintIndex, hintTerm] = this.raftLog.findConflictByTerm(
      Math.min(index, this.raftLog.lastIndex()),
      m.logTerm ?? 0,
    );
    this.send({
      type: 'MsgAppResp',
      from: this.id,
      to: m.from,
      term: this.term,
      index,
      reject: true,
      rejectHint: hintIndex,
      logTerm: hintTerm,
    });
  }

  private handleHeartbeat(m: Message): void {
    this.raftLog.commitTo(Math.min(m.commit ?? 0, this.raftLog.lastIndex()));
    const resp: Message = { type: 'MsgHeartbeatResp', from: this.id, to: m.from, term: this.term };
    if (m.context !== undefined) resp.context = m.context;
    this.send(resp);
  }

  private handleSnapshot(m: Message): void {
    const s = m.snapshot;
    if (s === undefined) return;
    if (this.restore(s)) {
      this.send({
        type: 'MsgAppResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: this.raftLog.lastIndex(),
      });
    } else {
      this.send({
        type: 'MsgAppResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index: this.raftLog.committed,
      });
    }
  }

  /** Installs a snapshot from the leader (Raft section 7); false if it brings nothing new. */
  private restore(s: Snapshot): boolean {
    const { index, term, confState } = s.metadata;
    if (index <= this.raftLog.committed) return false;
    // The snapshot's membership may predate our own addition (the host's latest snapshot was
    // taken before it): that is fine, the addLearner entry follows in the log and we never
    // campaign until it is applied and we are promoted.
    if (this.raftLog.matchTerm(index, term)) {
      // We already have the snapshot's last entry: just fast-forward the commit.
      this.raftLog.commitTo(index);
      return false;
    }
    this.raftLog.restore(s);
    this.restoreConfig(confState);
    return true;
  }

  // ---------------------------------------------------------------------------------------------
  // Proposals

  /** Appends `entries` (terms and indexes assigned here) to the leader's log. */
  private appendEntries(entries: Entry[]): boolean {
    const li = this.raftLog.lastIndex();
    const ents = entries.map((e, i) => ({ ...e, term: this.term, index: li + 1 + i }));
    const size = entriesSize(ents);
    // Empty entries (the leader's no-op) are never refused, so a leader can always make progress.
    if (this.uncommittedSize > 0 && size > 0 && this.uncommittedSize + size > this.maxUncommittedSize)
      return false;
    this.uncommittedSize += size;
    this.raftLog.append(ents);
    // The leader counts itself only once the host has made these entries durable (selfDurable),
    // so its appends may go out while it is still writing them (thesis 10.2.1, etcd's async
    // storage writes): a commit index it sends is then always held by a quorum's disks.
    return true;
  }

  /**
   * Called by advance(): the host has persisted what the Ready carried, so the leader counts its
   * own log up to what is now durable. A single voter commits only here.
   */
  selfDurable(): void {
    if (this.role !== 'leader') return;
    const self = this.prs.get(this.id);
    if (self === undefined || !self.maybeUpdate(this.raftLog.durableLastIndex())) return;
    if (this.commitAndRelease()) this.bcastAppend();
  }

  /** Proposal path shared by local and forwarded proposals. */
  proposeEntries(entries: Entry[]): ProposeError | null {
    if (entries.length === 0) return null;
    if (this.role === 'follower') {
      if (this.lead === null) return 'ProposalDropped';
      this.send({ type: 'MsgProp', from: this.id, to: this.lead, term: 0, entries });
      return null;
    }
    if (this.role !== 'leader') return 'ProposalDropped';
    // A leader that applied its own removal must not extend the log.
    if (!this.prs.has(this.id)) return 'ProposalDropped';
    if (this.leadTransferee !== null) return 'TransferInProgress';
    // Until this leader commits an entry of its own term, a change of a predecessor may be pending.
    const refused = refuseConfChanges(
      entries,
      this.voters,
      this.learners,
      () => this.pendingConfIndex > this.raftLog.applied || !this.committedEntryInCurrentTerm(),
    );
    if (refused !== null) return refused;
    const first = this.raftLog.lastIndex() + 1;
    if (!this.appendEntries(entries)) return 'ProposalDropped';
    entries.forEach((e, i) => {
      if (e.type === 'confChange') this.pendingConfIndex = first + i;
    });
    this.bcastAppend();
    return null;
  }

  // ---------------------------------------------------------------------------------------------
  // ReadIndex

  private handleReadIndex(m: Message): void {
    // Thesis 6.4: the commit index is only known to be up to date once this leader has committed
    // an entry of its own term; until then the read waits. A single voter too: it commits its
    // first entry only once that is durable, and a commit index it had not synced before a
    // restart may lag what it had committed (and answered) before.
    if (!this.committedEntryInCurrentTerm()) {
      this.pendingReadIndexMessages.push(m);
      return;
    }
    this.startReadIndexRound(m);
  }

  private startReadIndexRound(m: Message): void {
    if (this.voters.size === 1 && this.voters.has(this.id)) {
      this.respondToReadIndex(m, this.raftLog.committed);
      return;
    }
    const ctx = m.context ?? '';
    this.readOnly.addRequest(this.raftLog.committed, m);
    this.readOnly.recvAck(this.id, ctx);
    for (const id of this.sortedPeers()) this.sendHeartbeat(id, ctx);
  }

  private releasePendingReadIndexMessages(): void {
    if (this.pendingReadIndexMessages.length === 0 || !this.committedEntryInCurrentTerm()) return;
    const pending = this.pendingReadIndexMessages;
    this.pendingReadIndexMessages = [];
    for (const m of pending) this.startReadIndexRound(m);
  }

  private respondToReadIndex(req: Message, index: Index): void {
    const context = req.context ?? '';
    if (req.from === this.id) {
      this.readStates.push({ index, context });
    } else {
      this.send({ type: 'MsgReadIndexResp', from: this.id, to: req.from, term: this.term, index, context });
    }
  }

  // ---------------------------------------------------------------------------------------------
  // Leadership transfer (thesis 3.10)

  private handleTransferLeader(transferee: NodeId, pr: Progress): void {
    if (pr.isLearner) return;
    const last = this.leadTransferee;
    if (last !== null) {
      if (last === transferee) return;
      this.abortLeaderTransfer();
    }
    if (transferee === this.id) return;
    // The transfer must finish within an election timeout or it is abandoned (tickHeartbeat).
    this.electionElapsed = 0;
    this.leadTransferee = transferee;
    if (pr.match === this.raftLog.lastIndex()) this.sendTimeoutNow(transferee);
    else this.sendAppend(transferee);
  }

  abortLeaderTransfer(): void {
    this.leadTransferee = null;
  }

  // ---------------------------------------------------------------------------------------------
  // Membership

  /**
   * Applies a committed conf change (called when the host applies the entry, as in etcd). The
   * quorum changes immediately, so the commit index is rechecked.
   */
  applyConfChange(cc: ConfChange): ConfState {
    const before = new Set(this.prs.keys());
    this.restoreConfig(withConfChange(this.voters, this.learners, cc));
    const cs = this.confState();
    if (this.role === 'leader') leaderAfterConfChange(this.confChangeLeader(), before);
    return cs;
  }

  /** The leader's side of an applied conf change, as confChange.ts drives it. */
  private confChangeLeader(): ConfChangeLeader {
    return {
      self: this.id,
      isMember: (id) => this.prs.has(id),
      isVoter: (id) => this.voters.has(id),
      transferee: () => this.leadTransferee,
      stepDown: () => {
        this.bcastHeartbeat();
        this.becomeFollower(this.term, null);
      },
      commit: () => this.commitAndRelease(),
      broadcastAppend: () => this.bcastAppend(),
      peers: () => this.sortedPeers(),
      sendAppend: (to, sendIfEmpty) => {
        this.maybeSendAppend(to, sendIfEmpty);
      },
      abortTransfer: () => this.abortLeaderTransfer(),
    };
  }

  /** Replaces the membership by `cs`, keeping the progress of members that stay. */
  private restoreConfig(cs: ConfState): void {
    switchConfig(this, cs, {
      next: this.raftLog.lastIndex() + 1,
      maxInflight: this.maxInflight,
      self: this.id,
      selfMatch: () => this.raftLog.durableLastIndex(),
    });
  }

  confState(): ConfState {
    return { voters: [...this.voters].sort(), learners: [...this.learners].sort() };
  }

  // ---------------------------------------------------------------------------------------------
  // Host reports

  reportUnreachable(to: NodeId): void {
    const pr = this.prs.get(to);
    if (this.role !== 'leader' || pr === undefined) return;
    // Optimistic replication to an unreachable peer is wasted; probe until it answers again.
    if (pr.state === 'replicate') pr.becomeProbe();
  }

  reportSnapshot(to: NodeId, ok: boolean): void {
    const pr = this.prs.get(to);
    if (this.role !== 'leader' || pr === undefined || pr.state !== 'snapshot') return;
    if (!ok) pr.pendingSnapshot = 0;
    // Either way wait for the follower's answer (or the next heartbeat) before sending again.
    pr.becomeProbe();
    pr.msgAppFlowPaused = true;
  }

  status(applied: Index): Status {
    const st: Status = {
      id: this.id,
      term: this.term,
      vote: this.vote,
      commit: this.raftLog.committed,
      applied,
      lastIndex: this.raftLog.lastIndex(),
      firstIndex: this.raftLog.firstIndex(),
      snapshotIndex: this.raftLog.snapshot().metadata.index,
      role: this.role,
      leader: this.lead,
      confState: this.confState(),
      leadTransferee: this.leadTransferee,
    };
    if (this.role === 'leader') {
      const progress: Record<NodeId, ReturnType<Progress['toStatus']>> = {};
      for (const [id, pr] of this.prs) progress[id] = pr.toStatus();
      st.progress = progress;
    }
    return st;
  }
}

/**
 * Cheap structural checks on what arrives from the network, so a corrupt message is dropped
 * instead of corrupting the log: MsgApp entries must follow `index` contiguously with terms that
 * never decrease and never exceed the message's term.
 */
function wellFormed(m: Message): boolean {
  if (!Number.isInteger(m.term) || m.term < 0) return false;
  // Term 0 marks a forwarded request, exempt from the term check; any other message without a
  // term would bypass it (a heartbeat could commit unreplicated entries, a snapshot reset the term).
  if (m.term === 0 && m.type !== 'MsgProp' && m.type !== 'MsgReadIndex' && m.type !== 'MsgTransferLeader') {
    return false;
  }
  if (m.type === 'MsgApp') {
    let prev = m.index ?? 0;
    let prevTerm = m.logTerm ?? 0;
    for (const e of m.entries ?? []) {
      if (e.index !== prev + 1 || e.term < prevTerm || e.term > m.term) return false;
      prev = e.index;
      prevTerm = e.term;
    }
  }
  return true;
}
