// What the placement reconciler observes: the work the tables show (objects on leaving nodes, one
// bounded step of a walk over the object table), the copies a worker's inventory lacks, and when
// each unrecorded blob was first seen (inventories carry no mtime, so the orphan grace counts from
// the first sighting on this leader). Reads only; decisions are plan.ts's.

import type { NodeView, ObjectView } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import type { InventoryEntry } from '../workerClient.ts';
import { LEAVING } from './plan.ts';

/** The recorded copies on `nodeId` (after `after`), in ascending id order, a page at a time. */
export async function* objectsOn(
  metadata: MetadataStateMachine,
  nodeId: string,
  after?: string,
): AsyncGenerator<string> {
  do {
    const page = await metadata.objectsOnNode(nodeId, { limit: 1000, ...(after ? { after } : {}) });
    yield* page.items;
    after = page.next ?? undefined;
  } while (after !== undefined);
}

/** Index entries a pass reads on leaving nodes, per object it may take on. */
const READS_PER_OBJECT = 4;
/** Objects of the whole table a pass looks at beside the leaving nodes' (never more than its limit). */
const BACKSTOP_PAGE = 1000;

/**
 * The objects a repair pass looks at: those on down, draining or drained nodes (a range scan of
 * each node's index), then one step of the walk over the object table (a backstop: objects short
 * of copies for any other reason, or with a copy too many). A new leader finds the same work by
 * reading the same tables.
 *
 * Each leaving node's scan resumes where the last pass left it and wraps round at the end of its
 * index, and an object no serving worker holds (one on two down workers) takes no place among the
 * `limit` objects a pass takes on, only a read: so such objects, looked at once a round, never keep
 * the objects behind them, which do have a copy to repair from, waiting for the backstop.
 */
export class RepairWalk {
  /** Where each leaving node's scan resumes; where the backstop resumes. */
  private readonly after = new Map<string, string>();
  private backstop: string | undefined;
  /** Where the backstop was at `restart`, and whether it has since passed the end of the table. */
  private sweepFrom: string | undefined;
  private wrapped = false;
  /** The backstop has come round to `sweepFrom` since `restart`: every object was looked at. */
  private walkedAll = false;

  constructor(private readonly metadata: MetadataStateMachine) {}

  /**
   * Starts counting a round of the backstop from where it is (a new leader: its verdicts start
   * empty). It goes on from there rather than from the first object: a leadership that changes
   * more often than a round takes must not keep the objects at the end of the table unseen.
   */
  restart(): void {
    this.sweepFrom = this.backstop;
    this.wrapped = false;
    this.walkedAll = false;
  }

  /** Every object has been in a step since `restart` (or since this walk was made). */
  get coveredAll(): boolean {
    return this.walkedAll;
  }

  /** `hasSource`: a serving worker holds a copy of the object, and it was not found lost or unavailable. */
  async step(
    nodes: NodeView[],
    limit: number,
    hasSource: (object: ObjectView) => boolean,
  ): Promise<ObjectView[]> {
    const leaving = nodes.filter((n) => LEAVING.has(n.state)).map((n) => n.nodeId);
    for (const nodeId of this.after.keys()) if (!leaving.includes(nodeId)) this.after.delete(nodeId);
    const taken = new Map<string, ObjectView>();
    let room = limit;
    let reads = limit * READS_PER_OBJECT;
    for (const [i, nodeId] of leaving.entries()) {
      // Each node scans up to an even share of the room (objects with a source) and reads left.
      const left = leaving.length - i;
      const myRoom = Math.ceil(room / left);
      const myReads = Math.ceil(reads / left);
      let took = 0;
      let read = 0;
      let after = this.after.get(nodeId);
      let round = true;
      for await (const id of objectsOn(this.metadata, nodeId, after)) {
        round = took < myRoom && read < myReads;
        if (!round) break;
        read += 1;
        after = id;
        const object = taken.has(id) ? null : await this.metadata.getObject(id);
        if (object) taken.set(id, object);
        if (object && hasSource(object)) took += 1;
      }
      // The end of the index: the next pass starts a new round.
      if (round || after === undefined) this.after.delete(nodeId);
      else this.after.set(nodeId, after);
      room -= took;
      reads -= read;
    }
    const step = await this.metadata.listObjects({
      ...(this.backstop ? { after: this.backstop } : {}),
      limit: Math.min(BACKSTOP_PAGE, limit),
    });
    this.backstop = step.next ?? undefined;
    // A page holds the ids after the old cursor up to the new one (all the rest at the end).
    if (this.backstop === undefined) {
      // The end a second time since `restart` is a whole round too: the ids from `sweepFrom` on
      // may all have been deleted meanwhile, so the cursor never reaches it again.
      if (this.wrapped || this.sweepFrom === undefined) this.walkedAll = true;
      this.wrapped = true;
    } else if (this.wrapped && this.sweepFrom !== undefined && this.backstop >= this.sweepFrom) {
      this.walkedAll = true;
    }
    return [...taken.values(), ...step.items.filter((o) => !taken.has(o.id))];
  }
}

/** One step of comparing an inventory with the recorded copies on its worker (compareInventory). */
export type Compared =
  /** A line whose copy the record lists on this worker. */
  | { kind: 'listed'; line: InventoryEntry }
  /** A line the record does not list on this worker: an orphan or a stray. */
  | { kind: 'unlisted'; line: InventoryEntry }
  /** A copy the record lists on this worker that the inventory lacks. */
  | { kind: 'lacking'; id: string }
  /** The inventory is out of id order: nothing after this can be trusted; the last step. */
  | { kind: 'unordered' };

/**
 * An inventory (ascending) against the ids recorded on its worker (ascending), each side read
 * once, in a merge: bounded memory and no lookup per line, whatever the number of blobs.
 */
export async function* compareInventory(
  inventory: AsyncIterable<InventoryEntry> | Iterable<InventoryEntry>,
  recorded: AsyncIterable<string>,
): AsyncGenerator<Compared> {
  const held = (async function* () {
    yield* inventory;
  })();
  const ids = recorded[Symbol.asyncIterator]();
  let previous: string | undefined;
  const nextLine = async (): Promise<InventoryEntry | null | 'unordered'> => {
    const r = await held.next();
    if (r.done) return null;
    if (previous !== undefined && r.value.id <= previous) return 'unordered';
    previous = r.value.id;
    return r.value;
  };
  try {
    let line = await nextLine();
    let id = await ids.next();
    for (;;) {
      if (line === 'unordered') {
        yield { kind: 'unordered' };
        return;
      }
      if (line === null && id.done) return;
      if (line !== null && (id.done || line.id < id.value)) {
        yield { kind: 'unlisted', line };
        line = await nextLine();
      } else if (line === null || line.id > id.value!) {
        yield { kind: 'lacking', id: id.value! };
        id = await ids.next();
      } else {
        yield { kind: 'listed', line };
        line = await nextLine();
        id = await ids.next();
      }
    }
  } finally {
    await held.return(undefined);
    await ids.return?.(undefined);
  }
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

  /** Notes a sighting unless one is noted already; true if this is the first. */
  note(nodeId: string, id: string, now: number): boolean {
    if (this.seen.has(`${nodeId}/${id}`)) return false;
    this.seen.set(`${nodeId}/${id}`, { nodeId, id, firstSeen: now });
    return true;
  }

  forget(nodeId: string, id: string): void {
    this.seen.delete(`${nodeId}/${id}`);
  }

  /** Moves a sighting to the back of all(), keeping when it was first seen. */
  requeue(s: Sighting): void {
    this.forget(s.nodeId, s.id);
    this.seen.set(`${s.nodeId}/${s.id}`, s);
  }

  get(nodeId: string, id: string): Sighting | undefined {
    return this.seen.get(`${nodeId}/${id}`);
  }

  /** The sightings, oldest noted or requeued first; only those on `nodeId` if given. */
  all(nodeId?: string): Sighting[] {
    const all = [...this.seen.values()];
    return nodeId === undefined ? all : all.filter((s) => s.nodeId === nodeId);
  }
}
