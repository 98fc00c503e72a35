// The placement reconciler: the one loop that decides where copies go, run on every manager and
// acting only while it leads. Each pass observes (tables, liveness, inventories), plans (plan.ts)
// and executes (repair.ts, rejoin.ts), at most one action per object at a time (execute.ts).
// Nothing outside decides: a down verdict, a drain, or a worker registering with its inventory
// ("a new inventory was observed") only wakes the loop (TigerBeetle's rule: don't do things
// directly in reaction to external events). Inventories, a rejoin's or the periodic sweep's, are
// reconciled beside the repair pass, one per worker at a time, and so are the orphan deletes:
// repair, which restores a down worker's objects to two copies, never waits on either.

import type { ObjectSlots } from './execute.ts';
import { InventoryReconciler, type InventoryReconcilerDeps, type InventorySource } from './rejoin.ts';
import { type PassReport, type RepairDeps, Repairer } from './repair.ts';

export interface PlacementReconcilerDeps extends RepairDeps, InventoryReconcilerDeps {
  /** Pause between two passes. */
  intervalMs: number;
  /** How often every serving worker's inventory is read; default the grace, within 1 s..10 min. */
  inventorySweepMs?: number;
}

/** A leader rests this many times a sweep's length before the next: sweeps take at most 1/4 of its time. */
const SWEEP_REST = 3;

interface ObservedInventory {
  nodeId: string;
  source: InventorySource;
  startedAt: number;
  done: () => void;
}

export class PlacementReconciler {
  readonly slots: ObjectSlots;
  readonly repair: Repairer;
  readonly inventories: InventoryReconciler;
  /** Inventories observed and not yet reconciled, oldest first. */
  private observed: ObservedInventory[] = [];
  /**
   * What runs beside the passes, never twice at once: the two sweeps by name (a colon first: no
   * node id starts with one), and each worker whose inventory is being reconciled (a rejoin or its
   * sweep) by node id.
   */
  private readonly running = new Set<string>();
  /** When each sweep is next due; a rejoin brings its own inventory: the first sweep of them all waits a period. */
  private readonly due = new Map<string, number>([[':orphans', 0]]);
  private timer: NodeJS.Timeout | null = null;
  private pending: Promise<unknown> | null = null;
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
    await this.pending?.catch(() => {});
    this.dropObserved();
  }

  /** Runs a pass now rather than at the next tick; a pass already running is followed by another. */
  wake(): void {
    if (!this.started) return;
    if (this.pending) {
      this.wakeAfterPass = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.schedule(0);
  }

  /**
   * A worker registered with this inventory: it is queued and the loop woken. Resolves once it was
   * reconciled, or let go because this manager stopped leading first.
   */
  reconcile(nodeId: string, source: InventorySource, startedAt: number): Promise<void> {
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
      this.pending = this.pass()
        .catch((err: unknown) =>
          this.deps.log.warn({ event: 'repair.pass_failed', err }, 'repair pass failed; next pass retries'),
        )
        .finally(() => {
          this.pending = null;
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
    for (const o of [...this.observed]) {
      // Checked as each starts: a second inventory of one worker waits for the first to be done.
      if (this.running.has(o.nodeId)) continue;
      this.observed = this.observed.filter((other) => other !== o);
      // A rejoin done wakes the loop: repair may have copies to make, or none to make any more.
      this.beside(o.nodeId, 'reconcile.failed', () =>
        this.inventories.reconcile(o.nodeId, o.source, o.startedAt).finally(() => {
          o.done();
          this.wake();
        }),
      );
    }
    const grace = this.deps.orphanGraceMs;
    if (this.isDue(':orphans', Math.min(60_000, Math.max(100, Math.floor(grace / 4)))))
      this.beside(':orphans', 'reconcile.orphan_sweep_failed', () => this.inventories.sweepOrphans());
    if (this.isDue(':inventories', this.deps.inventorySweepMs ?? Math.min(600_000, Math.max(1_000, grace))))
      this.beside(':inventories', 'reconcile.sweep_failed', () => this.pacedSweep());
    return this.repair.pass();
  }

  /** Whether sweep `name` is due and not running; if so, it is next due `everyMs` from now. */
  private isDue(name: string, everyMs: number): boolean {
    const now = (this.deps.now ?? Date.now)();
    const due = this.due.get(name) ?? now + everyMs;
    this.due.set(name, due);
    if (this.running.has(name) || now < due) return false;
    this.due.set(name, now + everyMs);
    return true;
  }

  /** Runs `task` beside the passes unless `key` runs already; `failed` is logged if it fails. */
  private beside(key: string, failed: string, task: () => Promise<unknown>): void {
    if (this.running.has(key)) return;
    this.running.add(key);
    void task()
      .catch((err: unknown) => this.deps.log.warn({ event: failed, key, err }, 'the next sweep retries'))
      .finally(() => this.running.delete(key));
  }

  /**
   * sweepInventories, the next one due no sooner than SWEEP_REST times its length after it ends:
   * a sweep's cost grows with the blobs every worker holds, and past the period it would otherwise
   * run back to back; the period stretches instead (docs/operations.md, "Worker restart").
   */
  private async pacedSweep(): Promise<number> {
    const now = this.deps.now ?? Date.now;
    const started = now();
    try {
      return await this.sweepInventories();
    } finally {
      const ended = now();
      const nextDueAt = Math.max(this.due.get(':inventories') ?? 0, ended + SWEEP_REST * (ended - started));
      this.due.set(':inventories', nextDueAt);
      const at = { durationMs: ended - started, nextDueAt };
      this.deps.log.info({ event: 'reconcile.sweep_done', ...at }, 'inventory sweep of every worker done');
    }
  }

  /** Not leading (or stopped): observed inventories are let go; a leader's sweep finds their work. */
  private dropObserved(): void {
    for (const o of this.observed.splice(0)) o.done();
  }

  /**
   * Every serving `up` worker's inventory (not one being reconciled), one worker at a time. A
   * failure leaves the worker to the next sweep.
   */
  async sweepInventories(): Promise<number> {
    const { metadata, raft, log } = this.deps;
    let noted = 0;
    for (const node of await metadata.listNodes()) {
      if (node.state !== 'up' || this.running.has(node.nodeId) || !raft.isLeader()) continue;
      this.running.add(node.nodeId);
      noted += await this.inventories.sweepOne(node).catch((err: unknown) => {
        const at = { nodeId: node.nodeId, err: (err as Error).message };
        log.debug({ event: 'reconcile.sweep_failed', ...at }, 'inventory not read; next sweep retries');
        return 0;
      });
      this.running.delete(node.nodeId);
    }
    return noted;
  }
}
