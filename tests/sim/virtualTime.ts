// Virtual time for the host simulation: one timer queue for the whole world, and per node a
// RaftClock (the seam src/consensus/raftNode.ts takes) that the real driver uses for its ticker,
// timeouts and Ready batching. A node's clock may run fast or slow (skew), may be paused (a stopped
// process: its timers and deferred work wait and then fire late, all at once, as a resumed process
// does), and dies with its incarnation (a crash: nothing it scheduled ever runs again).

import type { RaftClock, TimerHandle } from '../../src/consensus/raftNode.ts';

interface Timer {
  at: number;
  seq: number;
  clock: NodeClock;
  fn: () => void;
  /** Repeat period for intervals, else 0. */
  every: number;
  cancelled: boolean;
}

export class VirtualTime {
  /** Milliseconds of virtual time. */
  now = 0;
  private timers: Timer[] = [];
  private seq = 0;
  /** Deferred callbacks (RaftClock.defer), run in order before time moves on. */
  private soon: { clock: NodeClock; fn: () => void }[] = [];

  schedule(timer: Omit<Timer, 'seq'>): Timer {
    const t: Timer = { ...timer, seq: this.seq++ };
    // Binary insertion keeps the queue sorted by (at, seq): equal times fire in scheduling order.
    let lo = 0;
    let hi = this.timers.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const m = this.timers[mid]!;
      if (m.at < t.at || (m.at === t.at && m.seq < t.seq)) lo = mid + 1;
      else hi = mid;
    }
    this.timers.splice(lo, 0, t);
    return t;
  }

  defer(clock: NodeClock, fn: () => void): void {
    this.soon.push({ clock, fn });
  }

  hasSoon(): boolean {
    return this.soon.length > 0;
  }

  /** Runs deferred work; true if any ran. */
  runSoon(): boolean {
    if (this.soon.length === 0) return false;
    const batch = this.soon;
    this.soon = [];
    for (const { clock, fn } of batch) clock.run(fn);
    return true;
  }

  /** Fires every timer due at or before `until`, in time order, then sets the time to `until`. */
  advanceTo(until: number): void {
    while (this.timers.length > 0 && this.timers[0]!.at <= until) {
      const t = this.timers.shift()!;
      if (t.cancelled || !t.clock.alive) continue;
      this.now = Math.max(this.now, t.at);
      if (t.every > 0) this.schedule({ ...t, at: t.at + t.every });
      t.clock.run(t.fn, t.every > 0 ? t.fn : undefined);
    }
    this.now = until;
  }
}

export class NodeClock implements RaftClock {
  alive = true;
  private paused = false;
  /** What came due while paused, in order; an interval that came due many times is held once. */
  private held: (() => void)[] = [];

  constructor(
    private readonly time: VirtualTime,
    /** Virtual ms per ms of this node's timers: above 1 the node's clock runs slow. */
    private readonly skew: number,
  ) {}

  now(): number {
    return this.time.now;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    return this.time.schedule({
      at: this.time.now + this.scaled(ms),
      clock: this,
      fn,
      every: 0,
      cancelled: false,
    });
  }

  setInterval(fn: () => void, ms: number): TimerHandle {
    const every = this.scaled(ms);
    return this.time.schedule({ at: this.time.now + every, clock: this, fn, every, cancelled: false });
  }

  clearTimeout(handle: TimerHandle): void {
    if (handle) (handle as Timer).cancelled = true;
  }

  clearInterval(handle: TimerHandle): void {
    this.clearTimeout(handle);
  }

  defer(fn: () => void): void {
    this.time.defer(this, fn);
  }

  /** Runs `fn` now, or when the node resumes; never after a crash. */
  run(fn: () => void, coalesce?: () => void): void {
    if (!this.alive) return;
    if (!this.paused) fn();
    else if (coalesce === undefined || !this.held.includes(coalesce)) this.held.push(fn);
  }

  pause(): void {
    this.paused = true;
  }

  get isPaused(): boolean {
    return this.paused;
  }

  resume(): void {
    this.paused = false;
    const held = this.held;
    this.held = [];
    for (const fn of held) this.run(fn);
  }

  private scaled(ms: number): number {
    return Math.max(1, Math.round(ms * this.skew));
  }
}
