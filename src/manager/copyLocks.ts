// The copies (one worker's blob of one object id) this leader is acting on right now.
//
// Deleting a copy and recording one are both decided on a read of the table and carried out after
// awaits (a read-back, a transfer, a commit). Without a lock two of the leader's paths can act on
// one copy at once. For example, a rejoin deletes the stand-in copy it just replaced. Meanwhile,
// repair copies onto that same worker: its PUT answers "unchanged" from the copy about to go, and
// repair records it. The record then names a copy nobody holds, and nothing looks for it again.
//
// So every path that records a copy on a worker holds that copy from before its bytes are written
// or checked until its commit has an outcome. Every path that deletes a copy holds it and reads the
// table again under the hold (`deleteUnlistedCopy`, or `deleteHeldUnlistedCopy` for a copy it
// already holds), as of everything committed. The locks are leader-local: a new leader starts with
// none held. What they leave open is a delete a deposed leader had already sent when it lost the lead.

import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import type { WorkerClient } from './workerClient.ts';

/** Gives a held copy back; calling it again does nothing. */
export type Release = () => void;

export class CopyLocks {
  private readonly held = new Map<string, Promise<void>>();

  /** Holds the copy of `id` on `nodeId`, or returns null at once when another path holds it. */
  tryHold(nodeId: string, id: string): Release | null {
    const key = keyOf(nodeId, id);
    if (this.held.has(key)) return null;
    let wake!: () => void;
    this.held.set(
      key,
      new Promise<void>((resolve) => {
        wake = resolve;
      }),
    );
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held.delete(key);
      wake();
    };
  }

  /** Holds the copy, first waiting for whoever holds it now (each holder's work is bounded in time). */
  async hold(nodeId: string, id: string): Promise<Release> {
    for (;;) {
      const mine = this.tryHold(nodeId, id);
      if (mine) return mine;
      await this.held.get(keyOf(nodeId, id));
    }
  }

  /** How many copies are held: zero whenever nothing runs. */
  size(): number {
    return this.held.size;
  }
}

function keyOf(nodeId: string, id: string): string {
  return `${nodeId}\0${id}`;
}

export type CopyDeletion = 'deleted' | 'listed' | 'busy';

interface CopyDeletionDeps {
  copies: CopyLocks;
  metadata: MetadataStateMachine;
  workers: WorkerClient;
  raft: { readIndex(): Promise<void> };
}

/**
 * Deletes the copy of `id` on `node` unless the table lists it there (again), reading the table
 * under the hold, so no commit of this leader that records the copy can land between the read and
 * the delete. The read is a ReadIndex read: it also proves this manager still leads, and covers
 * what a newer leader committed. `wait`: wait for a path acting on the copy, instead of leaving it
 * (`busy`) for a later sweep. A failed delete (or a lost leadership) rejects, with the copy released.
 */
export async function deleteUnlistedCopy(
  deps: CopyDeletionDeps,
  node: { nodeId: string; url: string },
  id: string,
  opts: { wait?: boolean } = {},
): Promise<CopyDeletion> {
  const release = opts.wait ? await deps.copies.hold(node.nodeId, id) : deps.copies.tryHold(node.nodeId, id);
  if (release === null) return 'busy';
  try {
    return await deleteHeldUnlistedCopy(deps, node, id);
  } finally {
    release();
  }
}

/** deleteUnlistedCopy for a copy the caller already holds (and keeps holding). */
export async function deleteHeldUnlistedCopy(
  deps: Omit<CopyDeletionDeps, 'copies'>,
  node: { nodeId: string; url: string },
  id: string,
): Promise<Exclude<CopyDeletion, 'busy'>> {
  await deps.raft.readIndex();
  const object = await deps.metadata.getObject(id);
  if (object?.replicas.includes(node.nodeId)) return 'listed';
  await deps.workers.deleteBlob(node.url, id);
  return 'deleted';
}
