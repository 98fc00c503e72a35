// The core's synchronous view of stable storage (etcd storage.go MemoryStorage). The host keeps it
// equal to what is durable: after persisting a Ready it calls applySnapshot / append / setHardState
// here, before advance(). ents[0] is a dummy holding the index and term of the last compacted
// entry (the snapshot point), so term(firstIndex()-1) is always answerable.

import type { CoreStorage } from '../api.ts';
import type { ConfState, Entry, HardState, Index, Snapshot, Term } from '../types.ts';
import { limitSize } from './entrySize.ts';

export class StorageCompactedError extends Error {
  constructor(index: Index, firstIndex: Index) {
    super(`MemoryStorage: index ${index} is compacted (first index ${firstIndex})`);
    this.name = 'StorageCompactedError';
  }
}

export class SnapshotOutOfDateError extends Error {
  constructor(index: Index, current: Index) {
    super(`MemoryStorage: snapshot at ${index} is not newer than ${current}`);
    this.name = 'SnapshotOutOfDateError';
  }
}

function copyConfState(cs: ConfState): ConfState {
  return { voters: [...cs.voters], learners: [...cs.learners] };
}

/**
 * The entry that stands for the snapshot's (or the compaction's) last index. Its keys come in the
 * order every other entry's do (proposals, the codec, the log store): V8 gives objects one hidden
 * class per key order, and a log mixing two shapes sends the core's loops over it into polymorphic
 * code.
 */
function placeholderEntry(term: Term, index: Index): Entry {
  return { term, index, type: 'normal', data: '' };
}

export class MemoryStorage implements CoreStorage {
  private hardState: HardState = { term: 0, vote: null, commit: 0 };
  private snap: Snapshot;
  private ents: Entry[];

  /**
   * `initial` seeds the storage with a snapshot, e.g. a bootstrap snapshot (see bootstrapSnapshot)
   * or the one loaded from disk on restart. Without it the storage is empty with no members: a node
   * that joins an existing cluster starts so and learns the membership from the leader's snapshot.
   */
  constructor(initial?: Snapshot) {
    this.snap = initial ?? {
      metadata: { index: 0, term: 0, confState: { voters: [], learners: [] } },
      data: '',
    };
    this.ents = [placeholderEntry(this.snap.metadata.term, this.snap.metadata.index)];
    if (initial) this.hardState = { term: initial.metadata.term, vote: null, commit: initial.metadata.index };
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return { hardState: { ...this.hardState }, confState: copyConfState(this.snap.metadata.confState) };
  }

  setHardState(hs: HardState): void {
    this.hardState = { ...hs };
  }

  private get offset(): Index {
    return this.ents[0]!.index;
  }

  firstIndex(): Index {
    return this.offset + 1;
  }

  lastIndex(): Index {
    return this.offset + this.ents.length - 1;
  }

  entries(lo: Index, hi: Index, maxSize: number): Entry[] {
    if (lo <= this.offset) throw new StorageCompactedError(lo, this.firstIndex());
    if (hi > this.lastIndex() + 1) {
      throw new Error(`MemoryStorage.entries: hi ${hi} beyond last index ${this.lastIndex()}`);
    }
    if (lo >= hi) return [];
    return limitSize(this.ents.slice(lo - this.offset, hi - this.offset), maxSize);
  }

  term(i: Index): number {
    if (i < this.offset) throw new StorageCompactedError(i, this.firstIndex());
    const e = this.ents[i - this.offset];
    if (e === undefined) throw new Error(`MemoryStorage.term: ${i} beyond last index ${this.lastIndex()}`);
    return e.term;
  }

  snapshot(): Snapshot {
    return this.snap;
  }

  /** Replaces the whole log by a snapshot received from the leader. */
  applySnapshot(s: Snapshot): void {
    if (s.metadata.index <= this.snap.metadata.index)
      throw new SnapshotOutOfDateError(s.metadata.index, this.snap.metadata.index);
    this.snap = { metadata: { ...s.metadata, confState: copyConfState(s.metadata.confState) }, data: s.data };
    this.ents = [placeholderEntry(s.metadata.term, s.metadata.index)];
  }

  /**
   * Records a snapshot the host took of its state machine at applied index `index`, whose
   * membership is `confState` (as returned by RaftCore.applyConfChange / status().confState).
   * Does not drop entries: call compact() for that.
   */
  createSnapshot(index: Index, confState: ConfState, data: string): Snapshot {
    if (index <= this.snap.metadata.index) throw new SnapshotOutOfDateError(index, this.snap.metadata.index);
    if (index > this.lastIndex()) {
      throw new Error(`MemoryStorage.createSnapshot: ${index} beyond last index ${this.lastIndex()}`);
    }
    this.snap = {
      metadata: { index, term: this.ents[index - this.offset]!.term, confState: copyConfState(confState) },
      data,
    };
    return this.snap;
  }

  /**
   * Drops entries up to and including `compactIndex`. It must not pass the latest snapshot: a
   * follower that needs those entries is sent that snapshot, which must cover them.
   */
  compact(compactIndex: Index): void {
    if (compactIndex <= this.offset) return;
    if (compactIndex > this.snap.metadata.index) {
      throw new Error(
        `MemoryStorage.compact: ${compactIndex} is beyond the latest snapshot ${this.snap.metadata.index}`,
      );
    }
    const i = compactIndex - this.offset;
    const dummy = this.ents[i]!;
    this.ents = [placeholderEntry(dummy.term, dummy.index), ...this.ents.slice(i + 1)];
  }

  /**
   * Appends entries the host has persisted. An entry at an index already present replaces it and
   * everything after it (the follower truncating a conflicting suffix); entries already compacted
   * are skipped.
   */
  append(entries: Entry[]): void {
    if (entries.length === 0) return;
    const first = this.firstIndex();
    const last = entries[entries.length - 1]!.index;
    if (last < first) return;
    const ents = entries[0]!.index < first ? entries.slice(first - entries[0]!.index) : entries;
    const at = ents[0]!.index - this.offset;
    if (at > this.ents.length) {
      throw new Error(
        `MemoryStorage.append: missing log entry before ${ents[0]!.index} (last ${this.lastIndex()})`,
      );
    }
    // In place, as etcd's append into the slice's spare capacity: a new array each time (slice and
    // concat) copied the whole log, thousands of entries between compactions, on every Ready.
    if (at < this.ents.length) this.ents.length = at;
    for (const e of ents) this.ents.push(e);
  }
}

/**
 * The snapshot every founding member of a new cluster starts from: index 1, term 1, the founding
 * voters, and an empty state machine (data ''). Starting at index 1 rather than 0 means a node
 * that joins later, with an empty log, can only be brought up to date with a snapshot, so it always
 * learns the full membership; replaying the log from index 1 would miss the founding voters.
 */
export function bootstrapSnapshot(voters: string[]): Snapshot {
  return { metadata: { index: 1, term: 1, confState: { voters: [...voters], learners: [] } }, data: '' };
}
