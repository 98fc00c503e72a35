// One placement action, upload or delete at a time per object id, on this leader.
//
// Each reads the record, decides and acts after awaits (a read-back, a transfer, a commit). Two of
// them acting on one object at once can lose a copy: a trim combined with a rejoin's excess removal
// leaves one; a rejoin deletes the stand-in copy it just replaced while repair copies onto that same
// worker, whose PUT answers "unchanged" from the copy about to go, and repair records a copy nobody
// holds. So placement actions hold their object's slot from their read to their last outcome (and
// skip an object whose slot is taken); an upload holds it, waiting for it, from before it writes its
// first copy until its record has an outcome; a delete while it deletes the copies. A copy is only
// deleted under the slot after a read of the table as of everything committed (`deleteCopy`). The
// slots are leader-local: a new leader starts with none held. What they leave open is a delete a
// deposed leader had already sent when it lost the lead.

import type { ObjectView } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import type { WorkerClient } from '../workerClient.ts';

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
