// A node's simulated durable disk: the project's MemoryLogStore (same rules as the LevelDB store),
// driven synchronously. One `save` is one atomic synced batch; whatever the host has not saved
// when it crashes is gone, and a restart rebuilds the node from `load()`.
//
// Beside the store, the disk keeps a mirror of the log in which each entry carries the chained
// digest of the log prefix ending at it: the checker tests Log Matching with it in O(1) per entry,
// and every load is compared against the mirror, so a store that loses or alters a saved entry is
// caught too.

import { MemoryLogStore } from '../../src/consensus/memoryLogStore.ts';
import type { Entry, HardState, Snapshot } from '../../src/consensus/types.ts';
import { chainDigest, EMPTY_LOG_DIGEST } from './digest.ts';
import { parseImage } from './stateMachine.ts';

export interface StoredEntry {
  entry: Entry;
  digest: number;
}

export interface SaveEffect {
  /** Entries that were durable before this save and are not any more (truncated or replaced). */
  removed: StoredEntry[];
  /** Entries written by this save, with their prefix digests. */
  written: StoredEntry[];
  snapshotInstalled: boolean;
}

export interface LoadedLog {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

export class SimDisk {
  private readonly store = new MemoryLogStore();
  hardState: HardState = { term: 0, vote: null, commit: 0 };
  snapshot: Snapshot | null = null;
  snapshotDigest = EMPTY_LOG_DIGEST;
  /** Mirror of the stored entries, contiguous from snapshotIndex + 1. */
  log: StoredEntry[] = [];

  constructor(
    /** The state digest a received snapshot's data holds (a host reads a snapshot file's bytes). */
    private readonly imageDigest: (data: string) => number = (data) => parseImage(data).digest,
  ) {}

  get snapshotIndex(): number {
    return this.snapshot?.metadata.index ?? 0;
  }

  get snapshotTerm(): number {
    return this.snapshot?.metadata.term ?? 0;
  }

  get lastIndex(): number {
    return this.snapshotIndex + this.log.length;
  }

  /** The stored entry at `index`, or undefined when compacted or beyond the end. */
  at(index: number): StoredEntry | undefined {
    return this.log[index - this.snapshotIndex - 1];
  }

  /** Digest of the prefix ending at `index`, when this disk still knows it. */
  digestAt(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotDigest;
    return this.at(index)?.digest;
  }

  termAt(index: number): number | undefined {
    if (index === this.snapshotIndex) return this.snapshotTerm;
    return this.at(index)?.entry.term;
  }

  /** One synced batch (RaftLogStore.save). Throws LogStoreInvariantError if the store refuses it. */
  save(update: { hardState?: HardState; entries?: Entry[]; snapshot?: Snapshot }): SaveEffect {
    this.store.saveSync(update);
    const effect: SaveEffect = { removed: [], written: [], snapshotInstalled: false };
    if (update.snapshot) {
      const { index, term } = update.snapshot.metadata;
      // As the store does: entries after the snapshot survive only if the log agrees with it at
      // its index; otherwise they come from a history the leader did not confirm.
      const keepLater = index < this.lastIndex && this.termAt(index) === term;
      if (!keepLater) effect.removed.push(...this.log);
      this.log = keepLater ? this.log.slice(index - this.snapshotIndex) : [];
      this.snapshot = cloneSnapshot(update.snapshot);
      this.snapshotDigest = this.imageDigest(update.snapshot.data);
      effect.snapshotInstalled = true;
    }
    const entries = update.entries ?? [];
    if (entries.length > 0) {
      const first = entries[0]!.index;
      const keep = first - this.snapshotIndex - 1;
      effect.removed.push(...this.log.slice(keep));
      this.log.length = keep;
      let previous = this.digestAt(first - 1)!;
      for (const e of entries) {
        const stored = { entry: { ...e }, digest: chainDigest(previous, e) };
        this.log.push(stored);
        effect.written.push(stored);
        previous = stored.digest;
      }
    }
    if (update.hardState) this.hardState = { ...update.hardState };
    return effect;
  }

  /** Log compaction: keep `snapshot` (taken locally at an applied index) and drop entries up to it. */
  compact(snapshot: Snapshot): void {
    const index = snapshot.metadata.index;
    this.store.compactSync(snapshot);
    const digest = this.digestAt(index)!;
    this.log = this.log.slice(index - this.snapshotIndex);
    this.snapshot = cloneSnapshot(snapshot);
    this.snapshotDigest = digest;
  }

  /** What a restart reads back; throws if the store's answer differs from what was saved. */
  load(): LoadedLog {
    const loaded = this.store.loadSync();
    const hs = loaded.hardState;
    const same =
      hs.term === this.hardState.term &&
      hs.vote === this.hardState.vote &&
      hs.commit === this.hardState.commit &&
      (loaded.snapshot?.metadata.index ?? 0) === this.snapshotIndex &&
      loaded.snapshot?.data === this.snapshot?.data &&
      loaded.entries.length === this.log.length &&
      loaded.entries.every((e, i) => {
        const m = this.log[i]!.entry;
        return e.index === m.index && e.term === m.term && e.type === m.type && e.data === m.data;
      });
    if (!same) throw new Error('the log store loaded something other than what was saved');
    return loaded;
  }
}

export function cloneSnapshot(s: Snapshot): Snapshot {
  return {
    metadata: {
      index: s.metadata.index,
      term: s.metadata.term,
      confState: { voters: [...s.metadata.confState.voters], learners: [...s.metadata.confState.learners] },
    },
    data: s.data,
  };
}
