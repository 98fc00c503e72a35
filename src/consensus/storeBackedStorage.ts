// The core's view of the log (CoreStorage) on a node whose log in memory (MemoryStorage) may be
// compacted further than its durable store: a leader that keeps the log after a snapshot file for a
// member catching up from it keeps that log on disk only, and the entries the core sends that member
// are read from the store, synchronously, when the core asks (etcd's raft reads Storage.Entries the
// same way from an application's disk-backed storage). The core stays free of I/O: the reads are
// the host's, answered from the store's own files, and only ever for committed entries, which no
// write changes. So the log kept for that member costs disk, not heap.

import type { CoreStorage } from './api.ts';
import { limitSize, type MemoryStorage, StorageCompactedError } from './core/index.ts';
import type { ConfState, Entry, HardState, Index, Snapshot, Term } from './types.ts';

/**
 * The store's reads block the loop (a point read and a parse per entry): one call reads at most this
 * many bytes of entry data, so a MsgApp built from the store is shorter than one from memory.
 */
const STORE_READ_BYTES = 256 * 1024;

/** Reads of a durable log store that answer at once (LevelLogStore: classic-level's getSync). */
export interface SyncLogReader {
  /** Entries in [lo, hi) as the store holds them now: at most maxSize bytes of data, at least one. */
  entriesSync(lo: Index, hi: Index, maxSize: number): Entry[];
  /** The term of the stored entry `index`. */
  termSync(index: Index): Term;
}

export class StoreBackedStorage implements CoreStorage {
  /** The last index the store no longer serves: it holds (floor, lastIndex]. */
  private floor: Index;
  private floorTerm: Term;
  /** A snapshot file built for a follower (keepSnapshot). */
  private kept: Snapshot | null = null;

  constructor(
    private readonly memory: MemoryStorage,
    /** Null: only the log in memory serves the core. */
    private readonly store: SyncLogReader | null,
  ) {
    this.floor = memory.firstIndex() - 1;
    this.floorTerm = memory.term(this.floor);
  }

  /** Whether the memory may be compacted past the store: the entries between stay readable. */
  get readsStore(): boolean {
    return this.store !== null;
  }

  /**
   * Called before a write that drops the store's log up to `snapshot`'s index (a compaction, a
   * snapshot from the leader): from now on the core reads nothing there. The term of that index is
   * kept, as the core asks the term before its first index and the write may land any moment.
   */
  dropThrough(snapshot: Snapshot): void {
    const { index, term } = snapshot.metadata;
    if (index <= this.floor) return;
    this.floor = index;
    this.floorTerm = term;
  }

  /**
   * The core sends `snapshot` (a file built for a follower) rather than a newer one the memory was
   * compacted to (the tables form, which names no file: another would be built) for as long as the
   * log after it can be read: a transfer cut and retried resumes that file. Null forgets it.
   */
  keepSnapshot(snapshot: Snapshot | null): void {
    this.kept = snapshot;
  }

  /** The index before the first the core can read: the log from there to the memory's is the store's. */
  storeOnlyFloor(): Index {
    return Math.min(this.floor, this.memoryFloor());
  }

  private memoryFloor(): Index {
    return this.memory.firstIndex() - 1;
  }

  initialState(): { hardState: HardState; confState: ConfState } {
    return this.memory.initialState();
  }

  firstIndex(): Index {
    return this.store === null ? this.memory.firstIndex() : this.storeOnlyFloor() + 1;
  }

  lastIndex(): Index {
    return this.memory.lastIndex();
  }

  snapshot(): Snapshot {
    const kept = this.kept;
    if (this.store !== null && kept !== null && kept.metadata.index >= this.storeOnlyFloor()) return kept;
    return this.memory.snapshot();
  }

  term(i: Index): Term {
    if (this.store === null || i >= this.memoryFloor()) return this.memory.term(i);
    if (i < this.floor) throw new StorageCompactedError(i, this.firstIndex());
    return i === this.floor ? this.floorTerm : this.store.termSync(i);
  }

  entries(lo: Index, hi: Index, maxSize: number): Entry[] {
    const memoryFirst = this.memory.firstIndex();
    if (this.store === null || lo >= memoryFirst) return this.memory.entries(lo, hi, maxSize);
    if (lo <= this.floor) throw new StorageCompactedError(lo, this.firstIndex());
    const stored = this.store.entriesSync(lo, Math.min(hi, memoryFirst), Math.min(maxSize, STORE_READ_BYTES));
    // The store stopped short for size: the rest comes in the next message.
    if (hi <= memoryFirst || stored.length < memoryFirst - lo) return stored;
    return limitSize(stored.concat(this.memory.entries(memoryFirst, hi, maxSize)), maxSize);
  }
}
