// The placement reconciler: the one loop that decides where copies go, run on every manager and
// acting only while it leads. Each pass observes (tables, liveness, inventories), plans (plan.ts)
// and executes (repair.ts, rejoin.ts), at most one action per object at a time (execute.ts).
// Nothing outside decides: a down verdict, a drain, or a worker registering with its inventory
// ("a new inventory was observed") only wakes the loop (TigerBeetle's rule: don't do things
// directly in reaction to external events). Inventories, a rejoin's or the periodic sweep's, are
// reconciled beside the repair pass, one per worker at a time, and so are the orphan deletes:
// repair, which restores a down worker's objects to two copies, never waits on either.

import type { ExecutorDeps } from './execute.ts';
import { emptySummary, InventoryReconciler, type InventorySource, type ReconcileSummary } from './rejoin.ts';
import { type PassReport, Repairer } from './repair.ts';
import type { ObjectSlots } from './slots.ts';

export interface PlacementReconcilerDeps extends ExecutorDeps {
  /** Copy batches in flight at once (--repair-concurrency). */
  concurrency: number;
  orphanGraceMs: number;
  /** Pause between two passes. */
  intervalMs: number;
  /** How often every serving worker's inventory is read; default the grace, within 1 s..10 min. */
  inventorySweepMs?: number;
  /** Objects one repair pass takes on at most; bytes one copy batch carries at most. */
  maxObjectsPerPass?: number;
  batchBytes?: number;
}

interface ObservedInventory {
  source: InventorySource;
  startedAt: number;
  done: (summary: ReconcileSummary) => void;
}

export class PlacementReconciler {
  readonly slots: ObjectSlots;
  readonly repair: Repairer;
  readonly inventories: InventoryReconciler;
  /** Inventories observed and not yet reconciled, by worker, reconciled oldest first. */
  private readonly observed = new Map<string, ObservedInventory[]>();
  /** Workers whose inventory is being reconciled now. */
  private readonly reconciling = new Set<string>();
  private sweep: Promise<unknown> | null = null;
  private orphans: Promise<unknown> | null = null;
  private nextSweepAt = 0;
  private nextOrphanSweepAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<unknown> | null = null;
  private started = false;
  /** A wake() came while a pass ran: the next pass starts as soon as this one ends. */
  private wakeAfterPass = false;

  constructor(private readonly deps: PlacementReconcilerDeps) {
    this.slots = deps.slots;
    this.repair = new Repairer(deps);
    this.inventories = new InventoryReconciler(deps);
  }

  start(): void {
    this.started = true;
    this.schedule(this.deps.intervalMs);
  }

  async stop(): Promise<void> {
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
    this.dropObserved();
  }

  /** Runs a pass now rather than at the next tick; a pass already running is followed by another. */
  wake(): void {
    if (!this.started) return;
    if (this.running) {
      this.wakeAfterPass = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.schedule(0);
  }

  /**
   * A worker registered with this inventory: it is queued and the loop woken. Resolves with the
   * reconciliation's summary once it ran, or an empty one if this manager stopped leading first.
   */
  reconcile(nodeId: string, source: InventorySource, startedAt: number): Promise<ReconcileSummary> {
    return new Promise((done) => {
      const queue = this.observed.get(nodeId) ?? [];
      this.observed.set(nodeId, [...queue, { source, startedAt, done }]);
      if (!this.started) this.dropObserved();
      this.wake();
    });
  }

  /** A worker reported copies its scrubber removed: see InventoryReconciler.dropMissingCopy. */
  dropMissingCopy(nodeId: string, id: string) {
    return this.inventories.dropMissingCopy(nodeId, id);
  }

  private schedule(delayMs: number): void {
    if (!this.started) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.running = this.pass()
        .catch((err: unknown) =>
          this.deps.log.warn({ event: 'repair.pass_failed', err }, 'repair pass failed; next pass retries'),
        )
        .finally(() => {
          this.running = null;
          const again = this.wakeAfterPass;
          this.wakeAfterPass = false;
          this.schedule(again ? 0 : this.deps.intervalMs);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass: starts what inventories are due beside it, then repairs what the tables show. */
  async pass(): Promise<PassReport | null> {
    if (!this.deps.raft.isLeader()) {
      this.dropObserved();
      return this.repair.pass();
    }
    for (const nodeId of this.observed.keys()) this.startRejoin(nodeId);
    const now = (this.deps.now ?? Date.now)();
    // Beside the pass, not before it: the repair of a down worker's objects must not wait on deletes.
    if (this.orphans === null && now >= this.nextOrphanSweepAt) {
      this.nextOrphanSweepAt = now + Math.min(60_000, Math.max(100, Math.floor(this.deps.orphanGraceMs / 4)));
      this.orphans = this.inventories
        .sweepOrphans()
        .catch((err: unknown) =>
          this.deps.log.warn({ event: 'reconcile.orphan_sweep_failed', err }, 'next sweep retries'),
        )
        .finally(() => {
          this.orphans = null;
        });
    }
    const sweepEvery =
      this.deps.inventorySweepMs ?? Math.min(600_000, Math.max(1_000, this.deps.orphanGraceMs));
    // The first sweep comes one interval after the start: a rejoin brings its own inventory.
    if (this.nextSweepAt === 0) this.nextSweepAt = now + sweepEvery;
    if (this.sweep === null && now >= this.nextSweepAt) {
      this.nextSweepAt = now + sweepEvery;
      this.sweep = this.sweepInventories()
        .catch((err: unknown) =>
          this.deps.log.warn({ event: 'reconcile.sweep_failed', err }, 'next sweep retries'),
        )
        .finally(() => {
          this.sweep = null;
        });
    }
    return this.repair.pass();
  }

  /** Reconciles the oldest inventory observed for `nodeId` unless one of it is running already. */
  private startRejoin(nodeId: string): void {
    const queue = this.observed.get(nodeId);
    const next = queue?.shift();
    if (!next || this.reconciling.has(nodeId)) {
      if (next) queue!.unshift(next);
      return;
    }
    if (queue!.length === 0) this.observed.delete(nodeId);
    this.reconciling.add(nodeId);
    void this.inventories
      .reconcile(nodeId, next.source, next.startedAt)
      .catch((err: unknown) => {
        this.deps.log.warn(
          { event: 'reconcile.failed', nodeId, err },
          'reconciliation stopped; the sweep retries',
        );
        return emptySummary();
      })
      .then((summary) => {
        this.reconciling.delete(nodeId);
        next.done(summary);
        this.wake();
      });
  }

  /** Not leading (or stopped): observed inventories are let go; a leader's sweep finds their work. */
  private dropObserved(): void {
    for (const queue of this.observed.values()) for (const o of queue) o.done(emptySummary());
    this.observed.clear();
  }

  /** Every serving `up` worker's inventory (not one being reconciled), one worker at a time. */
  async sweepInventories(): Promise<number> {
    let noted = 0;
    for (const node of await this.deps.metadata.listNodes()) {
      if (node.state !== 'up' || this.reconciling.has(node.nodeId) || !this.deps.raft.isLeader()) continue;
      this.reconciling.add(node.nodeId);
      try {
        noted += await this.inventories.sweepOne(node);
      } catch (err) {
        this.deps.log.debug(
          { event: 'reconcile.sweep_failed', nodeId: node.nodeId, err: (err as Error).message },
          'inventory not read; next sweep retries',
        );
      } finally {
        this.reconciling.delete(node.nodeId);
      }
    }
    return noted;
  }
}
