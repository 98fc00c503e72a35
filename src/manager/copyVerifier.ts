// Reads a copy back from its worker and hashes it. The sha256 a worker reports in its inventory
// is what its index says, written when the blob was; the worker's start-up check compares sizes,
// not hashes, so a copy rotten on disk still reports the right checksum. Before the leader gives
// up a copy because another one exists (a rejoin's excess, a copy too many), the copies that stay
// are proved by their bytes, not by a claim.

import { createHash } from 'node:crypto';
import type { WorkerClient } from './workerClient.ts';

export type CopyCheck = 'good' | 'bad' | 'unknown';

/**
 * `good`: the worker served exactly the expected bytes; `bad`: it has no such blob or served other
 * bytes; `unknown`: it could not be asked (unreachable, busy), which proves nothing either way.
 */
export async function checkCopy(
  workers: WorkerClient,
  workerUrl: string,
  id: string,
  expected: { sha256: string; size: number },
): Promise<CopyCheck> {
  let res: Awaited<ReturnType<WorkerClient['getBlob']>>;
  try {
    res = await workers.getBlob(workerUrl, id);
  } catch (err) {
    return (err as { code?: string }).code === 'NotFound' ? 'bad' : 'unknown';
  }
  if (res.statusCode !== 200) {
    await res.body.dump();
    return 'unknown';
  }
  const hash = createHash('sha256');
  let size = 0;
  try {
    for await (const chunk of res.body) {
      const buf = chunk as Buffer;
      size += buf.length;
      hash.update(buf);
    }
  } catch {
    // A read that broke off midway (the worker's own check found the bytes wrong, or the
    // connection dropped) proves nothing by itself.
    return 'unknown';
  }
  return size === expected.size && hash.digest('hex') === expected.sha256 ? 'good' : 'bad';
}
