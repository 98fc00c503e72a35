// The happy path of docs/seed-flow.md after the type check: elect a primary, send the image, then
// elect a secondary and send it there (both at once, while the body arrives when it is teed,
// else from the staged file). A target that fails is replaced by the next-best live worker (p-retry with
// fallback) before the upload is given up. Nothing here touches the object table: the caller
// commits the record only once both copies are confirmed.

import pRetry, { AbortError } from 'p-retry';
import { readFileChunks } from '../fileWrites.ts';
import type { Logger } from '../logging.ts';
import { type NoTargetReason, type PlacementCandidate, rankTargets, whyNoTarget } from './placement.ts';
import type { StagedUpload, TeedUpload } from './stagingArea.ts';
import { WorkerCallError, type WorkerClient } from './workerClient.ts';

/**
 * Read size for streaming the staged file to the workers: larger than the 64 KiB default for fewer
 * reads and socket writes (bench:upload, docs/measurements.md). Memory stays bounded: a few such
 * chunks per copy in flight.
 */
const STAGED_READ_BYTES = 256 * 1024;

export interface WorkerDirectory {
  /** The live view of the node table: state, zone and usage of every known worker. */
  candidates(): PlacementCandidate[];
  urlOf(nodeId: string): string | undefined;
  /** Told of every target elected, so uploads running at the same time spread out. */
  reserve?(nodeId: string, bytes: number): void;
  /** A copy starts going to `nodeId`: its signal aborts if the worker goes silent meanwhile. */
  sendingTo?(nodeId: string): { signal: AbortSignal; end: () => void };
}

/**
 * Why a copy found no worker: `full` (507) only when the workers known to be live lack room;
 * `unheard` when this manager has not heard from enough workers lately to know (retry);
 * `noWorker` when no worker in the table could take it; `refused` when every target tried failed
 * for another reason than room.
 */
export type NoLiveWorkerReason = NoTargetReason | 'refused';

export class NoLiveWorker extends Error {
  readonly code = 'NoLiveWorker';
  constructor(
    readonly replica: 'primary' | 'secondary',
    /** Each failed target as `nodeId (code)`: node ids only, never a worker's URL (this is public). */
    readonly failures: string[],
    readonly reason: NoLiveWorkerReason,
  ) {
    const tried = failures.length > 0 ? `; tried ${failures.join(', ')}` : '';
    super(`${REASON_TEXT[reason](replica)}${tried}`);
  }

  /** The reason without the failures it lists, whose codes may carry a worker's detail. */
  get summary(): string {
    const tried = this.failures.length > 0 ? ` (${this.failures.length} tried)` : '';
    return `${REASON_TEXT[this.reason](this.replica)}${tried}`;
  }

  /** Live workers exist, but every one is out of room (none had space, or each answered 507). */
  get full(): boolean {
    return this.reason === 'full';
  }
}

const REASON_TEXT: Record<NoLiveWorkerReason, (replica: string) => string> = {
  full: (r) => `no live worker has room for the ${r} copy`,
  unheard: (r) =>
    `no worker has been heard from lately enough to take the ${r} copy (a new leader, or workers restarting or unreachable); retry shortly`,
  noWorker: (r) => `no live worker can take the ${r} copy`,
  refused: (r) => `every live worker refused the ${r} copy`,
};

/** The reason once targets were tried: room only if every refusal was for room. */
function reasonAfterFailures(refusedForRoom: number, failures: number, left: NoTargetReason | null) {
  if (left === 'unheard') return 'unheard';
  return refusedForRoom === failures ? 'full' : 'refused';
}

interface ReplicateCommon {
  id: string;
  workers: WorkerDirectory;
  client: WorkerClient;
  log: Logger;
  /** Upper bound on targets tried for one copy; the live worker count bounds it too. */
  maxTargetsPerCopy?: number;
  /** Called when a target failed and another is tried (docs/seed-flow.md's fallback, counted in metrics). */
  onFallback?: (nodeId: string, err: unknown) => void;
}

/** Copies sent from a staged file, whole before they start. */
export interface FromStaged extends ReplicateCommon {
  staged: StagedUpload;
}

/**
 * Copies sent while the body arrives: each copy's first target gets the body's chunks from its
 * branch of the tee; a target that fails is replaced by the next, sent from the staged bytes (a
 * file, or the chunks held in memory) once the body is whole.
 */
export interface FromTee extends ReplicateCommon {
  teed: TeedUpload;
}

export type ReplicateOptions = FromStaged | FromTee;

const REPLICAS = ['primary', 'secondary'] as const;

// A failed upload leaves the copies it already made: deleting them here could race a concurrent
// upload of the same bytes under another leader. Reconciliation removes orphans after a grace period.
export interface Replicated {
  replicas: [string, string];
}

/** A target refusal worth trying elsewhere; anything else (a bug) stops the retries at once. */
function isTargetFailure(err: unknown): boolean {
  return err instanceof WorkerCallError;
}

/** A memory-held body's chunks, as the request body a staged file's would be. */
async function* heldChunks(chunks: readonly Uint8Array[]): AsyncGenerator<Uint8Array> {
  yield* chunks;
}

/** What a target of `replica` is sent: its branch of the tee on the first try, else the staged file. */
function copySender(opts: ReplicateOptions) {
  const { id, client } = opts;
  const fromFile = async (url: string, staged: StagedUpload, signal?: AbortSignal) => {
    if (staged.path === null && staged.chunks.length === 1) {
      // One buffer: undici writes it in the same socket write as the request's headers.
      await client.putBlob(url, id, staged.sha256, staged.size, staged.chunks[0]!, staged.crc32c, signal);
      return;
    }
    const body =
      staged.path === null
        ? heldChunks(staged.chunks)
        : readFileChunks(staged.path, staged.size, STAGED_READ_BYTES);
    try {
      await client.putBlob(url, id, staged.sha256, staged.size, body, staged.crc32c, signal);
    } finally {
      // Closes the staged file if the request ended before its body was read to the end.
      await body.return(undefined);
    }
  };
  if ('staged' in opts)
    return (url: string, _replica: 'primary' | 'secondary', signal?: AbortSignal) =>
      fromFile(url, opts.staged, signal);
  const { teed } = opts;
  const streamed = new Set<string>();
  return async (url: string, replica: 'primary' | 'secondary', signal?: AbortSignal) => {
    const branch = REPLICAS.indexOf(replica);
    if (!streamed.has(replica)) {
      streamed.add(replica);
      try {
        await client.putBlobStreamed(url, id, teed.size, teed.copies[branch]!, teed.sums, signal);
        return;
      } catch (err) {
        teed.detach(branch);
        // A body that failed is the upload's failure, not this target's: no fallback.
        await teed.staged.catch((bodyFailure: unknown) => {
          throw new AbortError(bodyFailure as Error);
        });
        throw err;
      }
    }
    await fromFile(url, await teed.staged, signal);
  };
}

export async function replicateUpload(opts: ReplicateOptions): Promise<Replicated> {
  const { id, workers, log } = opts;
  const size = 'staged' in opts ? opts.staged.size : opts.teed.size;
  const send = copySender(opts);
  const maxTargets = opts.maxTargetsPerCopy ?? 5;
  // Both copies are sent at once: the secondary is elected beside the primary
  // (another worker, another zone when there is one) instead of after it, which halves the time an
  // upload waits on worker fsyncs. Nothing is acknowledged until both are confirmed, as before.
  const current: Record<'primary' | 'secondary', PlacementCandidate | undefined> = {
    primary: undefined,
    secondary: undefined,
  };
  const failed = new Set<string>();
  /** Why the last election of each copy found no target, decided from the candidates it ranked. */
  const noTarget: Record<'primary' | 'secondary', NoTargetReason | null> = { primary: null, secondary: null };
  const other = (replica: 'primary' | 'secondary') =>
    current[replica === 'primary' ? 'secondary' : 'primary'];

  /** Elects a target for `replica` now (synchronously, so the two copies never pick one worker). */
  const elect = (replica: 'primary' | 'secondary'): PlacementCandidate | undefined => {
    const peer = other(replica);
    const candidates = workers.candidates();
    const req = {
      exclude: new Set([...failed, ...(peer ? [peer.nodeId] : [])]),
      avoidZones: new Set(peer ? [peer.zone] : []),
      size,
    };
    const target = rankTargets(candidates, req)[0];
    current[replica] = target;
    noTarget[replica] = target ? null : whyNoTarget(candidates, req);
    if (target) workers.reserve?.(target.nodeId, size);
    return target;
  };

  const placeCopy = async (replica: 'primary' | 'secondary') => {
    const failures: string[] = [];
    let refusedForRoom = 0;
    const reason = (): NoLiveWorkerReason =>
      failures.length === 0
        ? (noTarget[replica] ?? 'noWorker')
        : reasonAfterFailures(refusedForRoom, failures.length, noTarget[replica]);
    let attempt = 0;
    return pRetry(
      async () => {
        // The first target was elected before either transfer started; later ones after a failure.
        const target = attempt++ === 0 ? current[replica] : elect(replica);
        const url = target && workers.urlOf(target.nodeId);
        if (!target || !url) throw new AbortError(new NoLiveWorker(replica, failures, reason()));
        const sending = workers.sendingTo?.(target.nodeId);
        try {
          await send(url, replica, sending?.signal);
          // Debug: upload.committed names both replicas once, at info, for every upload.
          log.debug(
            { event: 'upload.copy_stored', objectId: id, nodeId: target.nodeId, replica },
            'copy stored',
          );
          return target;
        } catch (err) {
          if (err instanceof AbortError) throw err;
          if (!isTargetFailure(err)) throw new AbortError(err as Error);
          const callError = err as WorkerCallError;
          failed.add(target.nodeId);
          failures.push(`${target.nodeId} (${callError.status ?? callError.code})`);
          if (callError.status === 507) refusedForRoom += 1;
          log.warn(
            { event: 'upload.copy_failed', objectId: id, nodeId: target.nodeId, replica, err },
            'copy failed',
          );
          opts.onFallback?.(target.nodeId, err);
          throw err;
        } finally {
          sending?.end();
        }
      },
      // Fallback is to a different worker, so there is nothing to wait for between attempts.
      { retries: maxTargets - 1, minTimeout: 0, maxTimeout: 0, randomize: false },
    )
      .catch((err: unknown) => {
        throw isTargetFailure(err) ? new NoLiveWorker(replica, failures, reason()) : err;
      })
      .finally(() => {
        // A copy that gave up, or never had a target, must not hold the tee back.
        if ('teed' in opts) opts.teed.detach(REPLICAS.indexOf(replica));
      });
  };

  elect('primary');
  elect('secondary');
  const [primary, secondary] = await Promise.allSettled([placeCopy('primary'), placeCopy('secondary')]);
  if (primary.status === 'rejected') throw primary.reason;
  if (secondary.status === 'rejected') throw secondary.reason;
  return { replicas: [primary.value.nodeId, secondary.value.nodeId] };
}
