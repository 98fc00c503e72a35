// In-memory RaftLogStore for the simulator, with the same rules as the LevelDB store
// (logStoreRules.ts). A save is applied whole at the moment it is called, as one synced batch
// would be: a simulated crash keeps every save that was called and loses none of it partly.

import type { RaftLogStore } from './api.ts';
import { limitSize } from './core/index.ts';
import {
  checkLoaded,
  EMPTY_BOUNDS,
  firstIndexOf,
  type LogBounds,
  planCompact,
  planSave,
  type SavePlan,
  type SaveUpdate,
} from './logStoreRules.ts';
import type { Entry, HardState, Index, Snapshot, Term } from './types.ts';

export interface LoadedLog {
  hardState: HardState;
  snapshot: Snapshot | null;
  entries: Entry[];
}

export class MemoryLogStore implements RaftLogStore {
  private bounds: LogBounds = EMPTY_BOUNDS;
  /** entries[i] has index snapshotIndex + 1 + i. */
  private entries: Entry[] = [];
  private snapshot: Snapshot | null = null;
  private closed = false;
  /** Number of successful save/compact calls (lets a simulator count fsyncs). */
  syncCount = 0;

  async load(): Promise<LoadedLog> {
    return this.loadSync();
  }

  async save(update: SaveUpdate): Promise<void> {
    this.saveSync(update);
  }

  async compact(snapshot: Snapshot): Promise<void> {
    this.compactSync(snapshot);
  }

  async close(): Promise<void> {
    this.closed = true;
  }

  loadSync(): LoadedLog {
    this.checkOpen();
    const loaded = {
      hardState: { ...this.bounds.hardState },
      snapshot: this.snapshot ? structuredClone(this.snapshot) : null,
      entries: this.entries.map((e) => ({ ...e })),
    };
    checkLoaded(loaded.hardState, loaded.snapshot, loaded.entries);
    return loaded;
  }

  saveSync(update: SaveUpdate): void {
    this.checkOpen();
    const snapIndex = update.snapshot?.metadata.index;
    this.apply(planSave(this.bounds, update, snapIndex === undefined ? undefined : this.termAt(snapIndex)));
  }

  compactSync(snapshot: Snapshot): void {
    this.checkOpen();
    this.apply(planCompact(this.bounds, snapshot, this.termAt(snapshot.metadata.index)));
  }

  /** The durable state as a new, open store: what survives a crash or a close + reopen. */
  clone(): MemoryLogStore {
    const copy = new MemoryLogStore();
    copy.bounds = { ...this.bounds, hardState: { ...this.bounds.hardState } };
    copy.entries = this.entries.map((e) => ({ ...e }));
    copy.snapshot = this.snapshot ? structuredClone(this.snapshot) : null;
    return copy;
  }

  firstIndex(): Index {
    return firstIndexOf(this.bounds);
  }

  lastIndex(): Index {
    return this.bounds.lastIndex;
  }

  entriesSync(lo: Index, hi: Index, maxSize: number): Entry[] {
    this.checkOpen();
    const first = firstIndexOf(this.bounds);
    if (lo < first || hi > this.bounds.lastIndex + 1) {
      throw new Error(`memory log store holds [${first}, ${this.bounds.lastIndex}], not [${lo}, ${hi})`);
    }
    return limitSize(
      this.entries.slice(lo - first, hi - first).map((e) => ({ ...e })),
      maxSize,
    );
  }

  termSync(index: Index): Term {
    const term = this.termAt(index);
    if (term === undefined) throw new Error(`memory log store does not hold entry ${index}`);
    return term;
  }

  private termAt(index: Index): Term | undefined {
    return this.entries[index - firstIndexOf(this.bounds)]?.term;
  }

  private apply(plan: SavePlan): void {
    // A plan deletes a prefix (covered by a snapshot) and/or a suffix (the stale tail), then its
    // puts continue what survives from the new first index on.
    let first = firstIndexOf(this.bounds);
    for (const { from, to } of plan.deletes) {
      if (from === first) {
        this.entries.splice(0, to - from + 1);
        first = to + 1;
      } else {
        this.entries.length = from - first;
      }
    }
    const base = plan.next.snapshotIndex + 1;
    const firstPut = plan.puts[0];
    if (firstPut) {
      this.entries.length = firstPut.index - base;
      for (const e of plan.puts) this.entries.push({ ...e });
    }
    if (plan.snapshot) this.snapshot = structuredClone(plan.snapshot);
    this.bounds = { ...plan.next, hardState: { ...plan.next.hardState } };
    this.syncCount++;
    const head = this.entries[0];
    if (this.entries.length !== this.bounds.lastIndex - base + 1 || (head && head.index !== base)) {
      throw new Error(`memory log store out of step with its bounds ${JSON.stringify(this.bounds)}`);
    }
  }

  private checkOpen(): void {
    if (this.closed) throw new Error('memory log store is closed');
  }
}
