// Callers waiting for the cluster to reach a state (a member promoted or removed, a new leader),
// each with a deadline. The driver rechecks them after every role change, conf change and snapshot
// install, the only events that change what they wait for.

import type { RaftClock, TimerHandle } from './clock.ts';
import { RaftError } from './raftError.ts';

interface ConditionWaiter {
  check: () => boolean;
  resolve: () => void;
  reject: (err: RaftError) => void;
  timer: TimerHandle;
}

export class ConditionWaiters {
  private readonly waiting = new Set<ConditionWaiter>();

  constructor(
    private readonly clock: RaftClock,
    private readonly timeoutMs: number,
  ) {}

  /** Resolves once `check()` holds; `cancel` rejects early (the change it waits for was refused). */
  waitFor(check: () => boolean, what: string): { done: Promise<void>; cancel: (err: RaftError) => void } {
    if (check()) return { done: Promise.resolve(), cancel: () => {} };
    let waiter!: ConditionWaiter;
    const done = new Promise<void>((resolve, reject) => {
      waiter = {
        check,
        resolve,
        reject,
        timer: this.clock.setTimeout(() => {
          this.waiting.delete(waiter);
          reject(new RaftError('Timeout', `${what} did not happen within ${this.timeoutMs} ms`));
        }, this.timeoutMs),
      };
      this.waiting.add(waiter);
    });
    const cancel = (err: RaftError) => {
      if (!this.waiting.delete(waiter)) return;
      this.clock.clearTimeout(waiter.timer);
      waiter.reject(err);
    };
    return { done, cancel };
  }

  /** Resolves every waiter whose condition now holds. */
  recheck(): void {
    for (const w of this.waiting) {
      if (!w.check()) continue;
      this.waiting.delete(w);
      this.clock.clearTimeout(w.timer);
      w.resolve();
    }
  }

  failAll(err: RaftError): void {
    for (const w of this.waiting) {
      this.clock.clearTimeout(w.timer);
      w.reject(err);
    }
    this.waiting.clear();
  }
}
