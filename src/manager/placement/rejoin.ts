// Rejoin, the executor's half for what workers hold: an inventory (a registering worker's, or one
// the reconciler reads in its periodic sweep) against the tables, one line at a time as
// plan.ts decides (planHeldCopy, planStray, planMissing), each line holding its object's slot
// (execute.ts), which the upload and delete paths hold too. Every decision is logged with the object
// id (`event: 'reconcile.*'`).
//
// Blobs no record lists (orphans, and strays: unlisted copies of recorded objects) are deleted
// only after the orphan grace, counted from their first sighting on this leader (observe.ts,
// FirstSeen), since an upload writes its blobs before it commits their record; never while this
// manager's own upload of the id runs (it holds the object's slot); and only after a fresh look at
// the table.

import { isDeepStrictEqual } from 'node:util';
import { expectedOf, type NodeView, type ObjectView } from '../../metadata/commands.ts';
import type { InventoryEntry } from '../workerClient.ts';
import {
  commitChange,
  counters,
  deleteCopy,
  type ExecutorDeps,
  nodesById,
  planReadingBack,
  runLanes,
  unlistedIn,
} from './execute.ts';
import { compareInventory, FirstSeen, lackedBy, objectsOn } from './observe.ts';
import { type Nodes, orphanDue, planHeldCopy, planMissing, planStray } from './plan.ts';

export interface InventoryReconcilerDeps extends ExecutorDeps {
  orphanGraceMs: number;
}

/** A worker's inventory lines in ascending id order, read anew at each call. */
export type InventorySource = () => AsyncIterable<InventoryEntry> | Iterable<InventoryEntry>;

/** Inventory lines reconciled at once: each waits on read-backs and a commit (docs/operations.md). */
const RECONCILE_CONCURRENCY = 32;

/** Inventory lines read, and looked up in the table, at once by a rejoin: memory stays this size. */
const RECONCILE_BATCH = 512;

/** Due sightings one orphan sweep acts on at most: each waits on read-backs and a delete. */
export const ORPHANS_PER_SWEEP = 64;

const DECISIONS = [
  'kept',
  'readopted',
  'excessRemoved',
  'corruptDeleted',
  'orphanPending',
  'orphanDeleted',
  'strayDeleted',
  'strayReadopted',
  'missingDropped',
  'skipped',
  'failed',
] as const;
export type ReconcileDecision = (typeof DECISIONS)[number];
export type ReconcileSummary = Record<ReconcileDecision, number>;

export const emptySummary = (): ReconcileSummary => counters(DECISIONS);

export class InventoryReconciler {
  private readonly seen = new FirstSeen();
  private readonly now: () => number;

  constructor(private readonly deps: InventoryReconcilerDeps) {
    this.now = deps.now ?? Date.now;
  }

  /**
   * Decides on the copy of `id` on `nodeId` holding the object's slot: another action on the object
   * (a repair copying onto this worker, a stray being deleted, an upload) leaves it to the next rejoin
   * or sweep (`skipped`), and so does a failure (`failed`). Counts the decision; each that changed
   * something is logged as `reconcile.<decision>`, with `logged` beside the ids.
   */
  private async decide(
    summary: ReconcileSummary,
    nodeId: string,
    id: string,
    act: () => Promise<ReconcileDecision>,
    logged: object = {},
  ): Promise<ReconcileDecision> {
    const d = await this.deps.slots.run(id, act, 'skipped').catch((err: unknown) => {
      const at = { objectId: id, nodeId, err: (err as Error).message };
      this.deps.log.warn({ event: 'reconcile.blob_failed', ...at }, 'no decision for this copy');
      return 'failed' as const;
    });
    summary[d] += 1;
    this.deps.metrics.reconcileDecisions.inc({ decision: d });
    if (d === 'kept' || d === 'skipped' || d === 'failed') return d;
    const event = `reconcile.${d.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`)}`;
    this.deps.log.info({ event, objectId: id, nodeId, ...logged }, `copy of ${id} on ${nodeId}: ${d}`);
    return d;
  }

  /**
   * A serving worker's inventory, read by the periodic sweep, against the table both ways in one
   * merge with the node's index (compareInventory): blobs the table does not list there are noted
   * (deleted after their grace by sweepOrphans), and copies it lists there that the inventory lacks
   * are dropped once the worker confirms they are gone. That second half catches a rejoin cut
   * short (a leader change, a failure): the worker does not register again for it. The inventory
   * is read once and no line costs a lookup. Returns the blobs newly noted.
   */
  async sweepOne(node: NodeView): Promise<number> {
    const startedAt = this.now();
    const { nodeId } = node;
    let noted = 0;
    // Sightings on this node not listed again are gone from the worker: moot. Tracked this way
    // round so memory follows the few unrecorded blobs, not the inventory.
    const unseen = new Set(this.seen.all(nodeId).map((s) => s.id));
    const summary = emptySummary();
    let whole = true;
    const compared = compareInventory(
      this.deps.workers.inventory(node.url),
      objectsOn(this.deps.metadata, nodeId),
    );
    // Dropped a batch at a time, in lanes.
    const lacking: string[] = [];
    const dropLacking = () => this.dropMissing(nodeId, lacking.splice(0), startedAt, summary);
    for await (const c of compared) {
      if (c.kind === 'unordered' || !this.deps.raft.isLeader()) {
        if (c.kind === 'unordered') this.logUnordered(nodeId);
        whole = false;
        break;
      }
      if (c.kind === 'lacking') {
        lacking.push(c.id);
        if (lacking.length >= RECONCILE_BATCH) await dropLacking();
        continue;
      }
      unseen.delete(c.line.id);
      if (c.kind === 'listed') this.seen.forget(nodeId, c.line.id);
      else if (this.seen.note(nodeId, c.line.id, this.now())) noted += 1;
    }
    await dropLacking();
    if (whole) for (const id of unseen) this.seen.forget(nodeId, id);
    if (summary.missingDropped > 0) {
      this.deps.log.warn(
        { event: 'reconcile.sweep_missing', nodeId, ...summary },
        'recorded copies missing from their worker dropped; repair makes new ones',
      );
    }
    return noted;
  }

  private logUnordered(nodeId: string): void {
    this.deps.log.warn(
      { event: 'reconcile.inventory_unordered', nodeId },
      'inventory not in id order: copies it lacks are left to the next rejoin',
    );
  }

  /**
   * A registering worker's inventory against the tables: each line decided, then the recorded
   * copies it lacks. `inventory` gives the lines in ascending id order, anew at each call (it is
   * read twice). The caller runs one reconciliation per node at a time.
   */
  async reconcile(nodeId: string, inventory: InventorySource, startedAt: number): Promise<ReconcileSummary> {
    const { metadata, log } = this.deps;
    const summary = emptySummary();
    const lines = (async function* () {
      yield* inventory();
    })();
    try {
      for (;;) {
        const batch: InventoryEntry[] = [];
        while (batch.length < RECONCILE_BATCH) {
          const r = await lines.next();
          if (r.done) break;
          batch.push(r.value);
        }
        if (batch.length === 0 || !this.deps.raft.isLeader()) break;
        // Node states steer decisions: read once a batch, not for every blob.
        const nodes = await nodesById(metadata);
        const self = nodes.get(nodeId);
        if (!self) break;
        const rest = await this.keepListed(self, batch);
        const decideLine = (line: InventoryEntry) =>
          this.decide(summary, nodeId, line.id, () => this.reconcileLine(self, line, nodes)).then(() => {});
        await runLanes(RECONCILE_CONCURRENCY, rest, decideLine, () => this.deps.raft.isLeader());
        summary.kept += batch.length - rest.length;
        if (batch.length < RECONCILE_BATCH) break;
      }
    } finally {
      await lines.return(undefined);
    }
    if (!this.deps.raft.isLeader() || !(await metadata.getNode(nodeId))) return summary;
    await this.reconcileLacking(nodeId, inventory, startedAt, summary);
    log.info({ event: 'reconcile.done', nodeId, ...summary }, `reconciled the inventory of ${nodeId}`);
    return summary;
  }

  /**
   * The lines of `batch` whose copy the record lists on `self` with the line's size and sha256,
   * read in one lookup for the batch: kept, which changes nothing, so no slot is needed (an action
   * on the object meanwhile decides on its own read). Returns the other lines, to be decided one
   * by one under their slot (reconcileLine).
   */
  private async keepListed(self: NodeView, batch: InventoryEntry[]): Promise<InventoryEntry[]> {
    const objects = await this.deps.metadata.getObjects(batch.map((l) => l.id));
    const rest: InventoryEntry[] = [];
    batch.forEach((line, i) => {
      const o = objects[i];
      if (o?.replicas.includes(self.nodeId) && o.size === line.size && o.sha256 === line.sha256)
        this.seen.forget(self.nodeId, line.id);
      else rest.push(line);
    });
    const kept = batch.length - rest.length;
    if (kept > 0) this.deps.metrics.reconcileDecisions.inc({ decision: 'kept' }, kept);
    return rest;
  }

  /** A worker's copy of one inventory line against the record, its object's slot held (see decide). */
  private async reconcileLine(
    self: NodeView,
    line: InventoryEntry,
    nodes: Nodes,
  ): Promise<ReconcileDecision> {
    const object = await this.deps.metadata.getObject(line.id);
    if (object) this.seen.forget(self.nodeId, line.id);
    const { action, checks } = await planReadingBack(this.deps.workers, object, nodes, (checks) =>
      planHeldCopy(self, line, object, nodes, checks),
    );
    if (action.kind === 'orphan' || !object) {
      // A blob no record knows: noted; sweepOrphans deletes it once its grace has passed.
      this.seen.note(self.nodeId, line.id, this.now());
      return 'orphanPending';
    }
    const { log } = this.deps;
    const at = { objectId: line.id, nodeId: self.nodeId };
    switch (action.kind) {
      case 'kept':
        return 'kept';
      case 'skip':
        if (action.reason === 'unproven' && self.state === 'up')
          log.warn(
            { event: 'reconcile.returning_copy_unproven', ...at, check: checks.get(self.nodeId) },
            'returning copy not re-adopted: its bytes could not be read',
          );
        return 'skipped';
      case 'deleteCorrupt':
        return this.deleteCorrupt(self, object, action.listed);
      case 'deleteExcess':
        // The read under the slot proves the lead and sees a re-adoption.
        return (await deleteCopy(this.deps, self, object.id)) ? 'excessRemoved' : 'kept';
      case 'readopt':
      case 'readoptOnly': {
        const readopt = { type: 'addReplica', id: object.id, nodeId: self.nodeId } as const;
        if (!(await commitChange(this.deps, object, readopt))) return 'skipped';
        if (action.kind === 'readoptOnly')
          log.warn(
            { event: 'reconcile.excess_unproven', ...at },
            'copy too many kept until the others are proved',
          );
        return 'readopted';
      }
      case 'replace':
        return this.trade(self, object, action.remove, nodes);
    }
  }

  /**
   * A copy with other bytes than the record's: the record forgets it (unless it is the last one),
   * then it is deleted. An unlisted one is deleted only after a look at the record as of everything
   * committed (a deposed leader's table may predate the record these bytes belong to).
   */
  private async deleteCorrupt(self: NodeView, object: ObjectView, listed: boolean) {
    if (listed) {
      const change = { type: 'removeReplica', id: object.id, nodeId: self.nodeId } as const;
      if (!(await commitChange(this.deps, object, change, 'reconcile.corrupt_last_copy'))) return 'skipped';
      await this.deps.workers.deleteBlob(self.url, object.id);
      return 'corruptDeleted';
    }
    const deleted = await deleteCopy(this.deps, self, object.id, unlistedIn(object, self.nodeId));
    return deleted ? 'corruptDeleted' : 'skipped';
  }

  /**
   * Records the returning copy and forgets `victim`, the copy that replaced it, in one entry. A
   * delete that fails leaves a stray the sweep removes.
   */
  private async trade(self: NodeView, object: ObjectView, victim: string, nodes: Nodes) {
    const change = { type: 'replaceReplica', id: object.id, add: self.nodeId, remove: victim } as const;
    // Refused: the record changed since it was read; nothing was traded, the next rejoin decides again.
    if (!(await commitChange(this.deps, object, change))) return 'skipped';
    const victimNode = nodes.get(victim);
    if (victimNode)
      await deleteCopy(this.deps, victimNode, object.id).catch((err: unknown) => {
        const at = { objectId: object.id, nodeId: victim, err: (err as Error).message };
        this.deps.log.warn(
          { event: 'reconcile.excess_delete_failed', ...at },
          'excess copy left for the sweep',
        );
      });
    return 'excessRemoved' as const;
  }

  /**
   * Deletes (or re-adopts) the unrecorded blobs whose grace has passed, at most ORPHANS_PER_SWEEP of
   * them; returns those deleted. Sightings on a worker not serving wait for it: its delete would
   * only wait for a timeout. One acted on goes to the back of the line, so a few that keep failing
   * do not hold up the rest.
   */
  async sweepOrphans(): Promise<number> {
    if (!this.deps.raft.isLeader()) return 0;
    const nodes = await nodesById(this.deps.metadata);
    const now = this.now();
    const due = this.seen.all().filter((o) => {
      const node = nodes.get(o.nodeId);
      // A node gone from the table is not skipped: actOnStray forgets its sightings.
      return (
        orphanDue(o.firstSeen, now, this.deps.orphanGraceMs) && (!node || this.deps.liveness.isServing(node))
      );
    });
    const summary = emptySummary();
    for (const o of due.slice(0, ORPHANS_PER_SWEEP)) {
      this.seen.requeue(o);
      const firstSeen = { firstSeen: o.firstSeen };
      await this.decide(summary, o.nodeId, o.id, () => this.actOnStray(o.nodeId, o.id), firstSeen);
    }
    return summary.orphanDeleted + summary.strayDeleted;
  }

  /**
   * An unrecorded blob past its grace, its slot held (an upload of the id running here holds it
   * from before its first copy until its record commits): as planStray decides, and a delete only if
   * the table, read afresh after the read-backs, still says what the plan was made on.
   */
  private async actOnStray(nodeId: string, id: string): Promise<ReconcileDecision> {
    if (!this.seen.get(nodeId, id) || !this.deps.raft.isLeader()) return 'skipped';
    const { metadata, log } = this.deps;
    const object = await metadata.getObject(id);
    const node = await metadata.getNode(nodeId);
    const nodes = await nodesById(metadata);
    const { action } = await planReadingBack(this.deps.workers, object, nodes, (checks) =>
      planStray(node, object, nodes, checks),
    );
    if (action.kind !== 'delete') this.seen.forget(nodeId, id);
    if (action.kind === 'unproven')
      log.warn(
        { event: 'reconcile.stray_unproven', objectId: id, nodeId },
        'unrecorded copy could not be read back; neither re-adopted nor deleted',
      );
    if (action.kind === 'readopt') {
      const readopt = { type: 'addReplica', id, nodeId } as const;
      return (await commitChange(this.deps, object!, readopt)) ? 'strayReadopted' : 'skipped';
    }
    if (action.kind !== 'delete') return 'skipped';
    // The table as of everything committed, read last, so neither a record committed under another
    // leader and not applied here yet, nor one committed during the read-backs, nor a deposed
    // leader's stale table, makes a recorded copy look orphaned. Changed: the next sweep plans again.
    if (!(await deleteCopy(this.deps, node!, id, (fresh) => sameRecord(object, fresh)))) return 'skipped';
    this.seen.forget(nodeId, id);
    return object ? 'strayDeleted' : 'orphanDeleted';
  }

  /**
   * Copies the record lists on `nodeId` that the inventory lacks (observe.ts, lackedBy). An
   * inventory out of order stops the search; the next rejoin or sweep looks again.
   */
  private async reconcileLacking(
    nodeId: string,
    inventory: InventorySource,
    inventoryStartedAt: number,
    summary: ReconcileSummary,
  ): Promise<void> {
    const lacking = lackedBy(inventory(), objectsOn(this.deps.metadata, nodeId));
    let unordered = false;
    const next = async (): Promise<string | undefined> => {
      const r = unordered ? undefined : await lacking.next();
      if (r === undefined || r.done) return undefined;
      if (r.value !== null) return r.value;
      if (!unordered) this.logUnordered(nodeId);
      unordered = true;
      return undefined;
    };
    try {
      await this.dropMissing(nodeId, next, inventoryStartedAt, summary);
    } finally {
      await lacking.return(undefined);
    }
  }

  /**
   * Recorded copies on `nodeId` its inventory lacked, each confirmed and dropped (reconcileMissing)
   * in lanes, as the listed lines are: a worker back with an empty disk lacks every copy it had, and
   * one at a time (a read-back and a commit each) dropped under 200 a second; side by side the
   * batcher carries many drops in one Raft round.
   */
  private dropMissing(
    nodeId: string,
    ids: string[] | (() => Promise<string | undefined>),
    listedAt: number,
    summary: ReconcileSummary,
  ): Promise<void> {
    const drop = async (id: string) => {
      await this.reconcileMissing(nodeId, id, listedAt, summary);
    };
    return runLanes(RECONCILE_CONCURRENCY, ids, drop, () => this.deps.raft.isLeader());
  }

  /**
   * A copy its worker reports lost (removed by its scrubber): dropped from the record once the
   * worker confirms it does not hold it, like a copy a registration's inventory lacks.
   */
  dropMissingCopy(nodeId: string, id: string): Promise<ReconcileDecision> {
    return this.reconcileMissing(nodeId, id, Number.POSITIVE_INFINITY, emptySummary());
  }

  /** A recorded copy on `nodeId` its inventory lacked: dropped once the worker confirms (planMissing). */
  private reconcileMissing(nodeId: string, id: string, listedAt: number, summary: ReconcileSummary) {
    return this.decide(summary, nodeId, id, async () => {
      const { metadata, workers } = this.deps;
      const object = await metadata.getObject(id);
      const node = await metadata.getNode(nodeId);
      if (!node || planMissing(object, nodeId, listedAt).kind === 'skip') return 'skipped';
      // The copy may have arrived after the listing (a repair to this node): ask the worker itself.
      const action = planMissing(object, nodeId, listedAt, await workers.holds(node.url, id));
      if (action.kind !== 'drop') return action.kind === 'kept' ? 'kept' : 'skipped';
      const change = { type: 'removeReplica', id, nodeId } as const;
      const dropped = await commitChange(this.deps, object!, change, 'reconcile.last_copy_missing');
      return dropped ? 'missingDropped' : 'skipped';
    });
  }
}

/** The same record (or none both times), as `expected` compares it: a plan made on `a` holds for `b`. */
function sameRecord(a: ObjectView | null, b: ObjectView | null): boolean {
  return isDeepStrictEqual(a && expectedOf(a), b && expectedOf(b));
}
