// What the executors of placement actions share: bounded concurrency, the read-backs the planner
// asks for, and committing a replica change. At most one action per object runs at a time
// (slots.ts): every action reads the record afresh once it holds its object's slot, decides
// (plan.ts) and acts.

import type { Logger } from '../../logging.ts';
import { expectedOf, type NodeView, type ObjectView, type ReplicaChange } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import type { RaftAccess } from '../imageService.ts';
import type { RepairMetrics } from '../repairMetrics.ts';
import type { WorkerClient } from '../workerClient.ts';
import type { WorkerLiveness } from '../workerLiveness.ts';
import type { Checks, CopyCheck } from './plan.ts';
import type { ObjectSlots } from './slots.ts';

/** What every executor of placement actions acts through. */
export interface ExecutorDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  /** One action per object at a time, shared by repair, rejoin, uploads and deletes. */
  slots: ObjectSlots;
  liveness: WorkerLiveness;
  workers: WorkerClient;
  log: Logger;
  metrics: RepairMetrics;
  now?: () => number;
}

/** A counter per kind of outcome, all at zero. */
export function counters<K extends string>(kinds: readonly K[]): Record<K, number> {
  return Object.fromEntries(kinds.map((k) => [k, 0])) as Record<K, number>;
}

/**
 * Runs `act` over what `next` hands out, `lanes` at a time, while `go()` holds. `next` may be an
 * async source shared by the lanes (an inventory being read); it returns undefined when done.
 */
export async function runLanes<T>(
  lanes: number,
  next: () => Promise<T | undefined> | T | undefined,
  act: (item: T) => Promise<void>,
  go: () => boolean = () => true,
): Promise<void> {
  const lane = async (): Promise<void> => {
    while (go()) {
      const item = await next();
      if (item === undefined) return;
      await act(item);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, lanes) }, lane));
}

export async function nodesById(metadata: MetadataStateMachine): Promise<Map<string, NodeView>> {
  return new Map((await metadata.listNodes()).map((n) => [n.nodeId, n]));
}

type ReadBack = { kind: 'readBack'; nodeIds: string[] };

/**
 * Calls `plan` until it asks for no more read-backs, doing those it asks for in between, and
 * returns its decision with the checks it was made on.
 */
export async function planReadingBack<A extends { kind: string }>(
  workers: WorkerClient,
  object: ObjectView | null,
  nodes: ReadonlyMap<string, NodeView>,
  plan: (checks: Checks) => A | ReadBack,
): Promise<{ action: Exclude<A, ReadBack>; checks: Checks }> {
  const checks = new Map<string, CopyCheck>();
  for (;;) {
    const action = plan(checks);
    if (action.kind !== 'readBack') return { action: action as Exclude<A, ReadBack>, checks };
    for (const n of (action as ReadBack).nodeIds) {
      const url = nodes.get(n)?.url;
      checks.set(n, url && object ? await checkCopy(workers, url, object) : 'unknown');
    }
  }
}

/**
 * Has a copy read back and hashed by its worker, where it lies (POST /blobs/:id/verify). The sha256
 * a worker's inventory reports is what its index says, written with the blob; its start-up check
 * compares sizes, not hashes, so a copy rotten on disk still claims the right checksum. Before a
 * copy is given up because others exist, those are proved by their bytes, not by a claim.
 * `bad`: no such blob, or other bytes consistently; `unknown`: the worker could not be asked, or its
 * bytes did not match its own index (it then removes them itself), which proves nothing either way.
 */
async function checkCopy(workers: WorkerClient, url: string, object: ObjectView): Promise<CopyCheck> {
  const verdict = await workers.verifyBlob(url, object.id).catch(() => null);
  if (verdict?.state === 'missing') return 'bad';
  if (verdict?.state !== 'intact') return 'unknown';
  return verdict.size === object.size && verdict.sha256 === object.sha256 ? 'good' : 'bad';
}

/**
 * Commits one replica change decided on `object` (refused if the record changed since, see
 * `expected` in commands.ts); the object as changed, or null, logged, when the record refuses it.
 */
export async function commitChange(
  deps: Pick<ExecutorDeps, 'raft' | 'log'>,
  object: ObjectView,
  change: ReplicaChange,
  lastCopyEvent = 'reconcile.last_copy_kept',
): Promise<ObjectView | null> {
  const result = await proposeCommand(deps.raft, { ...change, expected: expectedOf(object) });
  if (result.ok) return result.object;
  const at = { objectId: object.id, change: change.type, code: result.code };
  if (result.code === 'LastReplica')
    deps.log.error({ event: lastCopyEvent, ...at }, 'the only recorded copy is bad or missing; kept');
  else deps.log.warn({ event: 'reconcile.change_refused', ...at }, result.message);
  return null;
}
