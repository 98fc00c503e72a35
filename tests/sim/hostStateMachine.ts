// The state machine the real driver applies into in the host simulation. Like the managers' tables
// it is durable across a clean stop, so a restarted driver must skip the entries it already holds
// (the path production takes; the core is not told `applied`); after an unclean stop it starts
// empty, as the managers' tables without synced writes do (src/metadata/cleanStop.ts), and is
// rebuilt from the snapshot. DurableHostStateMachine is the tables with synced writes, which answer
// syncApplied, so the driver compacts its log without a snapshot file. Each client write's request
// id is its value, so the driver resolves the waiting proposal with the index it was applied at.

import type { AppliedResult, StateMachine } from '../../src/consensus/stateMachine.ts';
import type { Entry, Index } from '../../src/consensus/types.ts';
import type { Checker } from './checker.ts';
import { SimStateMachine } from './stateMachine.ts';

export interface ApplyObserver {
  /** A client write reached the state machine of `node` at `index`. */
  onWriteApplied(node: string, value: string, index: Index): void;
}

export class HostStateMachine implements StateMachine {
  protected sm = new SimStateMachine();

  constructor(
    private readonly id: string,
    private readonly checker: Checker,
    private readonly observer: ApplyObserver,
  ) {}

  get applied(): Index {
    return this.sm.applied;
  }

  /** What opening the tables after an unclean stop does: empty, applied index 0. */
  afterUncleanStop(): void {
    this.sm = new SimStateMachine();
  }

  /** A clean stop closes the tables: what they hold stays. */
  afterCleanStop(): void {}

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

/**
 * How the durable state machine's writes reach its disk: `batches`, as the managers' tables with
 * synced writes (every apply batch and restore is one synced write, and a crash during one loses it
 * whole); `onSync`, the least the contract allows (StateMachine.syncApplied): changes stay in memory
 * until a syncApplied's synced write, and an unclean stop loses every change after the last one.
 */
export type DurabilityMode = 'batches' | 'onSync';

/** The node's disk, as the state machine sees it: a synced write, done by `perform` when it completes. */
export type SyncedWrite = (perform: () => void) => Promise<void>;

/**
 * The tables with synced writes. What survives an unclean stop is what a completed synced write
 * made durable, never more. With `lies`, syncApplied answers the applied index without making it
 * durable (a planted bug: the driver then compacts away entries a power cut takes from the tables).
 */
export class DurableHostStateMachine extends HostStateMachine {
  private durable = new SimStateMachine().serialize();
  /** The applied index of what survives an unclean stop. */
  durableApplied: Index = 0;

  constructor(
    id: string,
    checker: Checker,
    observer: ApplyObserver,
    private readonly mode: DurabilityMode,
    private readonly write: SyncedWrite,
    private readonly lies = false,
  ) {
    super(id, checker, observer);
  }

  override async apply(entries: Entry[]): Promise<AppliedResult[]> {
    const results = await super.apply(entries);
    if (this.mode === 'batches') await this.sync();
    return results;
  }

  override async restore(data: string, index: Index): Promise<void> {
    // The rows go to a generation of their own in batches before the flip (src/metadata/tables.ts):
    // up to three synced writes, each taking its drawn ticks, while the driver ticks, votes and
    // takes more snapshots and the old state stays live. Drawn from the index: deterministic.
    for (let batch = 0; batch < index % 4; batch++) await this.write(() => {});
    await super.restore(data, index);
    if (this.mode === 'batches') await this.sync();
  }

  async syncApplied(): Promise<Index> {
    const applied = this.sm.applied;
    if (!this.lies) await this.sync();
    return applied;
  }

  override afterUncleanStop(): void {
    this.sm = SimStateMachine.restore(this.durable);
  }

  override afterCleanStop(): void {
    this.durable = this.sm.serialize();
    this.durableApplied = this.sm.applied;
  }

  /** One synced write of the whole state as it is now. */
  private async sync(): Promise<void> {
    const image = this.sm.serialize();
    const applied = this.sm.applied;
    await this.write(() => {
      this.durable = image;
      this.durableApplied = applied;
    });
  }
}
