// The state machine the real driver applies into in the host simulation. Like the managers' tables
// it is durable across a clean stop, so a restarted driver must skip the entries it already holds
// (the path production takes; the core is not told `applied`); after an unclean stop it starts
// empty, as the managers' tables do (src/metadata/cleanStop.ts), and is rebuilt from the snapshot. Each
// client write's request id is its value, so the driver resolves the waiting proposal with the
// index it was applied at.

import type { AppliedResult, StateMachine } from '../../src/consensus/stateMachine.ts';
import type { Entry, Index } from '../../src/consensus/types.ts';
import type { Checker } from './checker.ts';
import { SimStateMachine } from './stateMachine.ts';

export interface ApplyObserver {
  /** A client write reached the state machine of `node` at `index`. */
  onWriteApplied(node: string, value: string, index: Index): void;
}

export class HostStateMachine implements StateMachine {
  private sm = new SimStateMachine();

  constructor(
    private readonly id: string,
    private readonly checker: Checker,
    private readonly observer: ApplyObserver,
  ) {}

  get applied(): Index {
    return this.sm.applied;
  }

  /** What opening the tables after an unclean stop does: empty, applied index 0. */
  wipe(): void {
    this.sm = new SimStateMachine();
  }

  appliedIndex(): Index {
    return this.sm.applied;
  }

  async apply(entries: Entry[]): Promise<AppliedResult[]> {
    const results: AppliedResult[] = [];
    for (const e of entries) {
      if (e.index !== this.sm.applied + 1) {
        this.checker.fail(
          'state-machine-safety',
          `${this.id} was handed entry ${e.index} to apply after ${this.sm.applied}`,
        );
      }
      this.sm.apply(e);
      // The driver defers commit-only hard states (etcd MustSync), so applying runs ahead of the
      // commit index on disk by design; what is applied is checked against every other replica.
      this.checker.onApply(this.id, e, this.sm.digest, Number.POSITIVE_INFINITY);
      if (e.type === 'normal' && e.data !== '') {
        this.observer.onWriteApplied(this.id, e.data, e.index);
        results.push({ index: e.index, requestId: e.data, result: e.index });
      }
    }
    return results;
  }

  snapshot(): Promise<string> {
    return Promise.resolve(this.sm.serialize());
  }

  async restore(data: string, index: Index): Promise<void> {
    const sm = SimStateMachine.restore(data);
    if (sm.applied !== index) {
      this.checker.fail(
        'host-error',
        `${this.id} got a snapshot at ${index} whose state is at ${sm.applied}`,
      );
    }
    this.sm = sm;
    this.checker.onRestore(this.id, index, sm.digest);
  }

  async close(): Promise<void> {}
}
