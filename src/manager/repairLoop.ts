// Level-triggered repair: on every pass the leader compares the tables with the goal (every object
// on 2 distinct `up` workers, distinct zones when possible, nothing on a down, draining or unknown
// worker) and works off the difference with bounded concurrency. Work is found from the tables
// alone: the node index of down and draining workers first (a range scan per node, not a table
// scan), then one bounded step of the under-replication scan as a backstop. A new leader therefore
// finds exactly the work the old one left; nothing kept in memory matters.

import pRetry, { AbortError } from 'p-retry';
import type { Logger } from '../logging.ts';
import {
  expectedOf,
  type NodeView,
  type ObjectView,
  type ReplicaChange,
  type ReplicaChangeResult,
} from '../metadata/commands.ts';
import { type MetadataStateMachine, REPLICATION_FACTOR } from '../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import { type CopyLocks, deleteUnlistedCopy, type Release } from './copyLocks.ts';
import { checkCopy } from './copyVerifier.ts';
import type { RaftAccess } from './imageService.ts';
import {
  type CopyCheck,
  classify,
  LEAVING,
  needsRepair,
  planRepair,
  type RepairAction,
  type Replicas,
} from './placement/plan.ts';
import { type PlacementCandidate, rankTargets } from './placement.ts';
import type { RepairMetrics } from './repairMetrics.ts';
import type { CopyBatchOutcome, WorkerClient } from './workerClient.ts';
import type { WorkerLiveness } from './workerLiveness.ts';

/** Targets one repair tries before leaving the object to the next pass. */
const MAX_TARGETS_PER_REPAIR = 4;
/**
 * Bounds of one copy batch: the objects one holder copies to one target in one request, committed
 * in one Raft entry. Batching is what lets repair approach disk speed: per object, a request to the
 * holder and a Raft round (on every manager) cost more CPU than the copy itself.
 */
const BATCH_OBJECTS = 32;
const BATCH_BYTES = 64 * 1024 * 1024;

export interface RepairLoopDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  /** Shared with the reconciler and the upload path: see copyLocks.ts. */
  copies: CopyLocks;
  liveness: WorkerLiveness;
  workers: WorkerClient;
  log: Logger;
  metrics: RepairMetrics;
  concurrency: number;
  /** Pause between two passes. */
  intervalMs?: number;
  /** True while a rejoin reconciliation runs: trimming a copy too many waits for it. */
  reconcileBusy?: () => boolean;
  /** Objects one pass takes on at most (bounds memory and the length of a pass). */
  maxObjectsPerPass?: number;
  /** Bytes one copy batch carries at most (default BATCH_BYTES). */
  batchBytes?: number;
  now?: () => number;
}

export type RepairOutcome =
  | 'healthy'
  | 'copied'
  | 'dropped'
  | 'trimmed'
  | 'unavailable'
  | 'noTarget'
  | 'failed'
  | 'skipped';

export interface PassReport {
  examined: number;
  outcomes: Record<RepairOutcome, number>;
  drained: string[];
}

function noOutcomes(): Record<RepairOutcome, number> {
  return {
    healthy: 0,
    copied: 0,
    dropped: 0,
    trimmed: 0,
    unavailable: 0,
    noTarget: 0,
    failed: 0,
    skipped: 0,
  };
}

/** Objects one holder is to copy to one target. */
interface CopyBatch {
  sourceId: string;
  targetId: string;
  items: Classified[];
  bytes: number;
}

interface Classified extends Replicas {
  object: ObjectView;
}

export class RepairLoop {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<PassReport | null> | null = null;
  private stopped = false;
  private started = false;
  /** A wake() came while a pass ran: the next pass starts as soon as this one ends. */
  private wakeAfterPass = false;
  /** Objects already reported unavailable: logged once, not on every pass. */
  private readonly reportedUnavailable = new Set<string>();
  /** Where the backstop scan resumes. */
  private scanCursor: string | undefined;
  private readonly now: () => number;
  private readonly batchBytes: number;

  constructor(private readonly deps: RepairLoopDeps) {
    this.now = deps.now ?? Date.now;
    this.batchBytes = deps.batchBytes ?? BATCH_BYTES;
  }

  start(): void {
    this.stopped = false;
    this.started = true;
    this.schedule();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.started = false;
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    await this.running?.catch(() => {});
  }

  /**
   * Runs a pass now rather than at the next tick: a down verdict or a drain just committed, and its
   * objects should not wait up to an interval. A pass already running is followed at once by another.
   */
  wake(): void {
    if (!this.started || this.stopped) return;
    if (this.running) {
      this.wakeAfterPass = true;
      return;
    }
    if (this.timer) clearTimeout(this.timer);
    this.schedule(0);
  }

  private schedule(delayMs = this.deps.intervalMs ?? 500): void {
    if (this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = null;
      void this.pass()
        .catch((err: unknown) =>
          this.deps.log.warn({ event: 'repair.pass_failed', err }, 'repair pass failed; next pass retries'),
        )
        .finally(() => {
          const again = this.wakeAfterPass;
          this.wakeAfterPass = false;
          this.schedule(again ? 0 : undefined);
        });
    }, delayMs);
    this.timer.unref();
  }

  /** One pass over the difference between the tables and the goal; null when not leader. */
  pass(): Promise<PassReport | null> {
    this.running ??= this.passOnce().finally(() => {
      this.running = null;
    });
    return this.running;
  }

  private async passOnce(): Promise<PassReport | null> {
    const { raft, metadata, metrics } = this.deps;
    if (!raft.isLeader()) {
      metrics.underReplicated.set(0);
      metrics.unavailable.set(0);
      metrics.oldestUnderReplicatedSeconds.set(0);
      return null;
    }
    const limit = this.deps.maxObjectsPerPass ?? 2_000;
    const nodes = await metadata.listNodes();
    const byId = new Map(nodes.map((n) => [n.nodeId, n]));
    const ids = new Set<string>();
    for (const node of nodes) {
      if (!LEAVING.has(node.state)) continue;
      let after: string | undefined;
      do {
        const page = await metadata.objectsOnNode(node.nodeId, { limit: 1000, ...(after ? { after } : {}) });
        for (const id of page.items) ids.add(id);
        after = page.next ?? undefined;
      } while (after !== undefined && ids.size < limit);
      if (ids.size >= limit) break;
    }
    // Backstop, one bounded step of a walk over the object table: objects short of copies for any
    // other reason (e.g. a copy found missing on rejoin), or with a copy too many (a rejoin cut
    // short between re-adopting a copy and removing the one that replaced it).
    const step = await metadata.listObjects({
      ...(this.scanCursor ? { after: this.scanCursor } : {}),
      limit: 1000,
    });
    this.scanCursor = step.next ?? undefined;
    const work: Classified[] = [];
    for (const object of step.items) {
      if (ids.has(object.id)) continue;
      const c = this.classify(object, byId);
      if (needsRepair(c)) work.push(c);
    }
    for (const id of ids) {
      const object = await metadata.getObject(id);
      if (object) work.push(this.classify(object, byId));
    }

    this.updateGauges(work, byId);
    // Objects down to one live copy (or none) first: they are one failure away from loss.
    work.sort((a, b) => a.healthy.length - b.healthy.length);
    const outcomes = noOutcomes();
    // Objects short of a copy with a holder to copy from go in batches; the rest (drops, trims,
    // unavailable objects, and copies no target was found for) one at a time.
    const singles: Classified[] = [];
    const copies: Classified[] = [];
    // Placement reserves room for every copy planned: a pass plans what its batches can carry at
    // once, so large objects do not make every target look full; the rest waits for the next pass.
    let plannedBytes = 0;
    const passBytes = Math.max(1, this.deps.concurrency) * this.batchBytes;
    for (const w of work) {
      if (w.healthy.length >= REPLICATION_FACTOR || w.sources.length === 0) singles.push(w);
      else if (plannedBytes >= passBytes) outcomes.skipped += 1;
      else {
        copies.push(w);
        plannedBytes += w.object.size;
      }
    }
    const batches = this.planBatches(copies, nodes, byId, singles);
    let nextBatch = 0;
    const batchLane = async () => {
      while (nextBatch < batches.length && raft.isLeader() && !this.stopped) {
        const batch = batches[nextBatch++]!;
        const counted = noOutcomes();
        try {
          await this.runBatch(batch, counted);
        } catch (err) {
          // A table read failed: the tables still show the work. What the batch did before it
          // stopped is already counted; only the rest counts as failed.
          this.deps.log.warn(
            { event: 'repair.batch_error', objects: batch.items.length, err: (err as Error).message },
            'repair batch failed; next pass retries',
          );
          const done = Object.values(counted).reduce((a, b) => a + b, 0);
          counted.failed += Math.max(0, batch.items.length - done);
        } finally {
          for (const key of Object.keys(counted) as RepairOutcome[]) outcomes[key] += counted[key];
        }
      }
    };
    // A holder streams a batch's blobs one after the other: one copy in flight per batch. bench:repair
    // measured this (32 batches at once) against 8 batches of 4 copies each: 352-366 objects/s at
    // 4.8-5.1 ms of cluster CPU per object, against 276/s at 6.5 ms.
    const lanes = Math.min(Math.max(1, this.deps.concurrency), batches.length);
    await Promise.all(Array.from({ length: lanes }, batchLane));

    let next = 0;
    const worker = async () => {
      while (next < singles.length && raft.isLeader() && !this.stopped) {
        const item = singles[next++]!;
        outcomes[await this.repairOneLogged(item.object.id)] += 1;
      }
    };
    await Promise.all(Array.from({ length: Math.max(1, this.deps.concurrency) }, worker));

    const drained = await this.finishDrains();
    return { examined: work.length, outcomes, drained };
  }

  private async repairOneLogged(id: string): Promise<RepairOutcome> {
    try {
      return await this.repairOne(id);
    } catch (err) {
      // A commit that failed (leadership lost, timeout): the tables still show the work.
      this.deps.log.warn(
        { event: 'repair.error', objectId: id, err: (err as Error).message },
        'repair step failed; next pass retries',
      );
      return 'failed';
    }
  }

  /**
   * Picks a holder and a target for each object and groups them by (holder, target) into
   * batches. Batches alternate between pairs, so the ones in flight spread over the workers while
   * each pair's objects keep their order (fewest live copies first). Objects no target is found
   * for go to `unplanned`.
   */
  private planBatches(
    copies: Classified[],
    nodes: NodeView[],
    byId: Map<string, NodeView>,
    unplanned: Classified[],
  ): CopyBatch[] {
    const byPair = new Map<string, CopyBatch[]>();
    for (const c of copies) {
      const target = this.rankTargetsFor(c, nodes, byId)[0];
      const source = c.sources[0]!;
      if (!target) {
        unplanned.push(c);
        continue;
      }
      // Spreads the next objects' targets as if this copy had landed already.
      this.deps.liveness.reservePlacement(target.nodeId, c.object.size);
      const key = `${source.nodeId}\0${target.nodeId}`;
      const list = byPair.get(key) ?? [];
      byPair.set(key, list);
      let batch = list.at(-1);
      if (!batch || batch.items.length >= BATCH_OBJECTS || batch.bytes + c.object.size > this.batchBytes) {
        batch = { sourceId: source.nodeId, targetId: target.nodeId, items: [], bytes: 0 };
        list.push(batch);
      }
      batch.items.push(c);
      batch.bytes += c.object.size;
    }
    const batches: CopyBatch[] = [];
    const lists = [...byPair.values()];
    for (let round = 0; lists.some((l) => l.length > round); round++) {
      for (const list of lists) if (list[round]) batches.push(list[round]!);
    }
    return batches;
  }

  /**
   * One batch: each object is read afresh and goes ahead only if it still needs a copy, its holder
   * still serves it and the target still fits; the rest are repaired one at a time. The holder
   * copies the whole batch in one request, the copies that arrived are committed in one entry, and
   * each copy the target failed is tried on the next target alone (a fallback).
   */
  private async runBatch(batch: CopyBatch, outcomes: Record<RepairOutcome, number>): Promise<void> {
    const { metadata } = this.deps;
    const nodes = await metadata.listNodes();
    const byId = new Map(nodes.map((n) => [n.nodeId, n]));
    const source = byId.get(batch.sourceId);
    const target = byId.get(batch.targetId);
    const send: Classified[] = [];
    const alone: string[] = [];
    // Each copy on the target is held from before it is written until its commit has an outcome.
    const held: Release[] = [];
    const retry: Classified[] = [];
    try {
      for (const planned of batch.items) {
        const object = await metadata.getObject(planned.object.id);
        if (!object) {
          outcomes.skipped += 1;
          continue;
        }
        const c = this.classify(object, byId);
        const fits =
          source !== undefined &&
          target !== undefined &&
          c.healthy.length < REPLICATION_FACTOR &&
          c.sources.some((n) => n.nodeId === source.nodeId) &&
          this.rankTargetsFor(c, nodes, byId).some((t) => t.nodeId === target.nodeId);
        if (!fits) {
          alone.push(object.id);
          continue;
        }
        const release = this.deps.copies.tryHold(batch.targetId, object.id);
        if (release === null) {
          // Another path is acting on that very copy (deleting a stray of it, say): next pass.
          outcomes.skipped += 1;
          continue;
        }
        held.push(release);
        send.push(c);
      }
      if (send.length > 0 && source && target) {
        retry.push(...(await this.copyBatch(send, source, target, byId, outcomes)));
      }
    } finally {
      for (const release of held) release();
    }
    for (const c of retry) {
      outcomes[
        await this.copyOnce(c, nodes, byId, { failedTarget: batch.targetId }).catch(() => 'failed' as const)
      ] += 1;
    }
    for (const id of alone) outcomes[await this.repairOneLogged(id)] += 1;
  }

  /**
   * Has `source` copy `send` to `target` in one request and commits the copies that arrived; the
   * copies the target failed are returned, for a fallback each. The caller holds every copy.
   */
  private async copyBatch(
    send: Classified[],
    source: NodeView,
    target: NodeView,
    byId: Map<string, NodeView>,
    outcomes: Record<RepairOutcome, number>,
  ): Promise<Classified[]> {
    const { workers, log, metrics } = this.deps;
    metrics.started.inc(send.length);
    const startedAt = this.now();
    let answers: CopyBatchOutcome[];
    try {
      answers = await workers.copyBatch(
        source.url,
        target.url,
        send.map((c) => ({ id: c.object.id, sha256: c.object.sha256 })),
      );
    } catch (err) {
      // The holder could not run the batch at all: no target is to blame, so no fallback; the
      // next pass plans these again (from another holder once this one stops serving).
      metrics.failed.inc(send.length);
      outcomes.failed += send.length;
      log.warn(
        {
          event: 'repair.batch_failed',
          source: source.nodeId,
          target: target.nodeId,
          objects: send.length,
          err: (err as Error).message,
        },
        'holder could not run the copy batch; next pass retries',
      );
      answers = [];
    }
    const copied: Classified[] = [];
    const retry: Classified[] = [];
    for (const [i, answer] of answers.entries()) {
      const c = send[i]!;
      if (!answer.ok) {
        log.warn(
          {
            event: 'repair.target_failed',
            objectId: c.object.id,
            source: source.nodeId,
            target: target.nodeId,
            err: answer.message,
          },
          'repair target failed',
        );
        retry.push(c);
      } else if (answer.sha256 !== c.object.sha256 || answer.size !== c.object.size) {
        // As in copyOnce: the target checked the holder's claim, not the record.
        metrics.failed.inc();
        log.warn(
          { event: 'repair.failed', objectId: c.object.id, source: source.nodeId },
          `holder sent sha256 ${answer.sha256 ?? '?'} (${answer.size ?? '?'} bytes), record says ${c.object.sha256}`,
        );
        await this.deleteIfUnrecorded(c.object.id, c.object.sha256, target.nodeId, byId);
        outcomes.failed += 1;
      } else {
        metrics.bytesCopied.inc(c.object.size);
        copied.push(c);
      }
    }
    if (copied.length > 0) await this.commitBatch(copied, target.nodeId, byId, startedAt, outcomes);
    return retry;
  }

  /** Records the batch's copies on `targetId` in one entry: one result per object. */
  private async commitBatch(
    copied: Classified[],
    targetId: string,
    byId: Map<string, NodeView>,
    startedAt: number,
    outcomes: Record<RepairOutcome, number>,
  ): Promise<void> {
    const { raft, metadata, log, metrics, liveness } = this.deps;
    // A node being replaced may have come back while the copies ran: then it keeps its copy.
    const leavingNow = new Map<string, NodeView | null>();
    for (const c of copied) {
      const remove = c.leaving[0];
      if (remove !== undefined && !leavingNow.has(remove))
        leavingNow.set(remove, await metadata.getNode(remove));
    }
    const removes = copied.map((c) => {
      const remove = c.leaving[0];
      if (remove === undefined) return null;
      const now = leavingNow.get(remove) ?? null;
      return now === null || LEAVING.has(now.state) ? remove : null;
    });
    const changes: ReplicaChange[] = copied.map((c, i) => {
      const remove = removes[i];
      return remove
        ? { type: 'replaceReplica', id: c.object.id, add: targetId, remove, expected: expectedOf(c.object) }
        : { type: 'addReplica', id: c.object.id, nodeId: targetId, expected: expectedOf(c.object) };
    });
    let results: ReplicaChangeResult[];
    try {
      results = (await proposeCommand(raft, { type: 'replicaChanges', changes })).results;
    } catch (err) {
      // Outcome unknown: see copyOnce. The copies stay; a stray one is swept after the grace.
      for (const c of copied) {
        metrics.failed.inc();
        log.warn(
          {
            event: 'repair.commit_unknown',
            objectId: c.object.id,
            target: targetId,
            err: (err as Error).message,
          },
          'copy made, commit outcome unknown; copy kept',
        );
      }
      outcomes.failed += copied.length;
      return;
    }
    for (const [i, c] of copied.entries()) {
      const result = results[i]!;
      if (!result.ok) {
        metrics.failed.inc();
        log.warn(
          {
            event: 'repair.commit_failed',
            objectId: c.object.id,
            target: targetId,
            err: `${result.code}: ${result.message}`,
          },
          'copy made but not recorded; next pass retries',
        );
        await this.deleteIfUnrecorded(c.object.id, c.object.sha256, targetId, byId);
        outcomes.failed += 1;
        continue;
      }
      metrics.succeeded.inc();
      metrics.duration.observe((this.now() - startedAt) / 1000);
      const removed = removes[i] ?? null;
      log.info(
        { event: 'repair.copied', objectId: c.object.id, target: targetId, removed, size: c.object.size },
        'replica repaired',
      );
      const removedNode = removed === null ? null : leavingNow.get(removed);
      if (removedNode && liveness.isServing(removedNode)) {
        // A draining node's copy is not needed once recorded elsewhere.
        await deleteUnlistedCopy(this.deps, removedNode, c.object.id).catch(() => {});
      }
      outcomes.copied += 1;
    }
  }

  /** Targets for one more copy of `c`, best first: live, not holding it, other zones first. */
  private rankTargetsFor(
    c: Classified,
    nodes: NodeView[],
    byId: Map<string, NodeView>,
    skip?: string,
  ): PlacementCandidate[] {
    return rankTargets(this.deps.liveness.candidates(nodes), {
      exclude: new Set(skip === undefined ? c.object.replicas : [...c.object.replicas, skip]),
      avoidZones: new Set(c.healthy.map((n) => byId.get(n)?.zone).filter((z) => z !== undefined)),
      size: c.object.size,
    });
  }

  private classify(object: ObjectView, byId: Map<string, NodeView>): Classified {
    return { object, ...classify(object, byId, (n) => this.deps.liveness.isServing(n)) };
  }

  private updateGauges(work: Classified[], byId: Map<string, NodeView>): void {
    const now = this.now();
    let under = 0;
    let unavailable = 0;
    let oldest = 0;
    for (const w of work) {
      if (w.sources.length === 0) unavailable += 1;
      if (w.healthy.length >= REPLICATION_FACTOR) continue;
      under += 1;
      // Under-replicated since its copy's worker left (or since creation, whichever is later).
      const since = w.leaving.reduce(
        (t, n) => Math.min(t, byId.get(n)?.stateSince ?? w.object.createdAt),
        Number.POSITIVE_INFINITY,
      );
      const start = Math.max(w.object.createdAt, Number.isFinite(since) ? since : w.object.createdAt);
      oldest = Math.max(oldest, now - start);
    }
    this.deps.metrics.underReplicated.set(under);
    this.deps.metrics.unavailable.set(unavailable);
    this.deps.metrics.oldestUnderReplicatedSeconds.set(oldest / 1000);
  }

  /**
   * Brings one object one step closer to the goal, from a fresh read of the tables, as the planner
   * decides (placement/plan.ts: planRepair); read-backs it asks for are done and it decides again.
   */
  async repairOne(id: string): Promise<RepairOutcome> {
    const object = await this.deps.metadata.getObject(id);
    if (!object) return 'skipped';
    const nodes = await this.deps.metadata.listNodes();
    const byId = new Map(nodes.map((n) => [n.nodeId, n]));
    const c = this.classify(object, byId);
    // A rejoin's own excess removal (or a dropped missing copy) could combine with a trim to leave
    // one copy: trims wait for it, before the read-backs and again after them.
    const trimming = c.healthy.length > REPLICATION_FACTOR && c.leaving.length === 0;
    if (trimming && this.deps.reconcileBusy?.()) return 'skipped';
    // Decided once: a worker heard again while the copies are read back is not one whose copy
    // they were read back for.
    const deleting = c.leaving.filter((n) => {
      const node = byId.get(n);
      return node !== undefined && this.deps.liveness.isServing(node);
    });
    const checks = new Map<string, CopyCheck>();
    for (;;) {
      const action = planRepair(c, byId, deleting, checks);
      switch (action.kind) {
        case 'readBack':
          for (const n of action.nodeIds) {
            const url = byId.get(n)?.url;
            checks.set(n, url ? await checkCopy(this.deps.workers, url, id, object) : 'unknown');
          }
          continue;
        case 'healthy':
          return 'healthy';
        case 'unavailable':
          this.reportUnavailable(object);
          return 'unavailable';
        case 'copy':
          this.reportedUnavailable.delete(id);
          return this.copyOnce(c, nodes, byId);
        case 'remove':
          return this.removeReplicas(c, action, byId);
        case 'wait':
          if (trimming)
            this.deps.log.warn(
              { event: 'repair.trim_unproven', objectId: id, checks: Object.fromEntries(checks) },
              'copy too many kept: the copies that would stay could not all be read back',
            );
          return 'skipped';
        case 'trim':
          if (this.deps.reconcileBusy?.()) return 'skipped';
          return this.trim(c, action.nodeId, byId);
      }
    }
  }

  private reportUnavailable(object: ObjectView): void {
    if (this.reportedUnavailable.has(object.id) || this.reportedUnavailable.size >= 100_000) return;
    this.reportedUnavailable.add(object.id);
    this.deps.log.warn(
      { event: 'repair.unavailable', objectId: object.id, replicas: object.replicas },
      'no serving worker holds a copy; waiting for one to return',
    );
  }

  /** The record forgets the copies the planner named; those on nodes still serving are deleted. */
  private async removeReplicas(
    c: Classified,
    action: Extract<RepairAction, { kind: 'remove' }>,
    byId: Map<string, NodeView>,
  ): Promise<RepairOutcome> {
    for (const nodeId of action.nodeIds) {
      const result = await proposeCommand(this.deps.raft, {
        type: 'removeReplica',
        id: c.object.id,
        nodeId,
        expected: expectedOf(c.object),
      });
      if (!result.ok) continue;
      if (action.reason === 'badCopy')
        this.deps.log.warn(
          { event: 'repair.bad_copy_dropped', objectId: c.object.id, nodeId },
          'recorded copy missing or wrong on its worker; dropped so repair makes a new one',
        );
      else
        this.deps.log.info(
          { event: 'repair.replica_dropped', objectId: c.object.id, nodeId },
          'replica on a leaving worker dropped',
        );
      const node = byId.get(nodeId);
      if (node && action.deleteFrom.includes(nodeId))
        await deleteUnlistedCopy(this.deps, node, c.object.id).catch(() => {});
    }
    return 'dropped';
  }

  /** One copy too many: the record forgets the one on `victim` and its blob is deleted. */
  private async trim(c: Classified, victim: string, byId: Map<string, NodeView>): Promise<RepairOutcome> {
    const result = await proposeCommand(this.deps.raft, {
      type: 'removeReplica',
      id: c.object.id,
      nodeId: victim,
      expected: expectedOf(c.object),
    });
    if (!result.ok) return 'skipped';
    this.deps.log.info(
      {
        event: 'repair.excess_trimmed',
        objectId: c.object.id,
        nodeId: victim,
        replicas: result.object.replicas,
      },
      'copy too many removed',
    );
    const victimNode = byId.get(victim);
    if (victimNode) await deleteUnlistedCopy(this.deps, victimNode, c.object.id).catch(() => {});
    return 'trimmed';
  }

  /**
   * Copies `c` to the best target, falling back to the next ones. `failedTarget`: a batch's target
   * already failed this copy (and counted it started); this is then its fallback.
   */
  private async copyOnce(
    c: Classified,
    nodes: NodeView[],
    byId: Map<string, NodeView>,
    options: { failedTarget?: string } = {},
  ): Promise<RepairOutcome> {
    const { workers, log, metrics, liveness } = this.deps;
    const { object } = c;
    const ranked = this.rankTargetsFor(c, nodes, byId, options.failedTarget).slice(0, MAX_TARGETS_PER_REPAIR);
    if (ranked.length === 0) {
      metrics.failed.inc();
      log.warn({ event: 'repair.no_target', objectId: object.id }, 'no live worker can take a copy');
      return 'noTarget';
    }
    if (options.failedTarget === undefined) metrics.started.inc();
    else metrics.fallbacks.inc();
    const startedAt = this.now();
    // The copy on the target is held from before it is written until its commit has an outcome.
    let held: { target: PlacementCandidate; release: Release };
    try {
      held = await pRetry(
        async (attempt) => {
          const candidate = ranked[attempt - 1];
          if (!candidate) throw new AbortError('no target left');
          const targetUrl = byId.get(candidate.nodeId)?.url;
          const source = c.sources[(attempt - 1) % c.sources.length]!;
          if (!targetUrl) throw new Error(`target ${candidate.nodeId} has no url`);
          const release = this.deps.copies.tryHold(candidate.nodeId, object.id);
          if (release === null) throw new Error(`another path is acting on the copy on ${candidate.nodeId}`);
          try {
            liveness.reservePlacement(candidate.nodeId, object.size);
            const sent = await workers.copyTo(source.url, object.id, targetUrl, object.sha256);
            if (sent.sha256 !== object.sha256 || sent.size !== object.size) {
              // The target checked the bytes against the holder's own claim, not the record: a
              // holder with other bytes under this id would have made a copy of the wrong image.
              await this.deleteIfUnrecorded(object.id, object.sha256, candidate.nodeId, byId);
              throw new Error(
                `holder ${source.nodeId} sent sha256 ${sent.sha256 ?? '?'} (${sent.size ?? '?'} bytes), record says ${object.sha256}`,
              );
            }
          } catch (err) {
            release();
            throw err;
          }
          return { target: candidate, release };
        },
        {
          retries: ranked.length - 1,
          minTimeout: 20,
          maxTimeout: 200,
          onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
            log.warn(
              {
                event: 'repair.target_failed',
                objectId: object.id,
                target: ranked[attemptNumber - 1]?.nodeId,
                retriesLeft,
                err: error.message,
              },
              'repair target failed',
            );
            if (retriesLeft > 0) metrics.fallbacks.inc();
          },
        },
      );
    } catch (err) {
      metrics.failed.inc();
      log.warn(
        { event: 'repair.failed', objectId: object.id, err: (err as Error).message },
        'no target took the copy; next pass retries',
      );
      return 'failed';
    }
    try {
      return await this.recordCopy(c, held.target, byId, startedAt);
    } finally {
      held.release();
    }
  }

  /** Commits the copy `copyOnce` made on `target`, which it holds. */
  private async recordCopy(
    c: Classified,
    target: PlacementCandidate,
    byId: Map<string, NodeView>,
    startedAt: number,
  ): Promise<RepairOutcome> {
    const { raft, log, metrics, liveness } = this.deps;
    const { object, leaving } = c;
    const remove = leaving[0];
    metrics.bytesCopied.inc(object.size);

    // The node being replaced may have come back while the copy ran: then it keeps its copy.
    const removeNow = remove === undefined ? null : await this.deps.metadata.getNode(remove);
    const stillLeaving = remove !== undefined && (removeNow === null || LEAVING.has(removeNow.state));
    let refused: string | null = null;
    try {
      const result = stillLeaving
        ? await proposeCommand(raft, {
            type: 'replaceReplica',
            id: object.id,
            add: target.nodeId,
            remove,
            expected: expectedOf(object),
          })
        : await proposeCommand(raft, {
            type: 'addReplica',
            id: object.id,
            nodeId: target.nodeId,
            expected: expectedOf(object),
          });
      if (!result.ok) refused = `${result.code}: ${result.message}`;
    } catch (err) {
      // Outcome unknown (timeout, leadership lost): the entry may still commit, here or under the
      // next leader, and then the record names the target; its copy must stay. If it never
      // commits, the copy is a stray that the inventory sweep removes after the grace period.
      metrics.failed.inc();
      log.warn(
        {
          event: 'repair.commit_unknown',
          objectId: object.id,
          target: target.nodeId,
          err: (err as Error).message,
        },
        'copy made, commit outcome unknown; copy kept',
      );
      return 'failed';
    }
    if (refused !== null) {
      metrics.failed.inc();
      log.warn(
        { event: 'repair.commit_failed', objectId: object.id, target: target.nodeId, err: refused },
        'copy made but not recorded; next pass retries',
      );
      await this.deleteIfUnrecorded(object.id, object.sha256, target.nodeId, byId);
      return 'failed';
    }
    metrics.succeeded.inc();
    metrics.duration.observe((this.now() - startedAt) / 1000);
    log.info(
      {
        event: 'repair.copied',
        objectId: object.id,
        target: target.nodeId,
        removed: stillLeaving ? remove : null,
        size: object.size,
      },
      'replica repaired',
    );
    if (stillLeaving && removeNow && liveness.isServing(removeNow)) {
      // A draining node's copy is not needed once recorded elsewhere.
      await deleteUnlistedCopy(this.deps, removeNow, object.id).catch(() => {});
    }
    return 'copied';
  }

  /** Removes a copy this repair made but could not record. The caller holds the copy. */
  private async deleteIfUnrecorded(
    id: string,
    sha256: string,
    nodeId: string,
    byId: Map<string, NodeView>,
  ): Promise<void> {
    if (!this.deps.raft.isLeader()) return; // A new leader may still record this copy.
    // A read covering everything committed, so a stale table on a deposed leader cannot say
    // "unrecorded" about a copy the current leader has recorded.
    if (
      !(await this.deps.raft.readIndex().then(
        () => true,
        () => false,
      ))
    )
      return;
    const now = await this.deps.metadata.getObject(id);
    // Object gone: an upload re-creating the id may be writing this very blob before it commits;
    // the orphan sweep, with its grace period, decides instead.
    if (!now || now.sha256 !== sha256 || now.replicas.includes(nodeId)) return;
    const url = byId.get(nodeId)?.url;
    if (url) await this.deps.workers.deleteBlob(url, id).catch(() => {});
  }

  /** A draining node whose index is empty has nothing left: it becomes `drained`. */
  private async finishDrains(): Promise<string[]> {
    const { raft, metadata, log } = this.deps;
    const drained: string[] = [];
    for (const node of await metadata.listNodes()) {
      if (node.state !== 'draining' || !raft.isLeader()) continue;
      const left = await metadata.objectsOnNode(node.nodeId, { limit: 1 });
      if (left.items.length > 0) continue;
      const result = await proposeCommand(raft, {
        type: 'markNodeState',
        nodeId: node.nodeId,
        state: 'drained',
        expected: 'draining',
        at: this.now(),
      }).catch(() => null);
      if (result?.ok) {
        drained.push(node.nodeId);
        log.info({ event: 'drain.completed', nodeId: node.nodeId }, `worker ${node.nodeId} drained`);
      }
    }
    return drained;
  }
}
