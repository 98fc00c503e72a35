// Repair copies between workers and their commits, for one object or a copy batch alike: the
// executor's `copy` action. A copy batch has one holder stream many blobs to one target in one
// request, committed in one Raft entry: per object, a request to the holder and a Raft round (on
// every manager) cost more CPU than the copy itself. The caller holds each object's slot, from
// before its copy is written until its commit has an outcome.

import pRetry from 'p-retry';
import { expectedOf, type NodeView, type ObjectView, type ReplicaChange } from '../../metadata/commands.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import type { PlacementCandidate } from '../placement.ts';
import { counters, deleteCopy, type ExecutorDeps, nodesById, unlistedIn } from './execute.ts';
import { LEAVING, type Nodes, type Replicas } from './plan.ts';

/** Targets one repair tries before leaving the object to the next pass. */
export const MAX_TARGETS_PER_REPAIR = 4;

const OUTCOMES = [
  'healthy',
  'copied',
  'dropped',
  'trimmed',
  'unavailable',
  'noTarget',
  'failed',
  'skipped',
] as const;
export type RepairOutcome = (typeof OUTCOMES)[number];
export type Outcomes = Record<RepairOutcome, number>;

export const noOutcomes = (): Outcomes => counters(OUTCOMES);

export interface Classified extends Replicas {
  object: ObjectView;
}

/** What the holder says it sent, against the record: the target checked the holder's claim only. */
function sentOther(sent: { sha256: string | null; size: number | null }, object: ObjectView): string | null {
  if (sent.sha256 === object.sha256 && sent.size === object.size) return null;
  return `holder sent sha256 ${sent.sha256 ?? '?'} (${sent.size ?? '?'} bytes), record says ${object.sha256}`;
}

export class Copier {
  constructor(
    private readonly deps: ExecutorDeps,
    private readonly now: () => number,
  ) {}

  /**
   * Copies `c` to the best of `ranked` that takes it, holder after holder, then commits it.
   * `fallback`: a batch's target already failed this copy (and counted it started).
   */
  async copyOne(c: Classified, ranked: PlacementCandidate[], byId: Nodes, fallback = false) {
    const { log, metrics } = this.deps;
    const targets = ranked.slice(0, MAX_TARGETS_PER_REPAIR);
    if (targets.length === 0) {
      metrics.failed.inc();
      log.warn({ event: 'repair.no_target', objectId: c.object.id }, 'no live worker can take a copy');
      return 'noTarget' as const;
    }
    if (fallback) metrics.fallbacks.inc();
    else metrics.started.inc();
    const startedAt = this.now();
    let target: NodeView;
    try {
      // Attempt n goes to the n-th target, from the holders in turn.
      const attempt = (n: number) =>
        this.copyTo(c, targets[n - 1]!, c.sources[(n - 1) % c.sources.length]!, byId);
      target = await pRetry(attempt, {
        retries: targets.length - 1,
        minTimeout: 20,
        maxTimeout: 200,
        onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
          const target = targets[attemptNumber - 1]?.nodeId;
          log.warn(
            { event: 'repair.target_failed', objectId: c.object.id, target, retriesLeft, err: error.message },
            'repair target failed',
          );
          if (retriesLeft > 0) metrics.fallbacks.inc();
        },
      });
    } catch (err) {
      metrics.failed.inc();
      log.warn(
        { event: 'repair.failed', objectId: c.object.id, err: (err as Error).message },
        'no target took the copy; next pass retries',
      );
      return 'failed' as const;
    }
    const outcomes = noOutcomes();
    await this.commit([c], target, startedAt, outcomes);
    return outcomes.copied > 0 ? ('copied' as const) : ('failed' as const);
  }

  /** One attempt: the copy to `target` from `source`. */
  private async copyTo(c: Classified, target: PlacementCandidate, source: NodeView, byId: Nodes) {
    const { object } = c;
    const node = byId.get(target.nodeId);
    if (!node?.url) throw new Error(`target ${target.nodeId} has no url`);
    this.deps.liveness.reservePlacement(target.nodeId, object.size);
    const sent = await this.deps.workers.copyTo(source.url, object.id, node.url, object.sha256);
    const wrong = sentOther(sent, object);
    if (wrong !== null) {
      // A holder with other bytes under this id would have made a copy of the wrong image.
      await this.deleteIfUnrecorded(object, node);
      throw new Error(`${source.nodeId}: ${wrong}`);
    }
    return node;
  }

  /**
   * Has `source` copy `send` to `target` in one request and commits the copies that arrived; the
   * copies the target failed are returned, for a fallback each.
   */
  async copyBatch(send: Classified[], source: NodeView, target: NodeView, out: Outcomes) {
    const { workers, log, metrics } = this.deps;
    metrics.started.inc(send.length);
    const startedAt = this.now();
    const blobs = send.map((c) => ({ id: c.object.id, sha256: c.object.sha256 }));
    const answers = await workers.copyBatch(source.url, target.url, blobs).catch((err: unknown) => {
      // The holder could not run the batch at all: no target is to blame, so no fallback; the
      // next pass plans these again (from another holder once this one stops serving).
      this.failed(out, send.length);
      const logged = { source: source.nodeId, target: target.nodeId, objects: send.length };
      log.warn(
        { event: 'repair.batch_failed', ...logged, err: (err as Error).message },
        'copy batch not run',
      );
      return [];
    });
    const copied: Classified[] = [];
    const retry: Classified[] = [];
    for (const [i, answer] of answers.entries()) {
      const c = send[i]!;
      const logged = { objectId: c.object.id, source: source.nodeId, target: target.nodeId };
      const wrong = answer.ok ? sentOther(answer, c.object) : null;
      if (!answer.ok) {
        log.warn({ event: 'repair.target_failed', ...logged, err: answer.message }, 'repair target failed');
        retry.push(c);
      } else if (wrong !== null) {
        this.failed(out);
        log.warn({ event: 'repair.failed', ...logged }, wrong);
        await this.deleteIfUnrecorded(c.object, target);
      } else copied.push(c);
    }
    if (copied.length > 0) await this.commit(copied, target, startedAt, out);
    return retry;
  }

  /**
   * Records the copies made on `target` in one entry. A node being replaced that came back while
   * the copies ran keeps its copy (the entry adds instead of replacing); a draining one serving
   * loses its copy once the new one is recorded.
   */
  private async commit(copied: Classified[], target: NodeView, startedAt: number, out: Outcomes) {
    const targetId = target.nodeId;
    const { raft, log, metrics } = this.deps;
    for (const c of copied) metrics.bytesCopied.inc(c.object.size);
    const removes = await this.stillLeaving(copied);
    const changes: ReplicaChange[] = copied.map((c, i) => {
      const remove = removes[i]?.nodeId;
      const expected = expectedOf(c.object);
      return remove
        ? { type: 'replaceReplica', id: c.object.id, add: targetId, remove, expected }
        : { type: 'addReplica', id: c.object.id, nodeId: targetId, expected };
    });
    const results = await proposeCommand(raft, { type: 'replicaChanges', changes }).then(
      (r) => r.results,
      (err: unknown) => {
        // Outcome unknown (timeout, leadership lost): the entry may still commit, here or under the
        // next leader, and then the record names the target: its copy must stay. If it never
        // commits, the copy is a stray the inventory sweep removes after the grace period.
        this.failed(out, copied.length);
        const err_ = (err as Error).message;
        for (const c of copied)
          log.warn(
            { event: 'repair.commit_unknown', objectId: c.object.id, target: targetId, err: err_ },
            'copy made, commit outcome unknown; copy kept',
          );
        return null;
      },
    );
    for (const [i, c] of copied.entries()) {
      const result = results?.[i];
      if (!result) continue;
      const logged = { objectId: c.object.id, target: targetId };
      if (!result.ok) {
        this.failed(out);
        log.warn(
          { event: 'repair.commit_failed', ...logged, err: `${result.code}: ${result.message}` },
          'copy made but not recorded; next pass retries',
        );
        await this.deleteIfUnrecorded(c.object, target);
        continue;
      }
      metrics.succeeded.inc();
      metrics.duration.observe((this.now() - startedAt) / 1000);
      out.copied += 1;
      const removed = removes[i] ?? null;
      const fields = { ...logged, removed: removed?.nodeId ?? null, size: c.object.size };
      log.info({ event: 'repair.copied', ...fields }, 'replica repaired');
      if (removed?.node && this.deps.liveness.isServing(removed.node))
        await deleteCopy(this.deps, removed.node, c.object.id).catch(() => false);
    }
  }

  /** For each copy, the node it replaces if that node is still leaving now (read afresh). */
  private async stillLeaving(copied: Classified[]) {
    const nodes = await nodesById(this.deps.metadata);
    return copied.map((c) => {
      const nodeId = c.leaving[0];
      const node = nodeId === undefined ? undefined : nodes.get(nodeId);
      return nodeId !== undefined && (!node || LEAVING.has(node.state)) ? { nodeId, node } : null;
    });
  }

  /** Counts `n` repairs failed. */
  private failed(out: Outcomes, n = 1): void {
    this.deps.metrics.failed.inc(n);
    out.failed += n;
  }

  /** Removes a copy this repair made but could not record. */
  private async deleteIfUnrecorded(object: ObjectView, node: NodeView): Promise<void> {
    if (!this.deps.raft.isLeader()) return; // A new leader may still record this copy.
    // Object gone: an upload re-creating the id may be writing this very blob before it commits;
    // the orphan sweep, with its grace period, decides instead.
    await deleteCopy(this.deps, node, object.id, unlistedIn(object, node.nodeId)).catch(() => false);
  }
}
