// The seed's happy path after staging: elect a primary, send the image, then elect a secondary and
// send it there. A target that fails is replaced by the next-best live worker (p-retry with
// fallback) before the upload is given up. Nothing here touches the object table: the caller
// commits the record only once both copies are confirmed.

import pRetry, { AbortError } from 'p-retry';
import { readFileChunks } from '../fileWrites.ts';
import type { Logger } from '../logging.ts';
import { type PlacementCandidate, rankTargets } from './placement.ts';
import type { StagedUpload } from './stagingArea.ts';
import { WorkerCallError, type WorkerClient } from './workerClient.ts';

/**
 * Read size for streaming the staged file to the workers. Measured with bench/upload.ts (1 MiB
 * images, concurrency 8): 256 KiB took the cluster's CPU per upload from 44 to 37-39 ms and the
 * leader's from 17 to 14.5 ms against the 64 KiB default, from fewer reads and socket writes;
 * 512 KiB did no better, nor did reading the file once for both copies (a tee). Memory stays
 * bounded: a few such chunks per copy in flight.
 */
const STAGED_READ_BYTES = 256 * 1024;

export interface WorkerDirectory {
  /** The live view of the node table: state, zone and usage of every known worker. */
  candidates(): PlacementCandidate[];
  urlOf(nodeId: string): string | undefined;
  /** Told of every target elected, so uploads running at the same time spread out. */
  reserve?(nodeId: string, bytes: number): void;
}

export class NoLiveWorker extends Error {
  readonly code = 'NoLiveWorker';
  constructor(
    readonly replica: 'primary' | 'secondary',
    readonly failures: string[],
    /** Live workers exist, but every one is out of room (none had space, or each answered 507). */
    readonly full = false,
  ) {
    super(
      full
        ? `no live worker has room for the ${replica} copy${failures.length > 0 ? `: ${failures.join('; ')}` : ''}`
        : failures.length === 0
          ? `no live worker can take the ${replica} copy`
          : `every live worker refused the ${replica} copy: ${failures.join('; ')}`,
    );
  }
}

export interface ReplicateOptions {
  id: string;
  staged: StagedUpload;
  workers: WorkerDirectory;
  client: WorkerClient;
  log: Logger;
  /** Upper bound on targets tried for one copy; the live worker count bounds it too. */
  maxTargetsPerCopy?: number;
  /** Called when a target failed and another is tried (the seed's fallback, counted in metrics). */
  onFallback?: (nodeId: string, err: unknown) => void;
  /**
   * Awaited before a copy is sent to `nodeId`: the caller holds that copy until the upload's
   * record has an outcome, so no delete of an old copy of the id lands after this one (copyLocks.ts).
   */
  holdCopy?: (nodeId: string) => Promise<void>;
}

// A failed upload leaves the copies it already made: deleting them here could race a concurrent
// upload of the same bytes under another leader. Reconciliation removes orphans after a grace period.
export interface Replicated {
  replicas: [string, string];
}

/** A target refusal worth trying elsewhere; anything else (a bug) stops the retries at once. */
function isTargetFailure(err: unknown): boolean {
  return err instanceof WorkerCallError;
}

export async function replicateUpload(opts: ReplicateOptions): Promise<Replicated> {
  const { id, staged, workers, client, log } = opts;
  const maxTargets = opts.maxTargetsPerCopy ?? 5;
  // Both copies stream from the staged file at once: the secondary is elected beside the primary
  // (another worker, another zone when there is one) instead of after it, which halves the time an
  // upload waits on worker fsyncs. Nothing is acknowledged until both are confirmed, as before.
  const current: Record<'primary' | 'secondary', PlacementCandidate | undefined> = {
    primary: undefined,
    secondary: undefined,
  };
  const failed = new Set<string>();
  const other = (replica: 'primary' | 'secondary') =>
    current[replica === 'primary' ? 'secondary' : 'primary'];

  /** Elects a target for `replica` now (synchronously, so the two copies never pick one worker). */
  const elect = (replica: 'primary' | 'secondary'): PlacementCandidate | undefined => {
    const peer = other(replica);
    const target = rankTargets(workers.candidates(), {
      exclude: new Set([...failed, ...(peer ? [peer.nodeId] : [])]),
      avoidZones: new Set(peer ? [peer.zone] : []),
      size: staged.size,
    })[0];
    current[replica] = target;
    if (target) workers.reserve?.(target.nodeId, staged.size);
    return target;
  };

  const placeCopy = async (replica: 'primary' | 'secondary') => {
    const failures: string[] = [];
    let refusedForRoom = 0;
    /** Out of room rather than out of workers: every failure a 507, or up workers too full to rank. */
    const full = () => {
      if (failures.length > 0) return refusedForRoom === failures.length;
      const peer = other(replica);
      const exclude = new Set([...failed, ...(peer ? [peer.nodeId] : [])]);
      return rankTargets(workers.candidates(), { exclude }).length > 0;
    };
    let attempt = 0;
    return pRetry(
      async () => {
        // The first target was elected before either transfer started; later ones after a failure.
        const target = attempt++ === 0 ? current[replica] : elect(replica);
        const url = target && workers.urlOf(target.nodeId);
        if (!target || !url) throw new AbortError(new NoLiveWorker(replica, failures, full()));
        await opts.holdCopy?.(target.nodeId);
        const body = readFileChunks(staged.path, staged.size, STAGED_READ_BYTES);
        try {
          await client.putBlob(url, id, staged.sha256, staged.size, body);
          log.info(
            { event: 'upload.copy_stored', objectId: id, nodeId: target.nodeId, replica },
            'copy stored',
          );
          return target;
        } catch (err) {
          if (!isTargetFailure(err)) throw new AbortError(err as Error);
          failed.add(target.nodeId);
          failures.push(`${target.nodeId}: ${(err as Error).message}`);
          if ((err as WorkerCallError).status === 507) refusedForRoom += 1;
          log.warn(
            { event: 'upload.copy_failed', objectId: id, nodeId: target.nodeId, replica, err },
            'copy failed',
          );
          opts.onFallback?.(target.nodeId, err);
          throw err;
        } finally {
          // Closes the staged file if the request ended before its body was read to the end.
          await body.return(undefined);
        }
      },
      // Fallback is to a different worker, so there is nothing to wait for between attempts.
      { retries: maxTargets - 1, minTimeout: 0, maxTimeout: 0, randomize: false },
    ).catch((err: unknown) => {
      throw isTargetFailure(err) ? new NoLiveWorker(replica, failures, full()) : err;
    });
  };

  elect('primary');
  elect('secondary');
  const [primary, secondary] = await Promise.allSettled([placeCopy('primary'), placeCopy('secondary')]);
  if (primary.status === 'rejected') throw primary.reason;
  if (secondary.status === 'rejected') throw secondary.reason;
  return { replicas: [primary.value.nodeId, secondary.value.nodeId] };
}
