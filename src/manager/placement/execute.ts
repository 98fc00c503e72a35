// The executor's two bounds: at most one placement action in flight per object id, and a bounded
// number of actions at once.
//
// Every action reads the record afresh once it holds its object, decides (plan.ts) and acts, so two
// decisions about one object never interleave: a trim cannot combine with a rejoin's excess removal
// to leave one copy, a stray delete cannot race a repair onto the same worker, a dropped missing
// copy cannot race a re-adoption. The slots are leader-local: a new leader starts with none held.
// Against the upload and delete paths (which write or remove copies before or without a placement
// decision) each copy is still held in CopyLocks (copyLocks.ts).

import type { Logger } from '../../logging.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import type { CopyLocks } from '../copyLocks.ts';
import type { RaftAccess } from '../imageService.ts';
import type { RepairMetrics } from '../repairMetrics.ts';
import type { WorkerClient } from '../workerClient.ts';
import type { WorkerLiveness } from '../workerLiveness.ts';

/** What every executor of placement actions acts through. */
export interface ExecutorDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  /** Shared with the upload and delete paths: see copyLocks.ts. */
  copies: CopyLocks;
  /** One action per object at a time, shared by repair and rejoin. */
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
  private readonly held = new Set<string>();

  /** Takes the slot of object `id`, or null at once when another action holds it. */
  claim(id: string): Release | null {
    if (this.held.has(id)) return null;
    this.held.add(id);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.held.delete(id);
    };
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
