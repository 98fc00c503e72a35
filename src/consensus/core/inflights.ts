// The window of MsgApp sent to one follower in replicate state and not yet acknowledged
// (etcd tracker/inflights.go). Bounded by count and by bytes so a slow follower cannot make
// the leader buffer an unbounded amount of data in flight.

import type { Index } from '../types.ts';

interface Inflight {
  index: Index;
  bytes: number;
}

export class Inflights {
  private readonly buffer: Inflight[] = [];
  private head = 0;
  private bytesInFlight = 0;

  constructor(
    readonly maxCount: number,
    readonly maxBytes: number = Number.POSITIVE_INFINITY,
  ) {
    if (maxCount < 1) throw new Error(`Inflights: maxCount must be >= 1, got ${maxCount}`);
  }

  get count(): number {
    return this.buffer.length - this.head;
  }

  get bytes(): number {
    return this.bytesInFlight;
  }

  /** Records a MsgApp whose last entry is `index`; indexes must be added in increasing order. */
  add(index: Index, bytes: number): void {
    if (this.full()) throw new Error('Inflights.add: window is full');
    const last = this.buffer[this.buffer.length - 1];
    if (this.count > 0 && last !== undefined && index <= last.index) {
      throw new Error(`Inflights.add: index ${index} not above last ${last.index}`);
    }
    this.buffer.push({ index, bytes });
    this.bytesInFlight += bytes;
  }

  /** Frees every message whose last index is <= `to` (the follower acknowledged up to `to`). */
  freeLE(to: Index): void {
    while (this.head < this.buffer.length) {
      const first = this.buffer[this.head]!;
      if (first.index > to) break;
      this.bytesInFlight -= first.bytes;
      this.head++;
    }
    this.compactBuffer();
  }

  /** Frees the oldest message: a heartbeat response proves the follower is alive, so let one more go. */
  freeFirstOne(): void {
    const first = this.buffer[this.head];
    if (first !== undefined) this.freeLE(first.index);
  }

  full(): boolean {
    return this.count >= this.maxCount || this.bytesInFlight >= this.maxBytes;
  }

  reset(): void {
    this.buffer.length = 0;
    this.head = 0;
    this.bytesInFlight = 0;
  }

  private compactBuffer(): void {
    if (this.head === this.buffer.length) {
      this.reset();
    } else if (this.head > 64 && this.head * 2 > this.buffer.length) {
      this.buffer.splice(0, this.head);
      this.head = 0;
    }
  }
}
