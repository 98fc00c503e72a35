// The log store the real driver writes to in the host simulation. Every save or compact is one
// synced batch that takes a drawn number of ticks; the simulator completes it at its due tick
// (never while the node is paused), and a crash before then loses it whole, as a power cut loses
// an fsync in progress. The node's other synced writes (its state machine's, its snapshot files)
// queue on the same device (`synced`), in the order they were issued. Completed writes go to the node's SimDisk (the checker's mirror, with the
// MemoryLogStore rules) and, for a share of seeds, to a real LevelLogStore on a temp folder: the
// real store is written only when the write completes, and awaited before anything else happens,
// so its asynchronous I/O cannot reorder a run and each seed replays exactly.

import type { RaftLogStore } from '../../src/consensus/api.ts';
import { readWithinSize } from '../../src/consensus/core/index.ts';
import type { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { LogStoreInvariantError } from '../../src/consensus/logStoreRules.ts';
import type { Entry, HardState, Snapshot } from '../../src/consensus/types.ts';
import type { Checker } from './checker.ts';
import type { SimDisk } from './simDisk.ts';
import { parseImage } from './stateMachine.ts';

type Write =
  | { kind: 'save'; update: { hardState?: HardState; entries?: Entry[]; snapshot?: Snapshot } }
  | { kind: 'compact'; snapshot: Snapshot }
  /** Another synced write on this device: `perform` makes it durable, or throws (the write failed). */
  | { kind: 'other'; perform: () => void };

interface PendingWrite {
  at: number;
  write: Write;
  resolve: () => void;
  reject: (err: unknown) => void;
}

/**
 * The digest of the state a locally taken snapshot holds (the checker compares it with the log's
 * at the snapshot's index), or undefined when the simulator cannot tell.
 */
export type SnapshotState = (snapshot: Snapshot) => number | undefined;

export class SimLogStore implements RaftLogStore {
  private pending: PendingWrite[] = [];
  syncs = 0;
  /**
   * While the driver starts, its writes (a snapshot restored into synced tables, a syncApplied)
   * complete at once: nothing else happens on the node meanwhile, and the simulator awaits the start.
   */
  starting = true;

  constructor(
    private readonly id: string,
    private readonly disk: SimDisk,
    private readonly level: LevelLogStore | null,
    private readonly checker: Checker,
    /** The current tick and the ticks the next write takes. */
    private readonly clock: { tick(): number; latency(): number },
    private readonly stateOf: SnapshotState = (snap) => parseImage(snap.data).digest,
  ) {}

  async load(): Promise<{ hardState: HardState; snapshot: Snapshot | null; entries: Entry[] }> {
    const mirror = this.disk.load();
    if (this.level === null) return mirror;
    const real = await this.level.load();
    if (JSON.stringify(real) !== JSON.stringify(mirror)) {
      this.checker.fail('log-store', `${this.id}'s LevelDB log loaded something other than what was saved`);
    }
    return real;
  }

  save(update: { hardState?: HardState; entries?: Entry[]; snapshot?: Snapshot }): Promise<void> {
    return this.enqueue({ kind: 'save', update });
  }

  compact(snapshot: Snapshot): Promise<void> {
    return this.enqueue({ kind: 'compact', snapshot });
  }

  async close(): Promise<void> {}

  /**
   * What the disk holds now (completed writes only), as LevelLogStore's getSync reads answer; on a
   * LevelDB seed, those reads of the real store must answer the same.
   */
  entriesSync(lo: number, hi: number, maxSize: number): Entry[] {
    const entries = readWithinSize(lo, hi, maxSize, (i) => this.storedEntry(i));
    if (
      this.level !== null &&
      JSON.stringify(this.level.entriesSync(lo, hi, maxSize)) !== JSON.stringify(entries)
    )
      this.checker.fail(
        'log-store',
        `${this.id}'s LevelDB log read [${lo}, ${hi}) other than what was saved`,
      );
    return entries;
  }

  termSync(index: number): number {
    const term = this.storedEntry(index).term;
    if (this.level !== null && this.level.termSync(index) !== term)
      this.checker.fail('log-store', `${this.id}'s LevelDB log read the term of ${index} other than saved`);
    return term;
  }

  private storedEntry(index: number): Entry {
    const stored = this.disk.at(index);
    if (stored === undefined)
      throw new LogStoreInvariantError(`${this.id}'s disk does not hold entry ${index}`);
    return { ...stored.entry };
  }

  /** Another synced write on this node's disk, done by `perform` when it completes (never if a crash comes first). */
  synced(perform: () => void): Promise<void> {
    return this.enqueue({ kind: 'other', perform });
  }

  get writing(): boolean {
    return this.pending.length > 0;
  }

  /** Completes, in order, the writes due by now; the caller settles the node after each. */
  async completeDue(afterEach: () => Promise<void>): Promise<void> {
    while (this.pending.length > 0 && this.pending[0]!.at <= this.clock.tick()) {
      const w = this.pending.shift()!;
      await this.complete(w);
      await afterEach();
    }
  }

  /** Power loss: writes not completed never happen. */
  crash(): void {
    this.pending = [];
  }

  private enqueue(write: Write): Promise<void> {
    // Writes to one device complete in the order they were issued.
    const last = this.pending[this.pending.length - 1]?.at ?? 0;
    const at = Math.max(last, this.clock.tick() + this.clock.latency());
    return new Promise((resolve, reject) => {
      const w = { at, write, resolve, reject };
      if (this.starting && this.pending.length === 0) void this.complete(w);
      else this.pending.push(w);
    });
  }

  private async complete(w: PendingWrite): Promise<void> {
    let failed: { err: unknown } | null = null;
    if (w.write.kind === 'other') {
      try {
        w.write.perform();
      } catch (err) {
        failed = { err };
      }
    } else if (w.write.kind === 'compact' && w.write.snapshot.metadata.index <= this.disk.snapshotIndex) {
      // A snapshot from the leader landed while this compaction waited its turn: the store refuses
      // it, as LevelLogStore does, and the driver drops it (raftNode.ts, compactTo and truncateTo).
      failed = {
        err: new LogStoreInvariantError(
          `compact: snapshot ${w.write.snapshot.metadata.index} is not beyond the stored snapshot ${this.disk.snapshotIndex}`,
        ),
      };
    } else await this.perform(w.write);
    this.syncs++;
    if (failed === null) w.resolve();
    else w.reject(failed.err);
  }

  private async perform(write: Exclude<Write, { kind: 'other' }>): Promise<void> {
    try {
      if (write.kind === 'save') {
        const before = { ...this.disk.hardState };
        const effect = this.disk.save(write.update);
        this.checker.onSave(this.id, before, this.disk, effect);
        await this.level?.save(write.update);
      } else {
        const index = write.snapshot.metadata.index;
        this.checker.onLocalSnapshot(this.id, index, this.stateOf(write.snapshot), this.disk.digestAt(index));
        this.disk.compact(write.snapshot);
        await this.level?.compact(write.snapshot);
      }
    } catch (err) {
      if (!(err instanceof LogStoreInvariantError)) throw err;
      this.checker.fail('log-store', `${this.id}'s log store refused a write: ${err.message}`);
    }
  }
}
