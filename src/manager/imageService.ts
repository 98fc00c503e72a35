// The manager's domain layer for images: what the public API calls, with no HTTP in sight.
// Upload follows docs/seed-flow.md: sniff -> primary and secondary (sent while the body arrives, and
// staged beside them for a replacement target) -> one Raft command -> drop the staged file -> answer.
// An upload is acknowledged only once both copies are fsynced on workers and the record is committed
// by a Raft majority.

import { randomUUID } from 'node:crypto';
import { pipeline, Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import { RaftError } from '../consensus/raftNode.ts';
import { ReadBuffers } from '../http/readBuffers.ts';
import { type MinimumRate, withMinimumRate } from '../http/requestBody.ts';
import type { Logger } from '../logging.ts';
import { type NodeView, OBJECT_ID_PATTERN, type ObjectView } from '../metadata/commands.ts';
import type { MetadataStateMachine, Page } from '../metadata/metadataStateMachine.ts';
import { type CommandProposer, proposeCommand } from '../metadata/proposeCommand.ts';
import { READ_LINK_TTL_MS } from '../protocol/readLink.ts';
import type { ManagerDisk } from './managerDisk.ts';
import { deleteCopy, type ObjectSlots, type Release } from './placement/execute.ts';
import { NoLiveWorker, type Replicated, replicateUpload } from './replicateUpload.ts';
import {
  HELD_WHOLE_MAX_BYTES,
  type HoldResult,
  type StagedUpload,
  StageFailed,
  type StagingArea,
  type TeedUpload,
} from './stagingArea.ts';
import type { UploadAdmission } from './uploadAdmission.ts';
import type { UploadMetrics } from './uploadMetrics.ts';
import {
  CHECK_BEFORE_SEND_BYTES,
  checkingStream,
  ReadCheckFailed,
  readWholeChecked,
} from './verifiedRead.ts';
import { WorkerCallError, type WorkerClient } from './workerClient.ts';
import type { WorkerLiveness } from './workerLiveness.ts';

export type ImageErrorCode =
  | 'InvalidId'
  | 'EmptyBody'
  | 'TooLarge'
  | 'NotAnImage'
  | 'BodyTooSlow'
  | 'LengthMismatch'
  | 'TooManyUploads'
  | 'StagingFull'
  | 'Conflict'
  | 'NotFound'
  | 'Unavailable'
  | 'Lost'
  | 'NoLiveWorker'
  | 'InsufficientStorage'
  | 'NotLeader'
  | 'NoLeader'
  | 'CommitFailed';

export class ImageError extends Error {
  constructor(
    readonly code: ImageErrorCode,
    message: string,
    /** Set on NotLeader: where the write must go instead. */
    readonly leaderUrl: string | null = null,
  ) {
    super(message);
    this.name = 'ImageError';
  }
}

/** The part of the Raft node driver the image service needs. */
export interface RaftAccess extends CommandProposer {
  isLeader(): boolean;
  leaderInfo(): { id: string; url: string | null } | null;
  readIndex(): Promise<void>;
  /** Every member's URL; workers heartbeat them all (WorkerRegistry.heartbeat). */
  memberUrls?(): string[];
}

export interface ImageServiceDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  staging: StagingArea;
  workers: WorkerClient;
  liveness: WorkerLiveness;
  log: Logger;
  maxImageBytes: number;
  /** One action per object id, shared with repair and rejoin: see placement/execute.ts. */
  slots: ObjectSlots;
  metrics?: UploadMetrics;
  /** Caps on uploads in progress and their staged bytes; none = unbounded (tools and tests). */
  admission?: UploadAdmission;
  /** The slowest upload body accepted; none = no minimum. */
  minUploadRate?: MinimumRate;
  /**
   * The manager's disk (managerDisk.ts): while it is full (its reserve not in place, or less than
   * the reserve free beside it) the leader takes no upload (507), so the room left stays the Raft
   * log's and the tables'. None: no check.
   */
  disk?: Pick<ManagerDisk, 'uploadRefusal'>;
}

export interface UploadOutcome {
  created: boolean;
  object: ObjectView;
}

export interface OpenOptions {
  method: 'GET' | 'HEAD';
  range?: string;
  object?: ObjectView;
  /**
   * The caller sends a small whole object from `bytes` (not `body`) and calls the download's
   * `release` once nothing reads them any more: they may be gathered into a reused buffer.
   */
  pooled?: boolean;
}

export interface Download {
  object: ObjectView;
  nodeId: string;
  /** The worker's answer: its status and headers. Its body is for HEAD and 416 only (to dump). */
  response: Dispatcher.ResponseData;
  /** What to send: a whole object's bytes are checked against the record (verifiedRead.ts). */
  body: Readable;
  /**
   * The same bytes in one buffer, when a small whole object was read and checked before sending:
   * an answer can be written from it directly (`body` is then left unread).
   */
  bytes?: Buffer;
  /** Set when `bytes` is a reused buffer's (OpenOptions.pooled): hands it back for the next read. */
  release?: () => void;
}

/** A teed body's refusal as the client's error; an unexpected failure as it is. */
function stageFailure(err: unknown): unknown {
  return err instanceof StageFailed ? new ImageError(err.error.code, err.error.message) : err;
}

/** Two reads of a record name the same object: same bytes, same creation (not deleted and made anew). */
function sameObject(a: ObjectView, b: ObjectView): boolean {
  return a.sha256 === b.sha256 && a.size === b.size && a.createdAt === b.createdAt;
}

function sameReplicas(a: ObjectView, b: ObjectView): boolean {
  return a.replicas.length === b.replicas.length && a.replicas.every((n) => b.replicas.includes(n));
}

/** Lets go of a download that will not be sent: its worker connection is freed. */
function discardDownload(download: Download): void {
  download.release?.();
  download.body.destroy();
  download.response.body.destroy();
}

/**
 * A read that proves its worker holds no good copy: no such blob (404), or bytes that fail the
 * record's size or sha256 (checked before anything was sent). A timeout, a refused connection or a
 * connection cut mid-read proves nothing.
 */
function copyGone(err: unknown): boolean {
  return (err instanceof WorkerCallError && err.code === 'NotFound') || err instanceof ReadCheckFailed;
}

/** The metrics label of a failure: its ImageError code, `Internal` for anything unexpected. */
function outcomeOf(err: unknown): string {
  return err instanceof ImageError ? err.code : 'Internal';
}

/** "Go to the leader" or "no leader known": not this manager's outcome to count (docs/metrics.md). */
function isLeaderAnswer(err: unknown): boolean {
  return err instanceof ImageError && (err.code === 'NotLeader' || err.code === 'NoLeader');
}

/** The id of named content: `c` and its sha256 (nameService.ts). */
export const CONTENT_ID_PATTERN = /^c[0-9a-f]{64}$/;

export function raftFailure(err: unknown): never {
  if (err instanceof RaftError) {
    if (err.code === 'NotLeader') {
      if (err.leader?.url)
        throw new ImageError('NotLeader', 'this manager is not the leader', err.leader.url);
      throw new ImageError('NoLeader', 'no leader is known right now; retry shortly');
    }
    throw new ImageError('CommitFailed', `the metadata change was not confirmed: ${err.message}`);
  }
  throw err;
}

export class ImageService {
  /** Uploads in progress per id on this leader: a second upload of the same id waits for the first. */
  private readonly inFlight = new Map<string, Promise<unknown>>();
  /** What pooled GETs of small whole objects gather into; eight kept, one per GET at concurrency 8. */
  private readonly readBuffers = new ReadBuffers(CHECK_BEFORE_SEND_BYTES, 8);

  constructor(private readonly deps: ImageServiceDeps) {}

  get maxImageBytes(): number {
    return this.deps.maxImageBytes;
  }

  /** Throws NotLeader/NoLeader unless this manager may accept writes; call before reading a body. */
  requireLeader(): void {
    const { raft } = this.deps;
    if (raft.isLeader()) return;
    const leader = raft.leaderInfo();
    if (leader?.url) throw new ImageError('NotLeader', 'this manager is not the leader', leader.url);
    throw new ImageError('NoLeader', 'no leader is known right now; retry shortly');
  }

  /**
   * Throws InsufficientStorage while the manager's disk is full (managerDisk.ts): the room left is
   * kept for the Raft log and tables (reads, deletes). An upload would put its record there, and on
   * a disk the manager shares with workers (the embedded cluster) its copies too. Call before
   * reading a body.
   */
  requireDiskRoom(): void {
    const refusal = this.deps.disk?.uploadRefusal();
    if (refusal) throw new ImageError('InsufficientStorage', refusal);
  }

  validateId(id: string): void {
    if (!OBJECT_ID_PATTERN.test(id)) {
      throw new ImageError('InvalidId', `image id must match ${OBJECT_ID_PATTERN.source}`);
    }
  }

  /**
   * Ids of the form c<sha256> belong to named content (nameService.ts): an image stored there
   * through the images API would be taken for, and later freed as, content a name owns.
   */
  private refuseContentId(id: string): void {
    if (CONTENT_ID_PATTERN.test(id)) {
      throw new ImageError('InvalidId', 'ids of the form c<sha256> are reserved for named content');
    }
  }

  newId(): string {
    return randomUUID();
  }

  /**
   * `openBody` is called only once the upload is accepted for processing (valid id, leader, declared
   * size within the limit), so a refused request's body is never touched. `declaredLength` (the
   * Content-Length, when there is one) refuses an oversized upload before a byte of it is read;
   * the staging limit still holds for bodies that lie or have no length. `client` (a token's or an
   * address's key) is whom the per-client caps count the upload against.
   */
  async upload(
    id: string,
    openBody: () => AsyncIterable<Uint8Array>,
    opts: { declaredLength?: number; client?: string; contentId?: boolean } = {},
  ): Promise<UploadOutcome> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      this.validateId(id);
      if (!opts.contentId) this.refuseContentId(id);
      this.requireLeader();
      this.requireDiskRoom();
      if (opts.declaredLength !== undefined && opts.declaredLength > this.deps.maxImageBytes) {
        throw new ImageError('TooLarge', `image exceeds the limit of ${this.deps.maxImageBytes} bytes`);
      }
      const release = await this.admit(opts.client ?? 'unknown', opts.declaredLength);
      const previous = this.inFlight.get(id);
      const rate = this.deps.minUploadRate;
      const body = rate ? withMinimumRate(openBody(), rate) : openBody();
      const run = (previous ?? Promise.resolve())
        .catch(() => {})
        .then(() => this.uploadExclusive(id, body, opts.declaredLength));
      this.inFlight.set(id, run);
      let outcome: UploadOutcome;
      try {
        outcome = await run;
      } finally {
        if (this.inFlight.get(id) === run) this.inFlight.delete(id);
        release();
      }
      this.deps.metrics?.upload(outcome.created ? 'created' : 'existing', seconds(), outcome.object.size);
      return outcome;
    } catch (err) {
      // A redirect to the leader is not an upload; the leader counts the one it serves. Nor is a
      // "no leader": the request is held and run again (awaitLiveLeader.ts), and a final 503 is
      // counted as imgvault_leader_waits_total.
      if (!isLeaderAnswer(err)) {
        this.deps.metrics?.upload(outcomeOf(err), seconds(), 0);
      }
      throw err;
    }
  }

  /**
   * A slot and the staged bytes the upload may take (its declared length, else the size limit), or
   * TooManyUploads / StagingFull naming the cap, after waiting for room (uploadAdmission.ts):
   * refused before a byte of the body is read.
   */
  private async admit(client: string, declaredLength: number | undefined): Promise<() => void> {
    const { admission } = this.deps;
    if (!admission) return () => {};
    const admitted = await admission.acquire(client, declaredLength ?? this.deps.maxImageBytes);
    if (admitted.ok) {
      // Leadership may have moved while the upload waited for room.
      if (!this.deps.raft.isLeader()) {
        admitted.release();
        this.requireLeader();
      }
      return admitted.release;
    }
    this.deps.log.warn(
      { event: 'upload.refused', cap: admitted.refusal.cap, client },
      admitted.refusal.message,
    );
    throw new ImageError(admitted.refusal.code, admitted.refusal.message);
  }

  /** An upload of `id` is running here: its copies may be on workers before its record commits. */
  isUploading(id: string): boolean {
    return this.inFlight.has(id);
  }

  /**
   * A body of known length up to HELD_WHOLE_MAX_BYTES is read whole into memory first (when the
   * budget has room): it would have gone out only once whole anyway. A larger one for an id this
   * leader has no record of is forwarded to the workers as it arrives (uploadTeed); otherwise (no
   * Content-Length, or an existing id whose bytes must be compared first) it is staged whole
   * before any worker sees it.
   */
  private async uploadExclusive(
    id: string,
    body: AsyncIterable<Uint8Array>,
    declaredLength: number | undefined,
  ): Promise<UploadOutcome> {
    const { staging, maxImageBytes } = this.deps;
    if (declaredLength !== undefined && declaredLength <= HELD_WHOLE_MAX_BYTES) {
      const started = performance.now();
      const held = await staging.holdWhole(body, maxImageBytes, declaredLength);
      if (held) return this.uploadStaged(id, held, started);
    }
    if (declaredLength === undefined || (await this.deps.metadata.getObject(id))) {
      return this.uploadStaged(id, body);
    }
    return this.uploadTeed(id, body, declaredLength);
  }

  /**
   * Copies sent from bytes staged whole: a body staged here, or one `holdWhole` read (its result
   * passed instead of the body).
   */
  private async uploadStaged(
    id: string,
    body: AsyncIterable<Uint8Array> | HoldResult,
    /** When a held body's read began (its `stage` phase). */
    heldSince?: number,
  ): Promise<UploadOutcome> {
    const { metadata, staging } = this.deps;
    const timer = this.phaseTimer(heldSince);
    const stagedResult =
      Symbol.asyncIterator in body ? await staging.stage(body, this.deps.maxImageBytes) : body;
    timer('stage');
    if (!stagedResult.ok) throw new ImageError(stagedResult.error.code, stagedResult.error.message);
    const staged = stagedResult.staged;
    const held: Release[] = [];
    // A body held in memory goes back to the pool only if no socket may still hold it: every
    // request that was sent it answered after reading all of it (no copy fell back, none failed).
    let sentCleanly = false;
    try {
      if (await metadata.getObject(id)) {
        // A new leader's table may still lack entries the previous one committed (a delete of
        // this id): only a read as of everything committed may answer without writing anything.
        await this.deps.raft.readIndex().catch(raftFailure);
        const existing = await metadata.getObject(id);
        if (existing) {
          sentCleanly = true;
          return this.sameBytesOrConflict(existing, staged.sha256);
        }
      }

      const nodes = await metadata.listNodes();
      let replicated: Replicated;
      held.push(await this.deps.slots.hold(id));
      try {
        timer('skip');
        ({ replicated, sentCleanly } = await this.replicate(nodes, { id, staged }));
      } catch (err) {
        throw this.noWorkerFailure(id, err);
      }
      timer('replicate');
      const outcome = await this.record(id, staged, replicated);
      timer('commit');
      return outcome;
    } finally {
      for (const release of held) release();
      await staging.release(staged, { reuse: sentCleanly });
    }
  }

  /**
   * The streamed tee: once the body's first bytes are an accepted image, its chunks go to both
   * chosen workers at once, hashed on the way and kept (in memory within the staging area's
   * budget, else in a staged file) only so that a target that fails can be replaced from it. The
   * record is proposed once both copies are fsynced and their workers named the leader's
   * checksums; a body that fails fails the upload, and every copy it started is aborted before its
   * worker keeps it.
   */
  private async uploadTeed(
    id: string,
    body: AsyncIterable<Uint8Array>,
    declaredLength: number,
  ): Promise<UploadOutcome> {
    const { metadata, staging } = this.deps;
    const started = performance.now();
    // A copy whose worker holds the body back half a rate window is failed and replaced from the
    // staged file: a slow worker must not hold the client (nor its upload slot) with it.
    const rate = this.deps.minUploadRate;
    const copyStallMs = rate && rate.windowMs / 2;
    const teedResult = await staging.tee(body, this.deps.maxImageBytes, declaredLength, 2, copyStallMs);
    if (!teedResult.ok) throw new ImageError(teedResult.error.code, teedResult.error.message);
    const { teed } = teedResult;
    let bodyIn = started;
    teed.staged.then(
      () => (bodyIn = performance.now()),
      () => {},
    );
    const held: Release[] = [];
    // Each copy stored at its first target: every request that was sent the body read all of it.
    let sentCleanly = false;
    try {
      const nodes = await metadata.listNodes();
      held.push(await this.deps.slots.hold(id));
      let replicated: Replicated;
      try {
        ({ replicated, sentCleanly } = await this.replicate(nodes, { id, teed }));
      } catch (err) {
        teed.abort(err);
        // A body that failed first is the reason, whatever the copies then did.
        const failure = await teed.staged.then(
          () => err,
          (reason: unknown) => reason,
        );
        throw failure instanceof StageFailed ? stageFailure(failure) : this.noWorkerFailure(id, failure);
      }
      const staged = await teed.staged.catch((err: unknown) => {
        throw stageFailure(err);
      });
      const replicatedAt = performance.now();
      this.deps.metrics?.phase('stage', (bodyIn - started) / 1000);
      this.deps.metrics?.phase('replicate', (replicatedAt - bodyIn) / 1000);
      const outcome = await this.record(id, staged, replicated);
      this.deps.metrics?.phase('commit', (performance.now() - replicatedAt) / 1000);
      return outcome;
    } catch (err) {
      teed.abort(err);
      throw err;
    } finally {
      for (const release of held) release();
      await teed.staged.then(
        (staged) => staging.release(staged, { reuse: sentCleanly }),
        () => {},
      );
    }
  }

  /**
   * replicateUpload to the workers of `nodes`; `sentCleanly`: each copy was stored at its first
   * target, so every request that was sent the body read all of it.
   */
  private async replicate(
    nodes: NodeView[],
    source: { id: string } & ({ staged: StagedUpload } | { teed: TeedUpload }),
  ): Promise<{ replicated: Replicated; sentCleanly: boolean }> {
    const context = this.replicateContext(nodes);
    let fellBack = false;
    const replicated = await replicateUpload({
      ...source,
      ...context,
      onFallback: () => {
        fellBack = true;
        context.onFallback();
      },
    });
    return { replicated, sentCleanly: !fellBack };
  }

  /** How replicateUpload reaches the workers of `nodes` (the node table read for this upload). */
  private replicateContext(nodes: NodeView[]) {
    const urls = new Map(nodes.map((n) => [n.nodeId, n.url]));
    return {
      client: this.deps.workers,
      log: this.deps.log,
      workers: {
        // Fresh at every election: the placements of uploads running beside this one count.
        candidates: () => this.deps.liveness.candidates(nodes),
        urlOf: (nodeId: string) => urls.get(nodeId),
        reserve: (nodeId: string, bytes: number) => this.deps.liveness.reservePlacement(nodeId, bytes),
        sendingTo: (nodeId: string) => this.deps.liveness.sendingTo(nodeId),
      },
      onFallback: () => this.deps.metrics?.fallback(),
    };
  }

  /** A copy that found no worker as the client's error; anything else as it is. */
  private noWorkerFailure(id: string, err: unknown): unknown {
    if (!(err instanceof NoLiveWorker)) return err;
    // The failures name workers' URLs: for the operator's log, not for the client.
    this.deps.log.warn({ event: 'upload.no_worker', objectId: id, failures: err.failures }, err.message);
    return new ImageError(err.full ? 'InsufficientStorage' : 'NoLiveWorker', err.summary);
  }

  /** Commits the record of an upload whose copies are confirmed. */
  private async record(id: string, staged: StagedUpload, replicated: Replicated): Promise<UploadOutcome> {
    const { metadata, log } = this.deps;
    const recorded = await proposeCommand(this.deps.raft, {
      type: 'recordObject',
      id,
      size: staged.size,
      sha256: staged.sha256,
      crc32c: staged.crc32c,
      contentType: staged.contentType,
      createdAt: Date.now(),
      replicas: replicated.replicas,
    }).catch(raftFailure);
    if (recorded.ok) {
      log.info(
        { event: 'upload.committed', objectId: id, replicas: recorded.object.replicas, size: staged.size },
        'image stored',
      );
      return { created: recorded.created, object: recorded.object };
    }
    if (recorded.code === 'ObjectExists') {
      const now = await metadata.getObject(id);
      if (now) return this.sameBytesOrConflict(now, staged.sha256);
    }
    throw new ImageError('CommitFailed', recorded.message);
  }

  /** Reports the time since the previous call under `phase` (`skip` only restarts the clock). */
  private phaseTimer(since = performance.now()): (phase: 'stage' | 'replicate' | 'commit' | 'skip') => void {
    let last = since;
    return (phase) => {
      const now = performance.now();
      if (phase !== 'skip') this.deps.metrics?.phase(phase, (now - last) / 1000);
      last = now;
    };
  }

  private sameBytesOrConflict(existing: ObjectView, sha256: string): UploadOutcome {
    if (existing.sha256 === sha256) return { created: false, object: existing };
    throw new ImageError('Conflict', `image ${existing.id} already exists with other content`);
  }

  /** Linearizable: every upload acknowledged before this call began is visible. */
  async getMeta(id: string): Promise<ObjectView> {
    this.validateId(id);
    await this.deps.raft.readIndex().catch(raftFailure);
    const object = await this.deps.metadata.getObject(id);
    if (!object) throw new ImageError('NotFound', `no image with id ${id}`);
    return object;
  }

  /**
   * Opens the bytes from a serving replica, primary first; a replica that fails before answering is
   * skipped for the next. Every replica on a down worker -> Unavailable (the bytes are not lost).
   * `object`: the record, when the caller has just read it with `getMeta`; it is not read again.
   */
  async open(id: string, opts: OpenOptions): Promise<Download> {
    const started = performance.now();
    const seconds = () => (performance.now() - started) / 1000;
    try {
      const download = await this.openReplica(id, opts);
      this.deps.metrics?.download('ok', seconds());
      const { statusCode, headers } = download.response;
      const length = Number(headers['content-length']);
      if (download.bytes) this.deps.metrics?.downloadSent(download.bytes.length);
      else if (opts.method === 'GET' && statusCode < 300 && Number.isSafeInteger(length)) {
        download.body.once('end', () => this.deps.metrics?.downloadSent(length));
      }
      return download;
    } catch (err) {
      this.deps.metrics?.download(outcomeOf(err), seconds());
      throw err;
    }
  }

  /**
   * Linearizable like `getMeta`, but the ReadIndex round runs beside the worker read instead of
   * before it: the bytes are read for this manager's own record of `id`, and handed out only if
   * the record read once ReadIndex confirmed the table is the same object (same sha256, size and
   * creation). Otherwise, or when that read failed (the local record may be stale), the object is
   * opened again from the confirmed record. The bytes sent are always checked against a record
   * that was current at some moment after the request arrived.
   */
  private async openReplica(id: string, { object: known, ...opts }: OpenOptions): Promise<Download> {
    if (known) return this.openRecorded(known, opts);
    this.validateId(id);
    // Started first: on a follower it is a round trip to the leader and one of the leader's own,
    // which this read's table look-up need not wait for.
    const confirmed = this.deps.raft.readIndex();
    confirmed.catch(() => {});
    const local = await this.deps.metadata.getObject(id);
    if (!local) {
      await confirmed.catch(raftFailure);
      const object = await this.deps.metadata.getObject(id);
      if (!object) throw new ImageError('NotFound', `no image with id ${id}`);
      return this.openRecorded(object, opts);
    }
    let early: Download | undefined;
    let earlyFailure: unknown;
    try {
      early = await this.openRecorded(local, opts);
    } catch (err) {
      earlyFailure = err;
    }
    try {
      await confirmed.catch(raftFailure);
    } catch (err) {
      if (early) discardDownload(early);
      throw err;
    }
    const current = await this.deps.metadata.getObject(id);
    if (current && sameObject(current, local)) {
      if (early) return early;
      // The replicas were tried for the current record already: not again. A lagging record's
      // copies may since have moved (repaired elsewhere): those are tried before a verdict.
      if (sameReplicas(current, local)) throw earlyFailure;
    }
    if (early) discardDownload(early);
    if (!current) throw new ImageError('NotFound', `no image with id ${id}`);
    return this.openRecorded(current, opts);
  }

  /**
   * The workers to read `object` from, in order: every manager hears the workers' heartbeats, so
   * any of them tries the workers it has heard from first and those it has not heard from lately
   * last: silence is a suspicion, not a verdict.
   */
  private async servingReplicas(object: ObjectView): Promise<NodeView[]> {
    const nodes = new Map((await this.deps.metadata.listNodes()).map((n) => [n.nodeId, n]));
    const listed = object.replicas
      .map((nodeId) => nodes.get(nodeId))
      .filter(
        (n): n is NodeView =>
          n !== undefined && (n.state === 'up' || n.state === 'suspect' || n.state === 'draining'),
      );
    return [
      ...listed.filter((n) => this.deps.liveness.isServing(n)),
      ...listed.filter((n) => !this.deps.liveness.isServing(n)),
    ];
  }

  /**
   * A direct-read link for `object` (a record read with `getMeta`, so linearizable): to its first
   * serving replica, which sends the client on to the next one's link when its copy cannot be
   * served (protocol/readLink.ts); the last one answers 500 Lost when none of them holds it.
   * Undefined when no replica's worker can be linked to, or none has been heard from lately: the
   * caller then reads through this manager, which answers for a copy it cannot reach (503) instead
   * of leaving the client at a worker that does not answer.
   */
  async readLink(object: ObjectView, now = Date.now()): Promise<string | undefined> {
    const replicas = await this.servingReplicas(object);
    if (!replicas[0] || !this.deps.liveness.isServing(replicas[0])) return undefined;
    const claims = {
      id: object.id,
      size: object.size,
      sha256: object.sha256,
      ...(object.crc32c === undefined ? {} : { crc32c: object.crc32c }),
      contentType: object.contentType,
      exp: now + READ_LINK_TTL_MS,
      // A chain over every copy the record names can find the image lost, as `openRecorded` does;
      // with a copy on a worker that is down it cannot (readLink.ts).
      ...(replicas.length === object.replicas.length ? { copies: replicas.length } : {}),
    };
    let link: string | undefined;
    for (const node of replicas.reverse()) {
      const next = link;
      link = (await this.deps.workers.readLink(node.url, { ...claims, ...(next ? { next } : {}) })) ?? next;
    }
    return link;
  }

  /** Opens the bytes of `object` (a record already read) from its replicas, primary first. */
  private async openRecorded(object: ObjectView, opts: Omit<OpenOptions, 'object'>): Promise<Download> {
    const id = object.id;
    const serving = await this.servingReplicas(object);
    const failures: string[] = [];
    /** Replicas whose worker answered it has no such blob, or sent bytes that fail the record's check. */
    let gone = 0;
    for (const node of serving) {
      let otherObject = false;
      try {
        const response = await this.deps.workers.getBlob(node.url, id, opts);
        const etag = response.headers.etag;
        if (etag !== `"${object.sha256}"`) {
          // Other bytes under this id than the record's (or no word of which): never served. Not
          // proof the copy is gone either: the id may have been stored anew while this read ran.
          otherObject = true;
          await response.body.dump();
          throw new ReadCheckFailed(
            `worker answered etag ${String(etag)}, the record says "${object.sha256}"`,
          );
        }
        const checked = await this.checkedBody(object, node, response, opts);
        return { object, nodeId: node.nodeId, response, ...checked };
      } catch (err) {
        if (!otherObject && copyGone(err)) gone += 1;
        failures.push(`${node.nodeId} (${err instanceof WorkerCallError ? err.code : 'bad answer'})`);
        this.deps.log.warn(
          { event: 'download.replica_failed', objectId: id, nodeId: node.nodeId, err },
          'replica failed',
        );
      }
    }
    if (gone > 0 && gone === object.replicas.length) {
      // Every worker the record names answered, and none holds the bytes: no worker that may hold
      // a copy is down or silent. Not for good, though: a worker rejoining with a copy (re-adopted)
      // makes the image readable again.
      throw new ImageError(
        'Lost',
        `every copy of ${id} is lost: ${failures.join('; ')} (no worker that should hold it has it intact)`,
      );
    }
    throw new ImageError(
      'Unavailable',
      failures.length === 0
        ? `every replica of ${id} is on a worker that is down; it returns with them`
        : `no replica of ${id} could be read: ${failures.join('; ')}`,
    );
  }

  /**
   * The bytes of a whole-object GET, checked against the record: read whole and checked before
   * anything is sent when small (a failure here moves on to the next replica), else checked as they
   * stream (a failure cuts the answer). Range and HEAD answers pass as they are: a part of an object
   * has no checksum of its own in the record.
   */
  private async checkedBody(
    object: ObjectView,
    node: NodeView,
    response: Dispatcher.ResponseData,
    { method, pooled }: Omit<OpenOptions, 'object'>,
  ): Promise<{ body: Readable; bytes?: Buffer; release?: () => void }> {
    if (method === 'HEAD' || response.statusCode !== 200) return { body: response.body };
    const report = (why: string) => this.reportBadCopy(object.id, node, why);
    if (response.headers['content-length'] !== String(object.size)) {
      await response.body.dump();
      report(`the worker announced ${String(response.headers['content-length'])} bytes`);
      throw new ReadCheckFailed(`worker announced ${String(response.headers['content-length'])} bytes`);
    }
    if (object.size <= CHECK_BEFORE_SEND_BYTES) {
      const lease = pooled ? this.readBuffers.lease() : undefined;
      try {
        const bytes = await readWholeChecked(response.body, object, lease?.buffer);
        return { body: Readable.from([bytes]), bytes, ...(lease ? { release: lease.release } : {}) };
      } catch (err) {
        // Nothing was sent from it: the gathering has stopped and the hash was awaited.
        lease?.release();
        response.body.destroy();
        if (err instanceof ReadCheckFailed) report(err.message);
        throw err;
      }
    }
    const checking = checkingStream(object, report);
    pipeline(response.body, checking, () => {});
    return { body: checking };
  }

  /**
   * A copy whose bytes failed their check: its worker reads it back from disk (verify), removes it
   * if rotten and reports it lost, and the leader's repair makes a new copy from the good replica.
   */
  private reportBadCopy(id: string, node: NodeView, why: string): void {
    const { log } = this.deps;
    log.warn(
      { event: 'download.bad_copy', objectId: id, nodeId: node.nodeId, why },
      'a copy failed its check',
    );
    this.deps.workers.verifyBlob(node.url, id).then(
      (verdict) =>
        log.warn(
          { event: 'download.bad_copy_verified', objectId: id, nodeId: node.nodeId, verdict },
          'copy checked by its worker',
        ),
      (err: unknown) =>
        log.warn(
          { event: 'download.bad_copy_unverified', objectId: id, nodeId: node.nodeId, err },
          'copy could not be checked',
        ),
    );
  }

  /** Removes the record (committed), then the copies; copies on unreachable workers wait for reconcile. */
  async remove(id: string): Promise<void> {
    try {
      await this.removeCommitted(id);
      this.deps.metrics?.delete('deleted');
    } catch (err) {
      if (!isLeaderAnswer(err)) this.deps.metrics?.delete(outcomeOf(err));
      throw err;
    }
  }

  private async removeCommitted(id: string): Promise<void> {
    this.validateId(id);
    this.requireLeader();
    const result = await proposeCommand(this.deps.raft, { type: 'deleteObject', id }).catch(raftFailure);
    if (!result.ok) {
      if (result.code === 'ObjectReferenced') throw new ImageError('Conflict', result.message);
      throw new ImageError('NotFound', `no image with id ${id}`);
    }
    const nodes = new Map((await this.deps.metadata.listNodes()).map((n) => [n.nodeId, n]));
    // Waits for an upload of the id running now: it may be writing this very copy again.
    const release = await this.deps.slots.hold(id);
    await Promise.all(
      result.object.replicas.map(async (nodeId) => {
        const node = nodes.get(nodeId);
        if (!node) return;
        await deleteCopy(this.deps, node, id).catch((err: unknown) => {
          this.deps.log.warn(
            { event: 'delete.copy_left', objectId: id, nodeId, err },
            'copy left for reconciliation to remove',
          );
        });
      }),
    ).finally(release);
    this.deps.log.info({ event: 'delete.committed', objectId: id }, 'image deleted');
  }

  async list(opts: { limit?: number; after?: string }): Promise<Page<ObjectView>> {
    await this.deps.raft.readIndex().catch(raftFailure);
    return this.deps.metadata.listObjects(opts);
  }
}
