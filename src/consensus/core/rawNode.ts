// RaftCore: the whole API a host needs (etcd rawnode.go). No method awaits, sleeps, reads a clock
// or does I/O; everything the core wants done comes out of ready().
//
// The host loop, in this order:
//   const rd = core.ready();
//   1. persist rd.snapshot, rd.entries and rd.hardState durably in one synced write;
//   2. mirror them into the MemoryStorage the core reads, *before* advance():
//        if (rd.snapshot) storage.applySnapshot(rd.snapshot);
//        storage.append(rd.entries);
//        if (rd.hardState) storage.setHardState(rd.hardState);
//      (RaftCore never writes to the storage itself: the storage must only ever hold what is on disk.)
//      rd.messagesBeforePersist may be sent before or while writing (a leader's appends);
//   3. send rd.messages (call reportUnreachable / reportSnapshot as sends fail or finish);
//   4. apply rd.snapshot (if any) then rd.committedEntries in order; for a `confChange` entry call
//      core.applyConfChange(JSON.parse(entry.data)) as you apply it;
//   5. core.advance().
// ready() must be followed by advance() before the next ready() (hasReady() is false meanwhile).
// Inputs (step, tick, propose...) may arrive between ready() and advance(); advance() only
// acknowledges what that Ready carried.

import type { CoreStorage, ProposeError, RaftConfig, RawNode } from '../api.ts';
import type {
  ConfChange,
  ConfState,
  HardState,
  Index,
  Message,
  NodeId,
  Ready,
  SoftState,
  Status,
} from '../types.ts';
import { entriesSize } from './entrySize.ts';
import { Raft } from './raft.ts';

/** Builds the Raft state machine; tests and the simulator pass one to inject a subclass. */
export type RaftFactory = (config: RaftConfig) => Raft;

function sameHardState(a: HardState, b: HardState): boolean {
  return a.term === b.term && a.vote === b.vote && a.commit === b.commit;
}

export class RaftCore implements RawNode {
  readonly raft: Raft;
  readonly storage: CoreStorage;
  private prevSoftState: SoftState;
  private prevHardState: HardState;
  /** The Ready handed out and not yet advanced. */
  private inFlight: Ready | null = null;

  constructor(config: RaftConfig, factory: RaftFactory = (c) => new Raft(c)) {
    this.raft = factory(config);
    this.storage = config.storage;
    this.prevSoftState = this.raft.softState();
    // What storage already holds needs no persisting: only changes from it go into a Ready.
    this.prevHardState = config.storage.initialState().hardState;
  }

  tick(): void {
    this.raft.tick();
  }

  step(msg: Message): void {
    this.raft.step(msg);
  }

  propose(data: string): ProposeError | null {
    return this.raft.proposeEntries([{ term: 0, index: 0, type: 'normal', data }]);
  }

  proposeConfChange(change: ConfChange): ProposeError | null {
    return this.raft.proposeEntries([
      { term: 0, index: 0, type: 'confChange', data: JSON.stringify(change) },
    ]);
  }

  applyConfChange(change: ConfChange): ConfState {
    return this.raft.applyConfChange(change);
  }

  readIndex(ctx: string): void {
    this.raft.step({ type: 'MsgReadIndex', from: this.raft.id, to: this.raft.id, term: 0, context: ctx });
  }

  transferLeadership(to: NodeId): void {
    // As in etcd, the message comes "from" the transferee.
    this.raft.step({ type: 'MsgTransferLeader', from: to, to: this.raft.id, term: 0 });
  }

  campaign(): void {
    this.raft.hup(false);
  }

  hasReady(): boolean {
    if (this.inFlight !== null) return false;
    const r = this.raft;
    const ss = r.softState();
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) return true;
    if (!sameHardState(r.hardState(), this.prevHardState)) return true;
    if (r.raftLog.unstable.snapshot !== null) return true;
    if (r.raftLog.unstable.entries.length > 0) return true;
    if (r.msgs.length > 0 || r.readStates.length > 0) return true;
    return r.raftLog.hasNextCommittedEntries();
  }

  ready(): Ready {
    if (this.inFlight !== null) throw new Error('RaftCore.ready: the previous Ready was not advanced');
    const r = this.raft;
    // The term this node has on disk: prevHardState is what the last advanced Ready persisted.
    const durableTerm = this.prevHardState.term;
    const early: Message[] = [];
    const late: Message[] = [];
    for (const m of r.msgs) (this.maySendBeforePersist(m, durableTerm) ? early : late).push(m);
    const rd: Ready = {
      entries: r.raftLog.unstableEntries(),
      committedEntries: r.raftLog.nextCommittedEntries(),
      messagesBeforePersist: early,
      messages: late,
      readStates: r.readStates,
    };
    r.msgs = [];
    r.readStates = [];
    const ss = r.softState();
    if (ss.leader !== this.prevSoftState.leader || ss.role !== this.prevSoftState.role) {
      rd.softState = ss;
      this.prevSoftState = ss;
    }
    const hs = r.hardState();
    if (!sameHardState(hs, this.prevHardState)) rd.hardState = hs;
    const snap = r.raftLog.unstable.snapshot;
    if (snap !== null) rd.snapshot = snap;
    this.inFlight = rd;
    return rd;
  }

  /**
   * A leader's appends, heartbeats and snapshots need nothing of this Ready on disk (thesis
   * 10.2.1): the leader counts itself toward a commit only once its write is durable (see
   * Raft.selfDurable), and an entry it loses in a crash is one no quorum held. Their term must
   * already be durable, though: a leader whose election is not yet on disk (a single voter elects
   * itself within one Ready) could restart in the old term, win the same term again and send
   * different entries at the same indexes to a follower or learner that kept the first ones.
   * Everything else (votes, append and heartbeat answers) waits for the write.
   */
  protected maySendBeforePersist(m: Message, durableTerm: number): boolean {
    if (m.term !== durableTerm) return false;
    return m.type === 'MsgApp' || m.type === 'MsgHeartbeat' || m.type === 'MsgSnap';
  }

  /**
   * The heartbeats and heartbeat answers made since the Ready in flight was handed out (a tick or
   * a heartbeat stepped between ready() and advance()), taken out of the next Ready so the host
   * sends them while that Ready's write is still going on: a slow fsync must not hold a leader's
   * heartbeats, or its followers' answers, back past an election timeout (etcd sends both from its
   * raft loop while its storage writes; neither claims anything about the log). Only those of the
   * durable term, for the reason maySendBeforePersist gives.
   */
  takeHeartbeats(): Message[] {
    const r = this.raft;
    const durableTerm = this.prevHardState.term;
    const beats: Message[] = [];
    const rest: Message[] = [];
    for (const m of r.msgs) {
      const beat = m.type === 'MsgHeartbeat' || m.type === 'MsgHeartbeatResp';
      (beat && m.term === durableTerm ? beats : rest).push(m);
    }
    if (beats.length > 0) r.msgs = rest;
    return beats;
  }

  /**
   * The host has persisted and applied everything the last Ready carried. With `snapshotApplied`
   * false, its snapshot is persisted but still being installed (a large one takes minutes, and the
   * host keeps ticking, answering heartbeats and voting meanwhile): no committed entry after it is
   * handed out until the host calls snapshotApplied (etcd applies a snapshot on its own goroutine
   * the same way, its raft loop running on).
   */
  advance(options: { snapshotApplied?: boolean } = {}): void {
    const rd = this.inFlight;
    if (rd === null) throw new Error('RaftCore.advance: no Ready in flight');
    this.inFlight = null;
    const log = this.raft.raftLog;
    if (rd.hardState) this.prevHardState = rd.hardState;
    if (rd.snapshot) {
      log.unstable.stableSnapTo(rd.snapshot.metadata.index);
      if (options.snapshotApplied !== false) this.snapshotApplied(rd.snapshot.metadata.index);
    }
    // An input between ready() and advance() may have replaced a tail of what this Ready wrote (a
    // new leader overwriting entries its predecessor sent and lost). The prefix that still matches
    // by index and term is the same entries, now durable: mark that stable, or the next Ready would
    // rewrite it, committed entries included.
    for (let k = rd.entries.length - 1; k >= 0; k--) {
      const e = rd.entries[k]!;
      if (log.unstable.maybeTerm(e.index) !== e.term) continue;
      log.unstable.stableTo(e.index, e.term);
      break;
    }
    this.raft.selfDurable();
    const lastApplied = rd.committedEntries[rd.committedEntries.length - 1];
    if (lastApplied) {
      log.appliedTo(lastApplied.index);
      if (this.raft.role === 'leader') {
        this.raft.uncommittedSize = Math.max(0, this.raft.uncommittedSize - entriesSize(rd.committedEntries));
      }
    }
  }

  /**
   * The host has installed the snapshot at `index` that an earlier advance() left unapplied. An
   * index past the log's snapshot would skip committed entries never handed out: refused.
   */
  snapshotApplied(index: Index): void {
    const log = this.raft.raftLog;
    const snapshotIndex = log.firstIndex() - 1;
    if (index > snapshotIndex) {
      throw new Error(`RaftCore.snapshotApplied: ${index} is past the log's snapshot at ${snapshotIndex}`);
    }
    if (index > log.applied) log.applied = index;
  }

  reportUnreachable(to: NodeId): void {
    this.raft.reportUnreachable(to);
  }

  reportSnapshot(to: NodeId, ok: boolean): void {
    this.raft.reportSnapshot(to, ok);
  }

  status(): Status {
    return this.raft.status(this.raft.raftLog.applied);
  }
}
