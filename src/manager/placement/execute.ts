// What the executors of placement actions share: one action at a time per object, bounded
// concurrency, the read-backs the planner asks for, and the two ways an action changes the world (a
// replica change committed, a copy deleted).
//
// Each action reads the record, decides (plan.ts) and acts after awaits (a read-back, a transfer, a
// commit). Two of them acting on one object at once can lose a copy: a trim combined with a
// rejoin's excess removal leaves one; a rejoin deletes the stand-in copy it just replaced while
// repair copies onto that same worker, whose PUT answers "unchanged" from the copy about to go, and
// repair records a copy nobody holds. So placement actions hold their object's slot from their read
// to their last outcome (and skip an object whose slot is taken); an upload holds it, waiting for
// it, from before it writes its first copy until its record has an outcome; a delete while it
// deletes the copies. A copy is only deleted under the slot after a read of the table as of
// everything committed (`deleteCopy`). The slots are leader-local: a new leader starts with none
// held. What they leave open is a delete a deposed leader had already sent when it lost the lead.

import type { Logger } from '../../logging.ts';
import { expectedOf, type NodeView, type ObjectView, type ReplicaChange } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import { type CommandProposer, proposeCommand } from '../../metadata/proposeCommand.ts';
import type { RepairMetrics } from '../repairMetrics.ts';
import type { WorkerClient } from '../workerClient.ts';
import type { WorkerLiveness } from '../workerLiveness.ts';
import type { Checks, CopyCheck, Nodes } from './plan.ts';

/** What placement needs of the Raft node (the manager's RaftAccess). */
export interface PlacementRaft extends CommandProposer {
  isLeader(): boolean;
  /** Resolves once this node's tables hold everything committed before the call, as leader. */
  readIndex(): Promise<void>;
}

/** What every executor of placement actions acts through. */
export interface ExecutorDeps {
  raft: PlacementRaft;
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

/** Gives an object's slot back; calling it again does nothing. */
export type Release = () => void;

export class ObjectSlots {
  /** Held slots, each settling once given back. */
  private readonly held = new Map<string, Promise<void>>();

  /** Takes the slot of object `id`, or null at once when another action holds it. */
  claim(id: string): Release | null {
    if (this.held.has(id)) return null;
    let wake!: () => void;
    this.held.set(id, new Promise<void>((resolve) => (wake = resolve)));
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held.delete(id);
      wake();
    };
  }

  /** Takes the slot, first waiting for whoever holds it (each holder's work is bounded in time). */
  async hold(id: string): Promise<Release> {
    for (;;) {
      const mine = this.claim(id);
      if (mine) return mine;
      await this.held.get(id);
    }
  }

  /** Runs `act` holding the slot of `id`; `busy` (and nothing run) when another action holds it. */
  async run<T>(id: string, act: () => Promise<T>, busy: T): Promise<T> {
    const release = this.claim(id);
    if (release === null) return busy;
    try {
      return await act();
    } finally {
      release();
    }
  }

  /** Objects with an action in flight: zero whenever nothing runs. */
  size(): number {
    return this.held.size;
  }
}

/**
 * Runs `act` over `items`, `lanes` at a time, while `go()` holds. `items` may be a function, an
 * async source shared by the lanes (an inventory being read) that returns undefined when done.
 */
export async function runLanes<T>(
  lanes: number,
  items: readonly T[] | (() => Promise<T | undefined>),
  act: (item: T) => Promise<void>,
  go: () => boolean = () => true,
): Promise<void> {
  let i = 0;
  const next = typeof items === 'function' ? items : async () => items[i++];
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
  nodes: Nodes,
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
 * Deletes the copy of `id` on `node` if the record, read as of everything committed, still allows
 * it (`allows`: by default, when it does not list the copy). The caller holds the object's slot, so
 * no commit of this leader that records the copy lands between the read and the delete; the
 * ReadIndex also proves this manager still leads and covers what a newer leader committed. False
 * when the record forbids it; a failed delete (or a lost leadership) rejects.
 */
export async function deleteCopy(
  deps: { raft: { readIndex(): Promise<void> }; metadata: MetadataStateMachine; workers: WorkerClient },
  node: { nodeId: string; url: string },
  id: string,
  allows: (fresh: ObjectView | null) => boolean = (o) => !o?.replicas.includes(node.nodeId),
): Promise<boolean> {
  await deps.raft.readIndex();
  if (!allows(await deps.metadata.getObject(id))) return false;
  await deps.workers.deleteBlob(node.url, id);
  return true;
}

/** For deleteCopy: the record still has `object`'s bytes and does not list the copy on `nodeId`. */
export const unlistedIn = (object: ObjectView, nodeId: string) => (fresh: ObjectView | null) =>
  fresh?.sha256 === object.sha256 && fresh.size === object.size && !fresh.replicas.includes(nodeId);

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
