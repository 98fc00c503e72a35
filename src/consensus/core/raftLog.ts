// The log as the core sees it (etcd log.go): what the host has made durable (`storage`) followed by
// what it has not yet (`unstable`), plus the commit and applied indexes.
//
// `maybeAppend` and `findConflict` are public and deliberately overridable: the simulator builds
// broken variants (e.g. a follower that truncates entries that already match) by subclassing
// RaftLog and returning the subclass from Raft.createLog.

import type { CoreStorage } from '../api.ts';
import type { Entry, Index, Snapshot, Term } from '../types.ts';
import { limitSize } from './entrySize.ts';
import { Unstable } from './unstable.ts';

export class RaftLog {
  readonly storage: CoreStorage;
  readonly unstable: Unstable;
  /** Highest index known to be committed (on a quorum's stable storage). */
  committed: Index;
  /** Highest index the host has applied (confirmed by advance()). */
  applied: Index;

  constructor(storage: CoreStorage) {
    this.storage = storage;
    const first = storage.firstIndex();
    const last = storage.lastIndex();
    this.unstable = new Unstable(last + 1);
    this.committed = first - 1;
    this.applied = first - 1;
  }

  firstIndex(): Index {
    return this.unstable.maybeFirstIndex() ?? this.storage.firstIndex();
  }

  lastIndex(): Index {
    return this.unstable.maybeLastIndex() ?? this.storage.lastIndex();
  }

  /**
   * The last index of this log that is on stable storage: the storage holds only what is durable,
   * and an entry it holds from `unstable.offset` on is being replaced by the unstable tail.
   */
  durableLastIndex(): Index {
    return Math.min(this.storage.lastIndex(), this.unstable.offset - 1);
  }

  lastTerm(): Term {
    return this.term(this.lastIndex());
  }

  /**
   * Term of entry i, or 0 when i is outside [firstIndex()-1, lastIndex()] (compacted or not yet
   * written): 0 never matches a real term, so callers comparing terms behave like etcd's
   * zeroTermOnOutOfBounds.
   */
  term(i: Index): Term {
    const dummy = this.firstIndex() - 1;
    if (i < dummy || i > this.lastIndex()) return 0;
    const t = this.unstable.maybeTerm(i);
    if (t !== undefined) return t;
    return this.storage.term(i);
  }

  isCompacted(i: Index): boolean {
    return i < this.firstIndex() - 1;
  }

  matchTerm(i: Index, t: Term): boolean {
    if (i < this.firstIndex() - 1 || i > this.lastIndex()) return false;
    return this.term(i) === t;
  }

  /**
   * Follower side of MsgApp (Raft Figure 2, AppendEntries receiver steps 2-5). Returns the index of
   * the last new entry when the log matched at (index, logTerm), or undefined on a mismatch.
   */
  maybeAppend(index: Index, logTerm: Term, committed: Index, ents: Entry[]): Index | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    const ci = this.findConflict(ents);
    if (ci !== 0) {
      if (ci <= this.committed) {
        throw new Error(`RaftLog: entry ${ci} conflicts with committed entry (committed ${this.committed})`);
      }
      this.append(ents.slice(ci - (index + 1)));
    }
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }

  /**
   * The index of the first entry of `ents` whose term differs from ours, or that we do not have;
   * 0 if every entry is already present. Only a real conflict may truncate: a stale MsgApp whose
   * entries all match must not cut off entries appended after them (Figure 2 step 3).
   */
  findConflict(ents: Entry[]): Index {
    for (const e of ents) {
      if (!this.matchTerm(e.index, e.term)) return e.index;
    }
    return 0;
  }

  /**
   * For fast backtracking: the largest index <= `index` whose term is <= `term`, with that term.
   * A leader whose log has `term` at some index cannot match us anywhere above the returned index.
   */
  findConflictByTerm(index: Index, term: Term): [Index, Term] {
    let i = index;
    for (; i >= this.firstIndex() - 1 && i > 0; i--) {
      const t = this.term(i);
      if (t <= term) return [i, t];
    }
    // Compacted below the match point: the caller probes from here and may end up sending a snapshot.
    return [i, 0];
  }

  append(ents: Entry[]): Index {
    if (ents.length === 0) return this.lastIndex();
    const after = ents[0]!.index - 1;
    if (after < this.committed) {
      throw new Error(`RaftLog.append: index ${after + 1} is at or below committed ${this.committed}`);
    }
    this.unstable.truncateAndAppend(ents);
    return this.lastIndex();
  }

  unstableEntries(): Entry[] {
    return this.unstable.entries.slice();
  }

  /** Entries in [lo, hi) with at most maxSize bytes of data (never fewer than one). */
  slice(lo: Index, hi: Index, maxSize: number = Number.POSITIVE_INFINITY): Entry[] {
    if (lo > hi) throw new Error(`RaftLog.slice: lo ${lo} > hi ${hi}`);
    const first = this.firstIndex();
    if (lo < first) throw new Error(`RaftLog.slice: ${lo} is compacted (first index ${first})`);
    if (hi > this.lastIndex() + 1)
      throw new Error(`RaftLog.slice: ${hi} beyond last index ${this.lastIndex()}`);
    if (lo === hi) return [];
    let ents: Entry[] = [];
    const off = this.unstable.offset;
    if (lo < off) {
      const stored = this.storage.entries(lo, Math.min(hi, off), maxSize);
      // Storage stopped short for size: the unstable part would exceed the budget anyway.
      if (stored.length < Math.min(hi, off) - lo) return stored;
      ents = stored;
    }
    if (hi > off) {
      const un = this.unstable.slice(Math.max(lo, off), hi);
      ents = ents.length > 0 ? ents.concat(un) : un;
    }
    return limitSize(ents, maxSize);
  }

  /** Entries from i to the end, within maxSize bytes. */
  entries(i: Index, maxSize: number): Entry[] {
    if (i > this.lastIndex()) return [];
    return this.slice(i, this.lastIndex() + 1, maxSize);
  }

  /**
   * Raft 5.4.1: a candidate's log is at least as up-to-date as ours if its last term is higher, or
   * equal with a last index at least ours.
   */
  isUpToDate(lastIndex: Index, lastTerm: Term): boolean {
    const ourTerm = this.lastTerm();
    return lastTerm > ourTerm || (lastTerm === ourTerm && lastIndex >= this.lastIndex());
  }

  commitTo(i: Index): void {
    if (i <= this.committed) return;
    if (i > this.lastIndex()) {
      throw new Error(
        `RaftLog.commitTo: ${i} beyond last index ${this.lastIndex()}; log corrupt or truncated`,
      );
    }
    this.committed = i;
  }

  /** Raft 5.4.2: advance commit to `maxIndex` only if that entry is from `term` (the leader's). */
  maybeCommit(maxIndex: Index, term: Term): boolean {
    if (maxIndex > this.committed && this.term(maxIndex) === term) {
      this.commitTo(maxIndex);
      return true;
    }
    return false;
  }

  appliedTo(i: Index): void {
    if (i === 0) return;
    if (i > this.committed || i < this.applied) {
      throw new Error(
        `RaftLog.appliedTo: ${i} outside [applied ${this.applied}, committed ${this.committed}]`,
      );
    }
    this.applied = i;
  }

  /**
   * A snapshot is durable but the host has not applied it yet (RaftCore.advance with
   * snapshotApplied false): the entries after it wait until it is (RaftCore.snapshotApplied).
   */
  snapshotUnapplied(): boolean {
    return this.applied < this.firstIndex() - 1;
  }

  /**
   * Committed entries not yet applied, limited to those already durable: applying an entry the
   * host has not persisted could let a crash forget something the state machine has acted on.
   */
  nextCommittedEntries(): Entry[] {
    if (this.unstable.snapshot !== null || this.snapshotUnapplied()) return [];
    const hi = Math.min(this.committed, this.unstable.offset - 1);
    const lo = Math.max(this.applied + 1, this.firstIndex());
    if (hi < lo) return [];
    return this.slice(lo, hi + 1);
  }

  hasNextCommittedEntries(): boolean {
    if (this.unstable.snapshot !== null || this.snapshotUnapplied()) return false;
    const hi = Math.min(this.committed, this.unstable.offset - 1);
    return hi > this.applied;
  }

  /** The latest snapshot: the one still being installed, else the storage's. */
  snapshot(): Snapshot {
    return this.unstable.snapshot ?? this.storage.snapshot();
  }

  restore(s: Snapshot): void {
    this.committed = s.metadata.index;
    this.unstable.restore(s);
  }
}
