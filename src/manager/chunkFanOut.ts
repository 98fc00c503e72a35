// One stream of chunks read once and handed to several consumers at once (an upload's body to two
// workers and the staging file), with backpressure: a chunk is read from the source only when
// every branch still attached has fewer than `depth` chunks waiting, so the slowest consumer paces
// the read and memory stays at `depth` chunks a branch. A consumer that stops (its request failed
// or answered) is detached and no longer waited for. A branch given a stall limit that holds the
// read back longer than it is failed and detached: one slow copy does not stall the others and the
// client (its caller replaces that copy from elsewhere).

/** A branch that held the source's read back longer than its stall limit (ChunkFanOut). */
export class BranchStalled extends Error {
  constructor(readonly stallMs: number) {
    super(`the copy took no bytes for ${stallMs} ms while the body waited on it`);
    this.name = 'BranchStalled';
  }
}

export interface StallLimit {
  ms: number;
  /** The branches it applies to; the others are waited for however long they take. */
  branches: number;
}

class Branch implements AsyncIterableIterator<Uint8Array> {
  readonly queue: Uint8Array[] = [];
  detached = false;
  private ended = false;
  private error: { reason: unknown } | null = null;
  private reader: { resolve: (r: IteratorResult<Uint8Array>) => void; reject: (e: unknown) => void } | null =
    null;

  constructor(private readonly changed: () => void) {}

  push(chunk: Uint8Array): void {
    if (this.detached) return;
    const reader = this.reader;
    this.reader = null;
    if (reader) reader.resolve({ value: chunk, done: false });
    else this.queue.push(chunk);
  }

  end(): void {
    this.ended = true;
    this.settleReader();
  }

  fail(reason: unknown): void {
    if (this.error === null) this.error = { reason };
    this.settleReader();
  }

  private settleReader(): void {
    const reader = this.reader;
    if (!reader || this.queue.length > 0) return;
    this.reader = null;
    if (this.error) reader.reject(this.error.reason);
    else reader.resolve({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    const chunk = this.queue.shift();
    if (chunk !== undefined) {
      this.changed();
      return Promise.resolve({ value: chunk, done: false });
    }
    if (this.error) return Promise.reject(this.error.reason);
    if (this.ended || this.detached) return Promise.resolve({ value: undefined, done: true });
    return new Promise((resolve, reject) => {
      this.reader = { resolve, reject };
    });
  }

  /** The consumer stopped reading (a for-await loop left early). */
  return(): Promise<IteratorResult<Uint8Array>> {
    this.detach();
    return Promise.resolve({ value: undefined, done: true });
  }

  detach(): void {
    if (this.detached) return;
    this.detached = true;
    this.queue.length = 0;
    this.settleReader();
    this.changed();
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

export class ChunkFanOut {
  private readonly branches: Branch[];
  private wake: (() => void) | null = null;
  private aborted: { reason: unknown } | null = null;
  /** Settles once the source is read to its end (resolves) or failed or was aborted (rejects). */
  readonly done: Promise<void>;

  /**
   * `stall`: the first `stall.branches` branches are failed with BranchStalled and detached once
   * the read has waited `stall.ms` on them with their queue full.
   */
  constructor(
    source: AsyncIterable<Uint8Array>,
    count: number,
    private readonly depth = 2,
    private readonly stall?: StallLimit,
  ) {
    const changed = () => {
      const wake = this.wake;
      this.wake = null;
      wake?.();
    };
    this.branches = Array.from({ length: count }, () => new Branch(changed));
    this.done = this.pump(source);
    this.done.catch(() => {});
  }

  /** The i-th consumer's chunks; it ends when the source does, and throws what the source threw. */
  branch(i: number): AsyncIterableIterator<Uint8Array> {
    return this.branches[i]!;
  }

  /** Stops waiting for (and feeding) the i-th consumer. */
  detach(i: number): void {
    this.branches[i]!.detach();
  }

  /** Stops reading the source: every branch and `done` fail with `reason`. */
  abort(reason: unknown): void {
    if (this.aborted) return;
    this.aborted = { reason };
    for (const b of this.branches) b.fail(reason);
    const wake = this.wake;
    this.wake = null;
    wake?.();
  }

  private anyFull(): boolean {
    return this.branches.some((b) => !b.detached && b.queue.length >= this.depth);
  }

  /** Waits until every attached branch has room, failing the stall-limited ones that stay full. */
  private async whileAnyFull(): Promise<void> {
    if (this.aborted || !this.anyFull()) return;
    const stall = this.stall;
    const timer =
      stall &&
      setTimeout(() => {
        for (const b of this.branches.slice(0, stall.branches)) {
          if (b.detached || b.queue.length < this.depth) continue;
          b.fail(new BranchStalled(stall.ms));
          b.detach();
        }
      }, stall.ms);
    try {
      while (!this.aborted && this.anyFull()) {
        await new Promise<void>((resolve) => {
          this.wake = resolve;
        });
      }
    } finally {
      clearTimeout(timer);
    }
  }

  private async pump(source: AsyncIterable<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of source) {
        if (this.aborted) break;
        for (const b of this.branches) b.push(chunk);
        await this.whileAnyFull();
        if (this.aborted) break;
      }
    } catch (err) {
      this.abort(err);
    }
    if (this.aborted) throw this.aborted.reason;
    for (const b of this.branches) b.end();
  }
}
