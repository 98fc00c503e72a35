// The log store the real driver writes to in the host simulation. Every save or compact is one
// synced batch that takes a drawn number of ticks; the simulator completes it at its due tick
// (never while the node is paused), and a crash before then loses it whole, as a power cut loses
// an fsync in progress. Completed writes go to the node's SimDisk (the checker's mirror, with the
// MemoryLogStore rules) and, for a share of seeds, to a real LevelLogStore on a temp folder: the
// real store is written only when the write completes, and awaited before anything else happens,
// so its asynchronous I/O cannot reorder a run and each seed replays exactly.

import type { RaftLogStore } from '../../src/consensus/api.ts';
import type { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { LogStoreInvariantError } from '../../src/consensus/logStoreRules.ts';
import type { Entry, HardState, Snapshot } from '../../src/consensus/types.ts';
import type { Checker } from './checker.ts';
import type { SimDisk } from './simDisk.ts';
import { parseImage } from './stateMachine.ts';

type Write =
  | { kind: 'save'; update: { hardState?: HardState; entries?: Entry[]; snapshot?: Snapshot } }
  | { kind: 'compact'; snapshot: Snapshot };

interface PendingWrite {
  at: number;
  write: Write;
  resolve: () => void;
}

export class SimLogStore implements RaftLogStore {
  private pending: PendingWrite[] = [];
  syncs = 0;

  constructor(
    private readonly id: string,
    private readonly disk: SimDisk,
    private readonly level: LevelLogStore | null,
    private readonly checker: Checker,
    /** The current tick and the ticks the next write takes. */
    private readonly clock: { tick(): number; latency(): number },
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

  get writing(): boolean {
    return this.pending.length > 0;
  }

  /** Completes, in order, the writes due by now; the caller settles the node after each. */
  async completeDue(afterEach: () => Promise<void>): Promise<void> {
    while (this.pending.length > 0 && this.pending[0]!.at <= this.clock.tick()) {
      const w = this.pending.shift()!;
      await this.perform(w.write);
      this.syncs++;
      w.resolve();
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
    return new Promise((resolve) => this.pending.push({ at, write, resolve }));
  }

  private async perform(write: Write): Promise<void> {
    try {
      if (write.kind === 'save') {
        const before = { ...this.disk.hardState };
        const effect = this.disk.save(write.update);
        this.checker.onSave(this.id, before, this.disk, effect);
        await this.level?.save(write.update);
      } else {
        const index = write.snapshot.metadata.index;
        const smDigest = parseImage(write.snapshot.data).digest;
        this.checker.onLocalSnapshot(this.id, index, smDigest, this.disk.digestAt(index));
        this.disk.compact(write.snapshot);
        await this.level?.compact(write.snapshot);
      }
    } catch (err) {
      if (!(err instanceof LogStoreInvariantError)) throw err;
      this.checker.fail('log-store', `${this.id}'s log store refused a write: ${err.message}`);
    }
  }
}
