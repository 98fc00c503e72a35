// Repair copies between workers and their commits: the executor's `copy` action. Every copy takes
// one path: copy jobs are grouped by (holder, target) into copy batches, in each of which one
// holder streams many blobs to one target in one request, committed in one Raft entry (per object,
// a request to the holder and a Raft round on every manager cost more CPU than the copy itself).
// One copy is a batch of one. Each job holds its object's slot from before its plan until its
// commit has an outcome or it is given up (the copier releases it then: a delete of the object waits
// for its own batch, not for the whole pass).

import { expectedOf, type NodeView, type ObjectView, type ReplicaChange } from '../../metadata/commands.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import { counters, deleteCopy, type ExecutorDeps, nodesById, runLanes, unlistedIn } from './execute.ts';
import { LEAVING, type Replicas } from './plan.ts';

/** Targets one repair tries before leaving the object to the next pass. */
export const MAX_TARGETS_PER_REPAIR = 4;
/** Bounds of one copy batch: the objects one holder copies to one target in one request. */
const BATCH_OBJECTS = 32;
export const BATCH_BYTES = 64 * 1024 * 1024;

const OUTCOMES = [
  'healthy',
  'copied',
  'dropped',
  'trimmed',
  'unavailable',
  'lost',
  /** Every holder the copy was asked of answered it has none: repair judges the object. */
  'noSource',
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

/** One object to copy: attempt n goes to `targets[n]` from `holders[n % holders.length]`. */
export interface CopyJob {
  c: Classified;
  /** Serving holders; one that could not run a request is not asked again for this job. */
  holders: NodeView[];
  /** At most MAX_TARGETS_PER_REPAIR, best first, the first one reserved by the planner. */
  targets: NodeView[];
  attempt: number;
  /** Gives back the object's slot, held since the plan (execute.ts, Release). */
  release: () => void;
}

/**
 * Answers of a holder about its own copy: it has none, or other bytes under the id. The holder is
 * to blame, not the target: the copy goes from another holder, or the object has no source left.
 */
const SOURCE_GONE: ReadonlySet<string> = new Set(['BlobNotFound', 'BlobConflict']);

/** What the holder says it sent, against the record: the target checked the holder's claim only. */
function sentOther(sent: { sha256: string | null; size: number | null }, object: ObjectView): string | null {
  if (sent.sha256 === object.sha256 && sent.size === object.size) return null;
  return `holder sent sha256 ${sent.sha256 ?? '?'} (${sent.size ?? '?'} bytes), record says ${object.sha256}`;
}

const holderOf = (j: CopyJob) => j.holders[j.attempt % j.holders.length]!;

/**
 * The jobs in copy batches by (holder, target) of their attempt, at most BATCH_OBJECTS and
 * `batchBytes` each, alternating between pairs so the batches in flight spread over the workers.
 */
function batchesOf(jobs: CopyJob[], batchBytes: number): CopyJob[][] {
  const byPair = new Map<string, CopyJob[][]>();
  for (const j of jobs) {
    const key = `${holderOf(j).nodeId}\0${j.targets[j.attempt]!.nodeId}`;
    const list = byPair.get(key) ?? [];
    byPair.set(key, list);
    const last = list.at(-1);
    const bytes = (last ?? []).reduce((t, o) => t + o.c.object.size, j.c.object.size);
    if (last && last.length < BATCH_OBJECTS && bytes <= batchBytes) last.push(j);
    else list.push([j]);
  }
  const lists = [...byPair.values()];
  const batches: CopyJob[][] = [];
  for (let round = 0; lists.some((l) => l.length > round); round++)
    for (const list of lists) if (list[round]) batches.push(list[round]!);
  return batches;
}

export class Copier {
  constructor(
    private readonly deps: ExecutorDeps,
    private readonly bounds: { concurrency: number; batchBytes: number },
    private readonly now: () => number,
  ) {}

  /**
   * Copies each job's object to the first of its targets that takes it, and commits the copies.
   * A holder streams a batch's blobs one after the other: `concurrency` batches run at once
   * (measured by bench:repair, docs/operations.md). The copies that failed then go again, each to
   * its next target (a fallback) from its next holder, until they run out of targets or holders.
   */
  async copy(jobs: CopyJob[], out: Outcomes, sourceless: Classified[] = []): Promise<void> {
    const { raft, metrics } = this.deps;
    metrics.started.inc(jobs.length);
    while (jobs.length > 0 && raft.isLeader()) {
      const again: CopyJob[] = [];
      const send = async (batch: CopyJob[]) => {
        again.push(...(await this.send(batch, out, sourceless)));
      };
      await runLanes(this.bounds.concurrency, batchesOf(jobs, this.bounds.batchBytes), send, () =>
        raft.isLeader(),
      );
      jobs = again;
    }
  }

  /**
   * One copy batch: its holder copies its blobs to its target in one request, and the copies that
   * arrived are committed. Returns the jobs that have another attempt left, counting the rest failed;
   * those whose every holder answered it has no copy go to `sourceless` instead (repair judges them).
   */
  private async send(batch: CopyJob[], out: Outcomes, sourceless: Classified[]): Promise<CopyJob[]> {
    const { workers, log, metrics, liveness } = this.deps;
    // A copy's duration runs from its batch's request, not from the start of the copy phase.
    const startedAt = this.now();
    const holder = holderOf(batch[0]!);
    const target = batch[0]!.targets[batch[0]!.attempt]!;
    const logged = { source: holder.nodeId, target: target.nodeId };
    const blobs = batch.map(({ c }) => ({ id: c.object.id, sha256: c.object.sha256 }));
    const answers = await workers.copyBatch(holder.url, target.url, blobs).catch((err: unknown) => {
      // The holder could not run the request: no target is to blame, so the same target is tried
      // from the jobs' other holders, if they have any.
      const at = { ...logged, objects: batch.length, err: (err as Error).message };
      log.warn({ event: 'repair.batch_failed', ...at }, 'copy batch not run');
      for (const j of batch) j.holders = j.holders.filter((h) => h.nodeId !== holder.nodeId);
      return null;
    });
    const copied: Classified[] = [];
    const again: CopyJob[] = [];
    for (const [i, job] of batch.entries()) {
      const answer = answers?.[i];
      const wrong = !answer ? null : answer.ok ? sentOther(answer, job.c.object) : answer.message;
      if (answer?.ok && wrong === null) {
        copied.push(job.c);
        continue;
      }
      if (answer && !answer.ok && answer.code !== null && SOURCE_GONE.has(answer.code)) {
        // The holder has no copy to send: the same target is tried from the job's next holder.
        job.holders = job.holders.filter((h) => h.nodeId !== holder.nodeId);
        if (job.holders.length === 0) {
          out.noSource += 1;
          sourceless.push(job.c);
          continue;
        }
      } else if (answer) {
        const at = { objectId: job.c.object.id, ...logged, err: wrong };
        log.warn({ event: 'repair.target_failed', ...at }, 'repair target failed');
        // A holder with other bytes under this id made a copy of the wrong image: it is removed,
        // and that holder is not asked for this object again.
        if (answer.ok) await this.deleteIfUnrecorded(job.c.object, target);
        if (answer.ok) job.holders = job.holders.filter((h) => h.nodeId !== holder.nodeId);
        const next = job.targets[++job.attempt];
        if (next) metrics.fallbacks.inc();
        if (next) liveness.reservePlacement(next.nodeId, job.c.object.size);
      }
      if (job.holders.length > 0 && job.attempt < job.targets.length) again.push(job);
      else {
        this.failed(out);
        const at = { objectId: job.c.object.id, ...logged };
        log.warn({ event: 'repair.failed', ...at }, 'no target took the copy; next pass retries');
      }
    }
    // The commit proposes nothing if its table read fails: those copies are strays the sweep removes.
    // Caught here, so one batch never ends the copier while other batches (and their slots) run.
    if (copied.length > 0)
      await this.commit(copied, target, startedAt, out).catch((err: unknown) => {
        this.failed(out, copied.length);
        const at = { ...logged, objects: copied.length, err: (err as Error).message };
        log.warn({ event: 'repair.commit_failed', ...at }, 'copies made but not recorded; next pass retries');
      });
    for (const j of batch) if (!again.includes(j)) j.release();
    return again;
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
    // The node each copy replaces, if it is still leaving now (read afresh).
    const nodes = await nodesById(this.deps.metadata);
    const removes = copied.map((c) => {
      const nodeId = c.leaving[0];
      const node = nodeId === undefined ? undefined : nodes.get(nodeId);
      return nodeId !== undefined && (!node || LEAVING.has(node.state)) ? { nodeId, node } : null;
    });
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
        for (const c of copied) {
          const at = { objectId: c.object.id, target: targetId, err: (err as Error).message };
          log.warn({ event: 'repair.commit_unknown', ...at }, 'copy made, commit outcome unknown; copy kept');
        }
        return null;
      },
    );
    for (const [i, c] of copied.entries()) {
      const result = results?.[i];
      if (!result) continue;
      const logged = { objectId: c.object.id, target: targetId };
      if (!result.ok) {
        this.failed(out);
        const at = { ...logged, err: `${result.code}: ${result.message}` };
        log.warn({ event: 'repair.commit_failed', ...at }, 'copy made but not recorded; next pass retries');
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
