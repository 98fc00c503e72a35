// The placement reconciler: the one loop that decides where copies go, run on every manager and
// acting only while it leads. Each pass observes (tables, liveness, inventories), plans (plan.ts)
// and executes (repair.ts, rejoin.ts), at most one action per object at a time (execute.ts).
// Nothing outside decides: a down verdict, a drain, or a worker registering with its inventory
// ("a new inventory was observed") only wakes the loop (TigerBeetle's rule: don't do things
// directly in reaction to external events). Inventories, a rejoin's or the periodic sweep's, are
// reconciled beside the repair pass, one per worker at a time, and so are the orphan deletes:
// repair, which restores a down worker's objects to two copies, never waits on either.

import type { ObjectSlots } from './execute.ts';
import {
  emptySummary,
  InventoryReconciler,
  type InventoryReconcilerDeps,
  type InventorySource,
  type ReconcileSummary,
} from './rejoin.ts';
import { type PassReport, type RepairDeps, Repairer } from './repair.ts';

export interface PlacementReconcilerDeps extends RepairDeps, InventoryReconcilerDeps {
  /** Pause between two passes. */
  intervalMs: number;
  /** How often every serving worker's inventory is read; default the grace, within 1 s..10 min. */
  inventorySweepMs?: number;
}

interface ObservedInventory {
  nodeId: string;
  source: InventorySource;
  startedAt: number;
  done: (summary: ReconcileSummary) => void;
}

/** A task run beside the passes every so often, never two runs at once. */
interface Sideline {
  /** When it is next due; NaN: one period after the first pass. */
  dueAt: number;
  running: boolean;
}

export class PlacementReconciler {
  readonly slots: ObjectSlots;
  readonly repair: Repairer;
  readonly inventories: InventoryReconciler;
  /** Inventories observed and not yet reconciled, oldest first. */
  private observed: ObservedInventory[] = [];
  /** Workers whose inventory is being reconciled now: one at a time per worker. */
  private readonly reconciling = new Set<string>();
  private readonly orphanSweep: Sideline = { dueAt: 0, running: false };
  /** A rejoin brings its own inventory: the first sweep of them all waits a period. */
  private readonly inventorySweep: Sideline = { dueAt: Number.NaN, running: false };
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
      this.observed.push({ nodeId, source, startedAt, done });
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

  /**
   * One pass: starts the inventories and sweeps that are due beside it (not before it: the repair
   * of a down worker's objects must not wait on deletes), then repairs what the tables show.
   */
  async pass(): Promise<PassReport | null> {
    if (!this.deps.raft.isLeader()) {
      this.dropObserved();
      return this.repair.pass();
    }
    for (const observed of [...this.observed]) this.startRejoin(observed);
    const grace = this.deps.orphanGraceMs;
    const orphansEvery = Math.min(60_000, Math.max(100, Math.floor(grace / 4)));
    this.beside(this.orphanSweep, orphansEvery, 'reconcile.orphan_sweep_failed', () =>
      this.inventories.sweepOrphans(),
    );
    const sweepEvery = this.deps.inventorySweepMs ?? Math.min(600_000, Math.max(1_000, grace));
    this.beside(this.inventorySweep, sweepEvery, 'reconcile.sweep_failed', () => this.sweepInventories());
    return this.repair.pass();
  }

  /** Starts `task` if `line` is due and not running; `failed` is logged if it fails. */
  private beside(line: Sideline, everyMs: number, failed: string, task: () => Promise<unknown>): void {
    const now = (this.deps.now ?? Date.now)();
    if (Number.isNaN(line.dueAt)) line.dueAt = now + everyMs;
    if (line.running || now < line.dueAt) return;
    line.dueAt = now + everyMs;
    line.running = true;
    void task()
      .catch((err: unknown) => this.deps.log.warn({ event: failed, err }, 'next sweep retries'))
      .finally(() => {
        line.running = false;
      });
  }

  /** Reconciles an observed inventory unless one of its worker's is being reconciled already. */
  private startRejoin(observed: ObservedInventory): void {
    const { nodeId, source, startedAt, done } = observed;
    if (this.reconciling.has(nodeId)) return;
    this.observed = this.observed.filter((o) => o !== observed);
    this.reconciling.add(nodeId);
    void this.inventories
      .reconcile(nodeId, source, startedAt)
      .catch((err: unknown) => {
        const message = 'reconciliation stopped; the sweep retries';
        this.deps.log.warn({ event: 'reconcile.failed', nodeId, err }, message);
        return emptySummary();
      })
      .then((summary) => {
        this.reconciling.delete(nodeId);
        done(summary);
        this.wake();
      });
  }

  /** Not leading (or stopped): observed inventories are let go; a leader's sweep finds their work. */
  private dropObserved(): void {
    for (const o of this.observed.splice(0)) o.done(emptySummary());
  }

  /**
   * Every serving `up` worker's inventory (not one being reconciled), one worker at a time. A
   * failure leaves the worker to the next sweep.
   */
  async sweepInventories(): Promise<number> {
    let noted = 0;
    for (const node of await this.deps.metadata.listNodes()) {
      if (node.state !== 'up' || this.reconciling.has(node.nodeId) || !this.deps.raft.isLeader()) continue;
      this.reconciling.add(node.nodeId);
      noted += await this.inventories.sweepOne(node).catch((err: unknown) => {
        const at = { nodeId: node.nodeId, err: (err as Error).message };
        this.deps.log.debug(
          { event: 'reconcile.sweep_failed', ...at },
          'inventory not read; next sweep retries',
        );
        return 0;
      });
      this.reconciling.delete(node.nodeId);
    }
    return noted;
  }
}
