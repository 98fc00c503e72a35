// Has a copy read back by its worker and hashed there. The sha256 a worker reports in its
// inventory is what its index says, written when the blob was; the worker's start-up check compares
// sizes, not hashes, so a copy rotten on disk still reports the right checksum. Before the leader
// gives up a copy because another one exists (a rejoin's excess, a copy too many), the copies that
// stay are proved by their bytes, not by a claim. The worker hashes them where they lie
// (POST /blobs/:id/verify): the leader gets the verdict, not the bytes.

import type { CopyCheck } from './placement/plan.ts';
import type { WorkerClient } from './workerClient.ts';

export type { CopyCheck };

/**
 * `good`: the worker's copy hashes to exactly the expected bytes; `bad`: it has no such blob, or
 * holds other bytes consistently; `unknown`: it could not be asked (unreachable, busy), or its bytes
 * did not even match its own index (the worker then removes them itself), which proves nothing
 * about the record either way.
 */
export async function checkCopy(
  workers: WorkerClient,
  workerUrl: string,
  id: string,
  expected: { sha256: string; size: number },
): Promise<CopyCheck> {
  let verdict: Awaited<ReturnType<WorkerClient['verifyBlob']>>;
  try {
    verdict = await workers.verifyBlob(workerUrl, id);
  } catch {
    return 'unknown';
  }
  if (verdict.state === 'missing') return 'bad';
  if (verdict.state !== 'intact') return 'unknown';
  return verdict.size === expected.size && verdict.sha256 === expected.sha256 ? 'good' : 'bad';
}

/** Has each copy on `nodeIds` read back by its worker, noting the verdicts in `checks`. */
export async function readBack(
  workers: WorkerClient,
  object: { id: string; sha256: string; size: number },
  nodeIds: readonly string[],
  nodes: ReadonlyMap<string, { url: string }>,
  checks: Map<string, CopyCheck>,
): Promise<void> {
  for (const n of nodeIds) {
    const url = nodes.get(n)?.url;
    checks.set(n, url ? await checkCopy(workers, url, object.id, object) : 'unknown');
  }
}
