// What the placement reconciler observes: the work the tables show (objects on leaving nodes, one
// bounded step of a walk over the object table), the copies a worker's inventory lacks, and when
// each unrecorded blob was first seen (inventories carry no mtime, so the orphan grace counts from
// the first sighting on this leader). Reads only; decisions are plan.ts's.

import type { NodeView, ObjectView } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import type { InventoryEntry } from '../workerClient.ts';
import { LEAVING } from './plan.ts';

/** The recorded copies on `nodeId`, in ascending id order, a page of the node index at a time. */
export async function* objectsOn(metadata: MetadataStateMachine, nodeId: string): AsyncGenerator<string> {
  let after: string | undefined;
  do {
    const page = await metadata.objectsOnNode(nodeId, { limit: 1000, ...(after ? { after } : {}) });
    yield* page.items;
    after = page.next ?? undefined;
  } while (after !== undefined);
}

/**
 * The objects a repair pass looks at: every object on a down, draining or drained node (a range
 * scan per node), up to `limit`, then one step of the walk over the object table from `cursor` (a
 * backstop: objects short of copies for any other reason, or with a copy too many). A new leader
 * finds the same work by reading the same tables.
 */
export async function observeRepairWork(
  metadata: MetadataStateMachine,
  nodes: NodeView[],
  cursor: string | undefined,
  limit: number,
): Promise<{ objects: ObjectView[]; cursor: string | undefined }> {
  const ids = new Set<string>();
  for (const node of nodes.filter((n) => LEAVING.has(n.state))) {
    for await (const id of objectsOn(metadata, node.nodeId)) {
      ids.add(id);
      if (ids.size >= limit) break;
    }
    if (ids.size >= limit) break;
  }
  const step = await metadata.listObjects({ ...(cursor ? { after: cursor } : {}), limit: 1000 });
  const objects = step.items.filter((o) => !ids.has(o.id));
  for (const id of ids) {
    const object = await metadata.getObject(id);
    if (object) objects.push(object);
  }
  return { objects, cursor: step.next ?? undefined };
}

/**
 * The ids listed in `recorded` (ascending) that `inventory` (ascending) lacks: a merge of the two
 * in bounded memory. Yields `null` and stops when the inventory is out of order.
 */
export async function* lackedBy(
  inventory: AsyncIterable<InventoryEntry> | Iterable<InventoryEntry>,
  recorded: AsyncIterable<string>,
): AsyncGenerator<string | null> {
  const held = (async function* () {
    yield* inventory;
  })();
  try {
    let current = await held.next();
    for await (const id of recorded) {
      while (!current.done && current.value.id < id) {
        const previous = current.value.id;
        current = await held.next();
        if (!current.done && current.value.id <= previous) {
          yield null;
          return;
        }
      }
      if (current.done || current.value.id !== id) yield id;
    }
  } finally {
    await held.return(undefined);
  }
}

interface Sighting {
  nodeId: string;
  id: string;
  firstSeen: number;
}

/** Unrecorded blobs (orphans and strays) by worker, with when this leader first saw each. */
export class FirstSeen {
  private readonly seen = new Map<string, Sighting>();

  /** Notes a sighting; returns when the blob was first seen (now, if this is the first). */
  note(nodeId: string, id: string, now: number): { firstSeen: number; isNew: boolean } {
    const known = this.seen.get(`${nodeId}/${id}`);
    if (known) return { firstSeen: known.firstSeen, isNew: false };
    this.seen.set(`${nodeId}/${id}`, { nodeId, id, firstSeen: now });
    return { firstSeen: now, isNew: true };
  }

  forget(nodeId: string, id: string): void {
    this.seen.delete(`${nodeId}/${id}`);
  }

  /** Moves a sighting to the back of all(), keeping when it was first seen. */
  requeue(nodeId: string, id: string): void {
    const known = this.seen.get(`${nodeId}/${id}`);
    if (!known) return;
    this.seen.delete(`${nodeId}/${id}`);
    this.seen.set(`${nodeId}/${id}`, known);
  }

  get(nodeId: string, id: string): Sighting | undefined {
    return this.seen.get(`${nodeId}/${id}`);
  }

  /** The sightings on `nodeId`, to drop those a fresh inventory no longer lists. */
  on(nodeId: string): Sighting[] {
    return [...this.seen.values()].filter((s) => s.nodeId === nodeId);
  }

  all(): Sighting[] {
    return [...this.seen.values()];
  }

  size(): number {
    return this.seen.size;
  }
}
