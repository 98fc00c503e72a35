// Linearizable reads (ReadIndex, Raft thesis 6.4), batched: every read that arrives while no
// ReadIndex request is queued for the core joins the next one, so a burst of reads costs one
// heartbeat round, not one each. A batch is released once the leader has confirmed its index and
// this node has applied up to it.

import type { Index, RandomInt, ReadState } from '../types.ts';
import type { RaftClock, TimerHandle } from './clock.ts';
import { RaftError } from './raftError.ts';

interface ReadBatch {
  ctx: string;
  /** The read index the leader confirmed for this batch, once it has. */
  index: Index | null;
  waiters: { resolve: () => void; reject: (err: RaftError) => void }[];
  timer: TimerHandle;
  /** Failed before its request reached the core: the request is not made. */
  failed: boolean;
}

export interface ReadIndexBatcherOptions {
  clock: RaftClock;
  random: RandomInt;
  timeoutMs: number;
  /** Runs `fn` as an input of the driver's loop (between two Ready cycles). */
  input: (fn: () => void) => void;
  /** Hands a ReadIndex request to the core; called from within `input`. */
  requestReadIndex: (ctx: string) => void;
}

export class ReadIndexBatcher {
  /** Batches whose request is in the core, by context. */
  private readonly submitted = new Map<string, ReadBatch>();
  /** Reads that arrived since the last request went into the core; they share the next. */
  private unsubmitted: ReadBatch | null = null;
  /**
   * 64 random bits drawn once, then a count: a read context must not match a response meant for
   * an earlier incarnation, and drawing the bits for every batch showed in the leader's profile.
   */
  private readonly contextPrefix: string;
  private contextsMade = 0;

  constructor(private readonly opts: ReadIndexBatcherOptions) {
    const half = () =>
      opts
        .random(2 ** 32)
        .toString(16)
        .padStart(8, '0');
    this.contextPrefix = half() + half();
  }

  /** Resolves once a read may be served from the local state machine. */
  wait(): Promise<void> {
    return new Promise((resolve, reject) => {
      const batch = this.unsubmitted ?? this.openBatch();
      batch.waiters.push({ resolve, reject });
    });
  }

  /** Records the read indexes a Ready confirmed. */
  confirmed(readStates: ReadState[]): void {
    for (const rs of readStates) {
      const batch = this.submitted.get(rs.context);
      if (batch) batch.index = rs.index;
    }
  }

  /** Releases the batches whose confirmed index is applied. */
  release(applied: Index): void {
    for (const [ctx, batch] of this.submitted) {
      if (batch.index === null || batch.index > applied) continue;
      this.submitted.delete(ctx);
      this.opts.clock.clearTimeout(batch.timer);
      for (const w of batch.waiters) w.resolve();
    }
  }

  /** Whether any read waits. */
  pending(): boolean {
    return this.unsubmitted !== null || this.submitted.size > 0;
  }

  /** Fails every read waiting; a confirmation that comes later for one of them is ignored. */
  failAll(err: RaftError): void {
    const batches = [...this.submitted.values(), ...(this.unsubmitted ? [this.unsubmitted] : [])];
    for (const b of batches) {
      b.failed = true;
      this.opts.clock.clearTimeout(b.timer);
      for (const w of b.waiters) w.reject(err);
    }
    this.submitted.clear();
    this.unsubmitted = null;
  }

  private openBatch(): ReadBatch {
    const ctx = this.readContext();
    const created: ReadBatch = {
      ctx,
      index: null,
      waiters: [],
      timer: this.opts.clock.setTimeout(() => this.expire(created), this.opts.timeoutMs),
      failed: false,
    };
    this.unsubmitted = created;
    this.opts.input(() => {
      if (this.unsubmitted === created) this.unsubmitted = null;
      if (created.failed) return;
      this.submitted.set(created.ctx, created);
      this.opts.requestReadIndex(created.ctx);
    });
    return created;
  }

  private expire(batch: ReadBatch): void {
    const wasUnsubmitted = this.unsubmitted === batch;
    if (!this.submitted.delete(batch.ctx) && !wasUnsubmitted) return;
    if (wasUnsubmitted) this.unsubmitted = null;
    const err = new RaftError('Timeout', `read index not confirmed within ${this.opts.timeoutMs} ms`);
    for (const w of batch.waiters) w.reject(err);
  }

  private readContext(): string {
    this.contextsMade += 1;
    return `${this.contextPrefix}-${this.contextsMade.toString(36)}`;
  }
}
