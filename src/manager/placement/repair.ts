// Repair, the executor's half for recorded objects: a pass over the work the tables show
// (observe.ts), each object planned (plan.ts: planRepair) and its action carried out, at most one
// action per object at a time (execute.ts). Objects short of a copy with a holder to copy from go
// in copy batches (copy.ts), an optimisation the planner does not see. Everything is found again
// from the tables on the next pass: a new leader finds exactly the work the old one left.

import type { ObjectView } from '../../metadata/commands.ts';
import { REPLICATION_FACTOR } from '../../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import { type PlacementCandidate, rankTargets } from '../placement.ts';
import { type Classified, Copier, noOutcomes, type Outcomes, type RepairOutcome } from './copy.ts';
import {
  commitChange,
  deleteCopy,
  type ExecutorDeps,
  nodesById,
  planReadingBack,
  type Release,
  runLanes,
} from './execute.ts';
import { RepairWalk } from './observe.ts';
import { type Checks, classify, type Nodes, needsRepair, planRepair, type RepairAction } from './plan.ts';

/** Bounds of one copy batch: the objects one holder copies to one target in one request. */
const BATCH_OBJECTS = 32;
const BATCH_BYTES = 64 * 1024 * 1024;

export interface RepairDeps extends ExecutorDeps {
  /** Copy batches in flight at once (--repair-concurrency). */
  concurrency: number;
  /** Objects one pass takes on at most (bounds memory and the length of a pass). */
  maxObjectsPerPass?: number;
  /** Bytes one copy batch carries at most (default BATCH_BYTES). */
  batchBytes?: number;
}

/** How each reason to forget a copy is logged. */
const REMOVED = {
  leaving: ['repair.replica_dropped', 'replica on a leaving worker dropped'],
  badCopy: ['repair.bad_copy_dropped', 'recorded copy missing or wrong; dropped'],
  excess: ['repair.excess_trimmed', 'copy too many removed'],
} as const;

export interface PassReport {
  examined: number;
  outcomes: Outcomes;
  drained: string[];
}

/** Objects one holder is to copy to one target. */
interface CopyBatch {
  sourceId: string;
  targetId: string;
  items: Classified[];
  bytes: number;
}

export class Repairer {
  /** Objects already reported unavailable: logged once, not on every pass. */
  private readonly reportedUnavailable = new Set<string>();
  private readonly walk: RepairWalk;
  private readonly now: () => number;
  private readonly batchBytes: number;
  private readonly copier: Copier;

  constructor(private readonly deps: RepairDeps) {
    this.now = deps.now ?? Date.now;
    this.batchBytes = deps.batchBytes ?? BATCH_BYTES;
    this.copier = new Copier(deps, this.now);
    this.walk = new RepairWalk(deps.metadata);
  }

  /** One pass over the difference between the tables and the goal; null when not leader. */
  async pass(): Promise<PassReport | null> {
    const { raft, metadata } = this.deps;
    if (!raft.isLeader()) {
      this.updateGauges([], new Map());
      return null;
    }
    const byId = await nodesById(metadata);
    const objects = await this.walk.step(
      [...byId.values()],
      this.deps.maxObjectsPerPass ?? 2_000,
      (o) => this.classify(o, byId).sources.length > 0,
    );
    const work = objects.map((o) => this.classify(o, byId)).filter(needsRepair);
    this.updateGauges(work, byId);
    // Objects down to one live copy (or none) first: they are one failure away from loss.
    work.sort((a, b) => a.healthy.length - b.healthy.length);
    const outcomes = noOutcomes();
    const { batches, singles } = this.planBatches(work, byId, outcomes);
    const go = () => raft.isLeader();
    // A holder streams a batch's blobs one after the other: one copy in flight per batch, and
    // `concurrency` batches at once (measured by bench:repair, docs/operations.md).
    await runLanes(this.deps.concurrency, batches, (batch) => this.runBatch(batch, outcomes), go);
    await runLanes(
      this.deps.concurrency,
      singles,
      async (c) => {
        outcomes[await this.repairOne(c.object.id)] += 1;
      },
      go,
    );
    return { examined: work.length, outcomes, drained: await this.finishDrains() };
  }

  /**
   * Objects short of a copy with a holder go in batches by (holder, target); the rest (drops,
   * trims, unavailable objects, copies no target was found for) one at a time. A pass plans only
   * what its batches carry at once (placement reserves room for each copy planned, so large
   * objects would make every target look full); the rest waits for the next pass. Batches
   * alternate between pairs, so those in flight spread over the workers.
   */
  private planBatches(work: Classified[], byId: Nodes, out: Outcomes) {
    const byPair = new Map<string, CopyBatch[]>();
    const singles: Classified[] = [];
    let plannedBytes = 0;
    for (const c of work) {
      const target =
        c.healthy.length < REPLICATION_FACTOR && c.sources.length > 0 && this.rankFor(c, byId)[0];
      if (!target) singles.push(c);
      else if (plannedBytes >= this.deps.concurrency * this.batchBytes) out.skipped += 1;
      else {
        plannedBytes += c.object.size;
        // Spreads the next objects' targets as if this copy had landed already.
        this.deps.liveness.reservePlacement(target.nodeId, c.object.size);
        const sourceId = c.sources[0]!.nodeId;
        const list = byPair.get(`${sourceId}\0${target.nodeId}`) ?? [];
        byPair.set(`${sourceId}\0${target.nodeId}`, list);
        let batch = list.at(-1);
        if (!batch || batch.items.length >= BATCH_OBJECTS || batch.bytes + c.object.size > this.batchBytes) {
          batch = { sourceId, targetId: target.nodeId, items: [], bytes: 0 };
          list.push(batch);
        }
        batch.items.push(c);
        batch.bytes += c.object.size;
      }
    }
    const lists = [...byPair.values()];
    const batches: CopyBatch[] = [];
    for (let round = 0; lists.some((l) => l.length > round); round++)
      for (const list of lists) if (list[round]) batches.push(list[round]!);
    return { batches, singles };
  }

  /**
   * One batch: each object, its slot held, is read afresh and goes ahead only if it still needs a
   * copy, its holder still serves it and the target still fits; the rest are repaired alone. Each
   * copy the target failed is tried on the next target alone (a fallback). Each outcome is
   * counted once, also when a table read stops the batch part-way.
   */
  private async runBatch(batch: CopyBatch, outcomes: Outcomes): Promise<void> {
    const out = noOutcomes();
    const held: Release[] = [];
    try {
      const byId = await nodesById(this.deps.metadata);
      const source = byId.get(batch.sourceId);
      const target = byId.get(batch.targetId);
      const send: Classified[] = [];
      const alone: string[] = [];
      for (const planned of batch.items) {
        const slot = this.deps.slots.claim(planned.object.id);
        if (slot) held.push(slot);
        const object = slot && (await this.deps.metadata.getObject(planned.object.id));
        const c = object ? this.classify(object, byId) : null;
        const fits =
          c !== null &&
          source !== undefined &&
          c.healthy.length < REPLICATION_FACTOR &&
          c.sources.some((n) => n.nodeId === source.nodeId) &&
          this.rankFor(c, byId).some((t) => t.nodeId === batch.targetId);
        if (c === null) out.skipped += 1;
        else if (!fits) alone.push(c.object.id);
        else send.push(c);
      }
      const retry =
        send.length > 0 && source && target ? await this.copier.copyBatch(send, source, target, out) : [];
      for (const c of retry) {
        const ranked = this.rankFor(c, byId, batch.targetId);
        out[await this.copier.copyOne(c, ranked, byId, true).catch(() => 'failed' as const)] += 1;
      }
      for (const id of alone) out[await this.repairHeld(id)] += 1;
    } catch (err) {
      // A table read failed: the tables still show the work. Only what was not counted fails.
      this.deps.log.warn(
        { event: 'repair.batch_error', objects: batch.items.length, err: (err as Error).message },
        'repair batch failed; next pass retries',
      );
      out.failed += Math.max(0, batch.items.length - Object.values(out).reduce((a, b) => a + b, 0));
    } finally {
      for (const release of held) release();
      for (const key of Object.keys(out) as RepairOutcome[]) outcomes[key] += out[key];
    }
  }

  /** Brings one object one step closer to the goal, holding its slot; `skipped` when busy. */
  repairOne(id: string): Promise<RepairOutcome> {
    return this.deps.slots.run(id, () => this.repairHeld(id), 'skipped');
  }

  /** Plans from a fresh read of the tables (and the read-backs the plan asks for), then acts. */
  private async repairHeld(id: string): Promise<RepairOutcome> {
    try {
      const object = await this.deps.metadata.getObject(id);
      if (!object) return 'skipped';
      const byId = await nodesById(this.deps.metadata);
      const c = this.classify(object, byId);
      // Decided once: a worker heard again while the copies are read back is not one whose copy
      // they were read back for.
      const deleting = c.leaving.filter((n) => {
        const node = byId.get(n);
        return node !== undefined && this.deps.liveness.isServing(node);
      });
      const { action, checks } = await planReadingBack(this.deps.workers, object, byId, (checks) =>
        planRepair(c, byId, deleting, checks),
      );
      return await this.act(c, action, byId, checks);
    } catch (err) {
      // A commit that failed (leadership lost, timeout): the tables still show the work.
      const at = { objectId: id, err: (err as Error).message };
      this.deps.log.warn({ event: 'repair.error', ...at }, 'repair step failed; next pass retries');
      return 'failed';
    }
  }

  private async act(
    c: Classified,
    action: Exclude<RepairAction, { kind: 'readBack' }>,
    byId: Nodes,
    checks: Checks,
  ): Promise<RepairOutcome> {
    const { object } = c;
    if (action.kind !== 'unavailable') this.reportedUnavailable.delete(object.id);
    switch (action.kind) {
      case 'healthy':
        return 'healthy';
      case 'unavailable':
        if (!this.reportedUnavailable.has(object.id) && this.reportedUnavailable.size < 100_000) {
          this.reportedUnavailable.add(object.id);
          this.deps.log.warn(
            { event: 'repair.unavailable', objectId: object.id, replicas: object.replicas },
            'no serving worker holds a copy; waiting for one to return',
          );
        }
        return 'unavailable';
      case 'copy':
        return this.copier.copyOne(c, this.rankFor(c, byId), byId);
      case 'remove':
        return (await this.remove(c, action.nodeIds, action.deleteFrom, action.reason, byId)) ?? 'skipped';
      case 'trim':
        return (await this.remove(c, [action.nodeId], [action.nodeId], 'excess', byId))
          ? 'trimmed'
          : 'skipped';
      case 'wait':
        if (c.healthy.length > REPLICATION_FACTOR)
          this.deps.log.warn(
            { event: 'repair.trim_unproven', objectId: object.id, checks: Object.fromEntries(checks) },
            'copy too many kept: the copies that would stay could not all be read back',
          );
        return 'skipped';
    }
  }

  /** The record forgets the copies on `nodeIds`; those on `deleteFrom` are deleted once it has. */
  private async remove(
    c: Classified,
    nodeIds: string[],
    deleteFrom: string[],
    reason: keyof typeof REMOVED,
    byId: Nodes,
  ): Promise<'dropped' | null> {
    let removed = false;
    // Each removal is planned on the record as the one before left it.
    let planned = c.object;
    for (const nodeId of nodeIds) {
      const change = { type: 'removeReplica', id: planned.id, nodeId } as const;
      const changed = await commitChange(this.deps, planned, change);
      if (!changed) continue;
      removed = true;
      planned = changed;
      const [event, message] = REMOVED[reason];
      const logged = { event, objectId: c.object.id, nodeId, replicas: changed.replicas };
      if (reason === 'badCopy') this.deps.log.warn(logged, message);
      else this.deps.log.info(logged, message);
      const node = byId.get(nodeId);
      if (node && deleteFrom.includes(nodeId))
        await deleteCopy(this.deps, node, c.object.id).catch(() => false);
    }
    return removed || reason !== 'excess' ? 'dropped' : null;
  }

  /** Targets for one more copy of `c`, best first: live, not holding it, other zones first. */
  private rankFor(c: Classified, byId: Nodes, skip?: string): PlacementCandidate[] {
    return rankTargets(this.deps.liveness.candidates([...byId.values()]), {
      exclude: new Set(skip === undefined ? c.object.replicas : [...c.object.replicas, skip]),
      avoidZones: new Set(c.healthy.map((n) => byId.get(n)?.zone).filter((z) => z !== undefined)),
      size: c.object.size,
    });
  }

  private classify(object: ObjectView, byId: Nodes): Classified {
    return { object, ...classify(object, byId, (n) => this.deps.liveness.isServing(n)) };
  }

  private updateGauges(work: Classified[], byId: Nodes): void {
    const now = this.now();
    let under = 0;
    let oldest = 0;
    for (const w of work) {
      if (w.healthy.length >= REPLICATION_FACTOR) continue;
      under += 1;
      // Under-replicated since its copy's worker left (or since creation, whichever is later).
      const left = Math.min(...w.leaving.map((n) => byId.get(n)?.stateSince ?? w.object.createdAt));
      oldest = Math.max(oldest, now - Math.max(w.object.createdAt, Number.isFinite(left) ? left : 0));
    }
    this.deps.metrics.underReplicated.set(under);
    this.deps.metrics.unavailable.set(work.filter((w) => w.sources.length === 0).length);
    this.deps.metrics.oldestUnderReplicatedSeconds.set(oldest / 1000);
  }

  /** A draining node whose index is empty has nothing left: it becomes `drained`. */
  private async finishDrains(): Promise<string[]> {
    const { raft, metadata, log } = this.deps;
    const drained: string[] = [];
    for (const node of await metadata.listNodes()) {
      if (node.state !== 'draining' || !raft.isLeader()) continue;
      if ((await metadata.objectsOnNode(node.nodeId, { limit: 1 })).items.length > 0) continue;
      const at = this.now();
      const command = {
        type: 'markNodeState',
        nodeId: node.nodeId,
        state: 'drained',
        expected: 'draining',
        at,
      } as const;
      if ((await proposeCommand(raft, command).catch(() => null))?.ok) {
        drained.push(node.nodeId);
        log.info({ event: 'drain.completed', nodeId: node.nodeId }, `worker ${node.nodeId} drained`);
      }
    }
    return drained;
  }
}
