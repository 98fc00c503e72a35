// Repair, the executor's half for recorded objects: a pass over the work the tables show
// (observe.ts), each object planned (plan.ts: planRepair) and its action carried out, at most one
// action per object at a time (execute.ts). The copies a pass plans are made together, in copy
// batches (copy.ts), an optimisation the planner does not see. Everything is found again from the
// tables on the next pass: a new leader finds exactly the work the old one left.

import type { ObjectView } from '../../metadata/commands.ts';
import { REPLICATION_FACTOR } from '../../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import { rankTargets } from '../placement.ts';
import {
  BATCH_BYTES,
  type Classified,
  Copier,
  type CopyJob,
  MAX_TARGETS_PER_REPAIR,
  noOutcomes,
  type Outcomes,
  type RepairOutcome,
} from './copy.ts';
import { CopylessObjects } from './copyless.ts';
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
import {
  type Checks,
  classify,
  judgeSourceless,
  LEAVING,
  type Nodes,
  needsRepair,
  planRepair,
  type RepairAction,
} from './plan.ts';

export interface RepairDeps extends ExecutorDeps {
  /** Objects planned, and copy batches in flight, at once (--repair-concurrency). */
  concurrency: number;
  /** Objects one pass takes on at most (bounds memory and the length of a pass). */
  maxObjectsPerPass?: number;
  /** Bytes one copy batch carries at most (default BATCH_BYTES). */
  batchBytes?: number;
}

/** Tracked verdicts a pass checks against the tables (the rest wait for the next passes). */
const REVALIDATE_PAGE = 2_000;
/** How often the copies of a lost object are asked again: one may be back (restored, rejoined). */
const LOST_RECHECK_MS = 60_000;
/** Lost objects whose copies a pass asks again, at most. */
const RECHECKS_PER_PASS = 32;

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

/** The copies planned so far, each holding its object's slot until the copier gives it back. */
interface Planned {
  jobs: CopyJob[];
  bytes: number;
}

export class Repairer {
  /** Objects already reported unavailable: logged once, not on every pass. */
  private readonly reportedUnavailable = new Set<string>();
  /**
   * Objects already reported with no target, and those found so in the running pass: one line per
   * pass names the new ones. Logged per object on every pass, a cluster whose workers were full
   * wrote a line a second for every object it could not repair (500 a second with 500 objects).
   */
  private readonly reportedNoTarget = new Set<string>();
  private newlyWithoutTarget: string[] = [];
  private readonly walk: RepairWalk;
  private readonly now: () => number;
  private readonly batchBytes: number;
  private readonly copier: Copier;
  /** Objects found with no copy to repair from, unavailable or lost: not planned while that holds. */
  private readonly copyless = new CopylessObjects();
  /** Whether the last pass ran as leader: a pass that does and follows one that did not took over. */
  private leading = false;

  constructor(private readonly deps: RepairDeps) {
    this.now = deps.now ?? Date.now;
    this.batchBytes = deps.batchBytes ?? BATCH_BYTES;
    this.copier = new Copier(deps, { concurrency: deps.concurrency, batchBytes: this.batchBytes }, this.now);
    this.walk = new RepairWalk(deps.metadata);
  }

  /** One pass over the difference between the tables and the goal; null when not leader. */
  async pass(): Promise<PassReport | null> {
    const { raft, metadata } = this.deps;
    if (!raft.isLeader()) {
      this.leading = false;
      this.copyless.clear();
      await this.updateGauges([], new Map());
      this.deps.metrics.lostCounted.set(0);
      return null;
    }
    if (!this.leading) {
      // A lost object is found only when the walk reaches it (an object whose copies the record
      // names on serving workers looks whole until read back): the lost count is a lower bound
      // until the walk has gone round the whole table under this leadership.
      this.leading = true;
      this.walk.restart();
    }
    const byId = await nodesById(metadata);
    await this.revalidate(byId);
    const objects = await this.walk.step([...byId.values()], this.deps.maxObjectsPerPass ?? 2_000, (o) => {
      const c = this.classify(o, byId);
      return c.sources.length > 0 && this.copyless.holds(o, c) === null;
    });
    const work = this.needingWork(objects.map((o) => this.classify(o, byId)));
    await runLanes(this.deps.concurrency, this.copyless.takeCameBack(), (id) => this.dropMissingBeside(id));
    await this.updateGauges(work, byId);
    // Objects down to one live copy (or none) first: they are one failure away from loss.
    work.sort((a, b) => a.healthy.length - b.healthy.length);
    // Each object is planned from a fresh read under its slot and acted on; the copies planned are
    // then made together, their slots held from their plan until their outcome.
    const outcomes = noOutcomes();
    const planned: Planned = { jobs: [], bytes: 0 };
    const sourceless: Classified[] = [];
    const step = async (c: Classified) => {
      const outcome = await this.step(c.object.id, planned);
      if (outcome !== null) outcomes[outcome] += 1;
    };
    this.newlyWithoutTarget = [];
    try {
      await runLanes(this.deps.concurrency, work, step, () => raft.isLeader());
      await this.copier.copy(planned.jobs, outcomes, sourceless);
    } finally {
      // Jobs the copier never finished (leadership lost) hold their slot still.
      for (const job of planned.jobs) job.release();
    }
    const judge = async (c: Classified) => {
      if ((await this.judge(c.object.id)) === 'lost') outcomes.lost += 1;
    };
    await runLanes(this.deps.concurrency, sourceless, judge, () => raft.isLeader());
    this.reportNoTarget(outcomes.noTarget);
    const drained = await this.finishDrains();
    if (work.length > 0) await this.recount(work);
    // Set once the pass has judged what its last step of the walk found.
    this.deps.metrics.lostCounted.set(this.walk.coveredAll ? 1 : 0);
    return { examined: work.length, outcomes, drained };
  }

  /**
   * The gauges as the pass leaves its objects: counted only from the pass's start, they showed the
   * work it had just done (a drain reported done, then `status` saying its objects were
   * under-replicated) until the next pass.
   */
  private async recount(work: Classified[]): Promise<void> {
    const byId = await nodesById(this.deps.metadata);
    const now = await this.deps.metadata.getObjects(work.map((w) => w.object.id));
    const left = this.needingWork(now.flatMap((o) => (o === null ? [] : [this.classify(o, byId)])));
    await this.updateGauges(left, byId);
  }

  /**
   * The objects off their goal that a pass plans: not those with a verdict of no source that still
   * holds (lost, or unavailable as judged). An object no serving worker holds is planned (it is
   * reported unavailable once) and noted as unavailable.
   */
  private needingWork(classified: Classified[]): Classified[] {
    return classified.filter((c) => {
      const judged = this.copyless.observe(c.object, c);
      return needsRepair(c) && (!judged || c.sources.length === 0);
    });
  }

  /**
   * Checks a page of the tracked verdicts against the tables (an object deleted, a copy re-adopted,
   * a worker back: the verdict goes), and asks the copies of lost objects again now and then.
   */
  private async revalidate(byId: Nodes): Promise<void> {
    const ids = this.copyless.page(REVALIDATE_PAGE);
    if (ids.length === 0) return;
    const objects = await this.deps.metadata.getObjects(ids);
    const now = this.now();
    const due: string[] = [];
    for (const [i, id] of ids.entries()) {
      const object = objects[i];
      if (!object) {
        this.copyless.forget(id);
        continue;
      }
      this.copyless.observe(object, this.classify(object, byId));
      if (due.length < RECHECKS_PER_PASS && this.copyless.dueForCheck(id, now, LOST_RECHECK_MS)) due.push(id);
    }
    await runLanes(this.deps.concurrency, due, async (id) => void (await this.judge(id)));
  }

  /**
   * An object whose every holder answered it has no copy to send (or one whose verdict is due):
   * its copies are read back and it is judged lost, unavailable or worth another pass
   * (judgeSourceless). A new verdict is logged once and then holds: no copy is tried meanwhile.
   */
  private async judge(id: string): Promise<'lost' | 'unavailable' | 'retry' | 'busy'> {
    const { metadata, workers, log, metrics } = this.deps;
    return this.deps.slots.run(
      id,
      async () => {
        const object = await metadata.getObject(id);
        if (!object) {
          this.copyless.forget(id);
          return 'retry';
        }
        const byId = await nodesById(metadata);
        const c = this.classify(object, byId);
        const was = this.copyless.holds(object, c);
        const { action, checks } = await planReadingBack(workers, object, byId, (checks) =>
          judgeSourceless(object, c, checks),
        );
        const at = { objectId: id, replicas: object.replicas, checks: Object.fromEntries(checks) };
        if (action.kind === 'retry') {
          this.copyless.forget(id);
          if (was !== 'lost') return 'retry';
          log.warn({ event: 'repair.copy_back', ...at }, 'a lost object has a copy again');
          // The copies still missing go from the record, so repair makes new ones.
          const bad = object.replicas.filter((n) => checks.get(n) === 'bad');
          if (bad.length > 0 && object.replicas.some((n) => checks.get(n) === 'good'))
            await this.remove(c, bad, bad, 'badCopy', byId);
          return 'retry';
        }
        if (!this.copyless.set(object, c, action.kind, this.now())) return action.kind;
        if (action.kind === 'lost') {
          metrics.foundLost.inc();
          log.error(
            { event: 'repair.lost', ...at },
            'object lost: every worker its record names is up and holds no intact copy; repair stops trying until a copy comes back',
          );
        } else {
          log.warn(
            { event: 'repair.unavailable', ...at },
            'the serving workers hold no copy; the others are down: waiting for one to return',
          );
        }
        return action.kind;
      },
      'busy' as const,
    );
  }

  /**
   * An object found lost whose record changed since, most often by a copy re-adopted: the copies
   * the record still names were found missing, and it cannot drop the last one. Each serving copy
   * is read back; those missing or wrong are dropped while one reads back whole, so repair makes
   * new ones instead of counting a copy that is gone.
   */
  private async dropMissingBeside(id: string): Promise<void> {
    const { metadata, workers } = this.deps;
    await this.deps.slots.run(
      id,
      async () => {
        const object = await metadata.getObject(id);
        if (!object) return;
        const byId = await nodesById(metadata);
        const c = this.classify(object, byId);
        const serving = c.sources.map((n) => n.nodeId);
        const { checks } = await planReadingBack(workers, object, byId, (checks) => {
          const missing = serving.filter((n) => !checks.has(n));
          return missing.length > 0
            ? { kind: 'readBack' as const, nodeIds: missing }
            : { kind: 'done' as const };
        });
        const bad = serving.filter((n) => checks.get(n) === 'bad');
        if (bad.length === 0 || !serving.some((n) => checks.get(n) === 'good')) return;
        this.deps.log.warn(
          {
            event: 'repair.copy_back',
            objectId: id,
            replicas: object.replicas,
            checks: Object.fromEntries(checks),
          },
          'a lost object has a copy again; the copies still found missing are dropped',
        );
        await this.remove(c, bad, bad, 'badCopy', byId);
      },
      undefined,
    );
  }

  /** Plans from a fresh read of the tables (and the read-backs the plan asks for), then acts; null: a copy planned. */
  private async step(id: string, planned: Planned): Promise<RepairOutcome | null> {
    const release = this.deps.slots.claim(id);
    if (release === null) return 'skipped';
    let queued = false;
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
      if (action.kind !== 'copy') return await this.act(c, action, byId, checks);
      const outcome = this.planCopy(c, byId, planned, release);
      queued = outcome === null;
      return outcome;
    } catch (err) {
      // A commit that failed (leadership lost, timeout): the tables still show the work.
      const at = { objectId: id, err: (err as Error).message };
      this.deps.log.warn({ event: 'repair.error', ...at }, 'repair step failed; next pass retries');
      return 'failed';
    } finally {
      if (!queued) release();
    }
  }

  /**
   * Plans a copy of `c` to its best targets (null), unless the copies planned already fill every
   * batch that runs at once: placement reserves room for each copy planned, so large objects would
   * make every target look full; the rest waits for the next pass.
   */
  private planCopy(c: Classified, byId: Nodes, planned: Planned, release: Release): RepairOutcome | null {
    const { object } = c;
    if (planned.bytes >= this.deps.concurrency * this.batchBytes) return 'skipped';
    const targets = rankTargets(this.deps.liveness.candidates([...byId.values()]), {
      exclude: new Set(object.replicas),
      avoidZones: new Set(c.healthy.map((n) => byId.get(n)?.zone).filter((z) => z !== undefined)),
      size: object.size,
    })
      .flatMap((t) => byId.get(t.nodeId) ?? [])
      .slice(0, MAX_TARGETS_PER_REPAIR);
    if (targets.length === 0) {
      this.deps.metrics.failed.inc();
      if (!this.reportedNoTarget.has(object.id) && this.reportedNoTarget.size < 100_000) {
        this.reportedNoTarget.add(object.id);
        this.newlyWithoutTarget.push(object.id);
      }
      return 'noTarget';
    }
    this.reportedNoTarget.delete(object.id);
    // Spreads the next objects' targets as if this copy had landed already.
    this.deps.liveness.reservePlacement(targets[0]!.nodeId, object.size);
    planned.bytes += object.size;
    planned.jobs.push({ c, holders: [...c.sources], targets, attempt: 0, release });
    return null;
  }

  private async act(
    c: Classified,
    action: Exclude<RepairAction, { kind: 'readBack' | 'copy' }>,
    byId: Nodes,
    checks: Checks,
  ): Promise<RepairOutcome> {
    const { object } = c;
    this.reportedNoTarget.delete(object.id);
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
      case 'remove':
        await this.remove(c, action.nodeIds, action.deleteFrom, action.reason, byId);
        return 'dropped';
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

  /**
   * The record forgets the copies on `nodeIds`; those on `deleteFrom` are deleted once it has.
   * False when the record refused every removal.
   */
  private async remove(
    c: Classified,
    nodeIds: string[],
    deleteFrom: string[],
    reason: keyof typeof REMOVED,
    byId: Nodes,
  ): Promise<boolean> {
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
    return removed;
  }

  /** One line for the objects this pass found with no target that no earlier line named. */
  private reportNoTarget(withoutTarget: number): void {
    const ids = this.newlyWithoutTarget;
    if (ids.length === 0) return;
    this.deps.log.warn(
      { event: 'repair.no_target', objects: ids.length, withoutTarget, objectIds: ids.slice(0, 10) },
      `no live worker takes a copy of ${ids.length} more objects (none has room, or none is up beside their copies); repair waits for one`,
    );
  }

  private classify(object: ObjectView, byId: Nodes): Classified {
    return { object, ...classify(object, byId, (n) => this.deps.liveness.isServing(n)) };
  }

  /**
   * `work` is what a pass examined: at most maxObjectsPerPass of the leaving workers' objects and
   * a page of the rest. Objects with a copy on a leaving worker are counted from the workers'
   * object counters instead, so the gauge holds the whole backlog however many passes it takes (an
   * upper bound: an object on two leaving workers counts twice); the sample adds the others (a copy
   * found bad). `unavailable` and `lost` count every object with such a verdict (copyless.ts);
   * lost objects are not counted under-replicated.
   */
  private async updateGauges(work: Classified[], byId: Nodes): Promise<void> {
    const now = this.now();
    const leaving = [...byId.values()].filter((n) => LEAVING.has(n.state));
    const stats = leaving.length > 0 ? await this.deps.metadata.stats() : undefined;
    const onLeaving = leaving.reduce((sum, n) => sum + (stats?.nodes[n.nodeId]?.objects ?? 0), 0);
    let under = Math.min(onLeaving, stats?.objects ?? 0);
    let oldest = 0;
    for (const w of work) {
      if (w.healthy.length >= REPLICATION_FACTOR) continue;
      if (w.leaving.length === 0) under += 1;
      // Under-replicated since its copy's worker left (or since creation, whichever is later).
      const left = Math.min(...w.leaving.map((n) => byId.get(n)?.stateSince ?? w.object.createdAt));
      oldest = Math.max(oldest, now - Math.max(w.object.createdAt, Number.isFinite(left) ? left : 0));
    }
    this.deps.metrics.underReplicated.set(under);
    this.deps.metrics.unavailable.set(this.copyless.count('unavailable'));
    this.deps.metrics.lost.set(this.copyless.count('lost'));
    this.deps.metrics.oldestUnderReplicatedSeconds.set(oldest / 1000);
  }

  /** A draining node whose index is empty has nothing left: it becomes `drained`. */
  private async finishDrains(): Promise<string[]> {
    const { raft, metadata, log } = this.deps;
    const drained: string[] = [];
    for (const { nodeId, state } of await metadata.listNodes()) {
      if (state !== 'draining' || !raft.isLeader()) continue;
      if ((await metadata.objectsOnNode(nodeId, { limit: 1 })).items.length > 0) continue;
      const at = this.now();
      const command = { type: 'markNodeState', nodeId, state: 'drained', expected: 'draining', at } as const;
      if ((await proposeCommand(raft, command).catch(() => null))?.ok) {
        drained.push(nodeId);
        log.info({ event: 'drain.completed', nodeId }, `worker ${nodeId} drained`);
      }
    }
    return drained;
  }
}
