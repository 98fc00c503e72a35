import type { Readable } from 'node:stream';
import { zValidator } from '@hono/zod-validator';
import { type Context, Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import { routePath } from 'hono/route';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Registry } from 'prom-client';
import { request as undiciRequest } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../http/clusterAuth.ts';
import {
  COPY_CREDENTIAL_HEADER,
  copyCredential,
  metricsCredential,
  secretsEqual,
} from '../http/credentials.ts';
import { outgoingOf, ReadBuffers, releaseWhenWritten } from '../http/readBuffers.ts';
import { requestBody } from '../http/requestBody.ts';
import { webStreamOf } from '../http/webStream.ts';
import { createLogger, type Logger } from '../logging.ts';
import { CRC32C_HEADER, CRC32C_HEX_PATTERN } from '../protocol/checksums.ts';
import {
  CHECKSUM_TRAILER_BYTES,
  CHECKSUMS_HEADER,
  splitChecksumTrailer,
  TRAILING_CHECKSUMS,
} from '../protocol/checksumTrailer.ts';
import { READ_LINK_ROUTE } from '../protocol/readLink.ts';
import { NDJSON_CONTENT_TYPE, SHA256_HEADER } from '../protocol/workerHeaders.ts';
import {
  BLOB_BATCH_PATH,
  BLOB_ROUTE,
  COPY_BATCH_PATH,
  INVENTORY_PATH,
  STATS_PATH,
  VERIFY_ROUTE,
} from '../protocol/workerPaths.ts';
import { copyBatchBodySchema, MAX_COPY_BATCH } from '../protocol/workerSchemas.ts';
import { encodeFrameHeader, FRAMES_CONTENT_TYPE, FrameError, FrameReader } from './blobFrames.ts';
import { isValidBlobId, SHA256_HEX_PATTERN } from './blobId.ts';
import type { BlobStore, ReceivedBlob, WholeBlob, WriteOutcome } from './blobStore.ts';
import { TRAILER_BYTES } from './blobTrailer.ts';
import {
  failure,
  STATUS_BY_CODE,
  StorageError,
  type StorageErrorCode,
  type StoreResult,
  success,
} from './errors.ts';
import { serveReadLink } from './readLinkRoute.ts';
import { createWorkerMetrics, type WorkerMetrics } from './workerMetrics.ts';

export interface WorkerAppOptions {
  store: BlobStore;
  /** The single cluster secret: opens every route, and goes to copy targets. Unused with accessCredential. */
  secret: string;
  /**
   * Per-role mode: the credential managers present (opens every route); its copy credential opens
   * the blob writes only (what a holder presents when a manager asks it to copy here).
   */
  accessCredential?: string | undefined;
  /** Bodies above this many bytes get 413, refused from content-length or as soon as counting crosses it. */
  maxBlobBytes: number;
  logger?: Logger;
  /** copy-batch: how long the target may take to answer, and to accept each chunk (default 60 s). */
  copyTimeoutMs?: number;
  /** Process metrics in /metrics (default false: one process may host several apps in tests). */
  collectDefaultMetrics?: boolean;
}

export interface WorkerApp {
  app: Hono;
  registry: Registry;
  metrics: WorkerMetrics;
}

/**
 * Whole-blob GETs of blobs up to this size are read into one buffer and checked before the answer
 * starts; larger ones stream, checked as they go (the last chunk held back).
 */
const WHOLE_READ_BYTES = 1024 * 1024;

/**
 * The buffers whole reads are leased from, one set per process: up to eight kept for the next GETs
 * (8 MiB at most, what a burst leaves behind), sized for the largest whole read with its trailer.
 */
const wholeReads = new ReadBuffers(WHOLE_READ_BYTES + TRAILER_BYTES + 1, 8);

/** The pool for a GET whose node response is known, so its buffer can come back once written. */
function wholeReadsFor(c: Context): ReadBuffers | undefined {
  return outgoingOf(c) ? wholeReads : undefined;
}

/**
 * Blobs of one batch body committed together. Bounds the temp files a batch holds open; the folder
 * fsyncs and the index batch it shares are then at most 1/32 of a blob's cost each.
 */
const BATCH_COMMIT_GROUP = 32;

interface CopyDone {
  id: string;
  target: string;
  targetStatus: number;
  size: number;
  sha256: string;
}

/** One blob of a batch PUT answer, in body order. */
type BatchPutResult =
  /** `status`: what a PUT of this blob would have answered (201 created, 200 already stored). */
  | { id: string; ok: true; status: 201 | 200; size: number; sha256: string }
  | { id: string; ok: false; error: { code: StorageErrorCode; message: string } & Record<string, unknown> };

/** One blob of a copy-batch answer, in the order of the request. */
export type CopyBatchResult =
  | ({ ok: true } & CopyDone)
  | { id: string; ok: false; error: { code: StorageErrorCode; message: string } & Record<string, unknown> };

/** The routes a copy credential opens: a blob's PUT and the batch PUT, nothing that reads or deletes. */
function isBlobWrite(method: string, path: string): boolean {
  return (
    (method === 'PUT' && /^\/blobs\/[^/]+$/.test(path)) || (method === 'POST' && path === BLOB_BATCH_PATH)
  );
}

/**
 * The worker's HTTP surface. Handlers parse, call one BlobStore method and map its result; every
 * failure leaves as `{ error: { code, message } }` with the one status of its code. Only /healthz and
 * GET /direct/:id, which a manager's signed link opens (readLinkRoute.ts), are open; everything else
 * needs the access credential (or the single cluster secret), but for the blob writes, which a copy
 * credential opens too, and GET /metrics, which a metrics credential opens.
 */
export function createWorkerApp(options: WorkerAppOptions): WorkerApp {
  const { store, secret, maxBlobBytes } = options;
  if (!(Number.isSafeInteger(maxBlobBytes) && maxBlobBytes > 0)) {
    throw new Error(`maxBlobBytes must be a positive integer, got ${maxBlobBytes}`);
  }
  const log = options.logger ?? createLogger('worker-app');
  const copyTimeoutMs = options.copyTimeoutMs ?? 60_000;
  const metrics = createWorkerMetrics({
    readCounters: () => store.counters(),
    readStats: () => store.stats(),
    collectDefault: options.collectDefaultMetrics ?? false,
  });
  store.onFsync((target, seconds) => metrics.fsyncSeconds.observe({ target }, seconds));
  // Every removal of a bad copy counts, not only the scrubber's: a read often finds rot first.
  store.onLost(() => metrics.scrubLost.inc());

  const fail = (c: Context, error: StorageError, extraHeaders: Record<string, string> = {}): Response => {
    metrics.errors.inc({ kind: error.code });
    return c.json(error.toJSON(), error.status as ContentfulStatusCode, extraHeaders);
  };
  const failWith = (c: Context, code: StorageErrorCode, message: string, details?: Record<string, unknown>) =>
    fail(c, new StorageError(code, message, details));

  const app = new Hono();

  app.use('*', async (c, next) => {
    const started = process.hrtime.bigint();
    await next();
    // The matched handler's pattern, never the raw path: ids must not become label values.
    const matched = routePath(c, -1);
    const route = matched === '*' ? 'unmatched' : matched;
    const method = c.req.method;
    metrics.requests.inc({ method, route, status: String(c.res.status) });
    metrics.requestSeconds.observe({ method, route }, Number(process.hrtime.bigint() - started) / 1e9);
  });

  app.get('/healthz', (c) => c.json({ status: 'ok' }));

  const full = options.accessCredential ?? secret;
  if (full.length === 0) throw new Error('the cluster secret or access credential must not be empty');
  // Opened by a manager's signed link instead of the credential: the link is the authority.
  app.get(READ_LINK_ROUTE, (c) =>
    serveReadLink(c, {
      store,
      credential: full,
      metrics,
      log,
      wholeReadBytes: WHOLE_READ_BYTES,
      wholeReads: wholeReadsFor(c),
    }),
  );

  const copyOnly = options.accessCredential ? copyCredential(options.accessCredential) : undefined;
  const metricsOnly = options.accessCredential ? metricsCredential(options.accessCredential) : undefined;
  app.use('*', async (c, next) => {
    const presented = c.req.header(CLUSTER_SECRET_HEADER);
    if (secretsEqual(full, presented)) return next();
    if (
      copyOnly !== undefined &&
      isBlobWrite(c.req.method, c.req.path) &&
      secretsEqual(copyOnly, presented)
    ) {
      return next();
    }
    if (
      metricsOnly !== undefined &&
      c.req.method === 'GET' &&
      c.req.path === '/metrics' &&
      secretsEqual(metricsOnly, presented)
    ) {
      return next();
    }
    metrics.errors.inc({ kind: 'Unauthorized' });
    return c.json(
      { error: { code: 'Unauthorized', message: `missing or wrong ${CLUSTER_SECRET_HEADER} header` } },
      401,
    );
  });

  /**
   * What this worker presents to a copy target: the copy credential the manager sent for it, else
   * (single-secret mode) the secret. Never its own access credential, which would open it to the target.
   */
  const targetAuth = (c: Context): Record<string, string> => {
    const given = c.req.header(COPY_CREDENTIAL_HEADER);
    if (given) return { [CLUSTER_SECRET_HEADER]: given };
    return options.accessCredential ? {} : { [CLUSTER_SECRET_HEADER]: secret };
  };

  app.get('/metrics', async (c) => {
    return c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType });
  });

  app.get(STATS_PATH, async (c) => c.json(await store.stats()));

  app.get(INVENTORY_PATH, (c) => {
    const after = c.req.query('after');
    if (after !== undefined && !isValidBlobId(after)) {
      return failWith(c, 'InvalidBlobId', '`after` must be a valid blob id');
    }
    return new Response(inventoryStream(store, after, log), {
      status: 200,
      headers: { 'content-type': NDJSON_CONTENT_TYPE },
    });
  });

  app.put(BLOB_ROUTE, async (c) => {
    const id = c.req.param('id');
    if (!isValidBlobId(id)) return failWith(c, 'InvalidBlobId', 'blob id does not match the id pattern');
    const trailing = c.req.header(CHECKSUMS_HEADER) === TRAILING_CHECKSUMS;
    const sha256 = trailing ? '' : c.req.header(SHA256_HEADER)?.toLowerCase();
    if (sha256 === undefined || (!trailing && !SHA256_HEX_PATTERN.test(sha256))) {
      return failWith(c, 'InvalidRequest', `the ${SHA256_HEADER} header must be 64 hexadecimal characters`);
    }
    const crc32c = c.req.header(CRC32C_HEADER)?.toLowerCase();
    if (crc32c !== undefined && !CRC32C_HEX_PATTERN.test(crc32c)) {
      return failWith(c, 'InvalidRequest', `the ${CRC32C_HEADER} header must be 8 hexadecimal characters`);
    }
    const lengthHeader = c.req.header('content-length');
    let declaredLength: number | undefined;
    if (trailing && lengthHeader === undefined) {
      return failWith(c, 'InvalidRequest', 'a body with a checksum trailer needs a content-length');
    }
    if (lengthHeader !== undefined) {
      declaredLength = Number(lengthHeader) - (trailing ? CHECKSUM_TRAILER_BYTES : 0);
      if (!/^\d+$/.test(lengthHeader) || !Number.isSafeInteger(declaredLength) || declaredLength < 0) {
        return failWith(
          c,
          'InvalidRequest',
          trailing
            ? `content-length must count the blob and its ${CHECKSUM_TRAILER_BYTES}-byte checksum trailer`
            : 'content-length must be a non-negative integer',
        );
      }
      if (declaredLength > maxBlobBytes) {
        // Not a byte read; close the connection rather than drain a body we refused.
        return fail(
          c,
          new StorageError('PayloadTooLarge', `blob bodies are limited to ${maxBlobBytes} bytes`),
          {
            connection: 'close',
          },
        );
      }
    }
    const body = requestBody(c);
    const split = trailing ? splitChecksumTrailer(body.chunks, declaredLength ?? 0) : undefined;
    const result = await store.writeAtomically(id, split?.bytes ?? body.chunks, sha256, maxBlobBytes, {
      declaredLength,
      onBytes: (n) => metrics.bytesIn.inc(n),
      ...(crc32c === undefined ? {} : { expectedCrc32c: crc32c }),
      ...(split === undefined ? {} : { sumsAfterBody: split.sums }),
    });
    if (!result.ok) {
      body.abandon();
      const { code } = result.error;
      // A 507 may come before a byte of the body is read (a quota or a missing disk reserve refuses
      // on the declared length) or part-way (ENOSPC): the connection stays open, and the server
      // reads and drops the rest after the answer (@hono/node-server: up to 64 MiB or 500 ms, then
      // it closes). Closed at once under a sender still writing, the reset raced the answer, and
      // a leader met EPIPE instead of the 507 about half the time (tests/manager/earlyRefusal).
      // A body past the size limit may never end, and a conflict is found once the body is read:
      // those close.
      const closing = code === 'PayloadTooLarge' || code === 'BlobConflict';
      if (code === 'InsufficientStorage')
        log.warn({ event: 'storage.insufficient', objectId: id }, result.error.message);
      return fail(c, result.error, closing ? { connection: 'close' } : {});
    }
    const { status, size } = result.value;
    if (status === 'created')
      log.debug({ event: 'storage.blob_written', objectId: id, size }, 'blob written');
    const stored = { id, size, sha256: result.value.sha256, crc32c: result.value.crc32c };
    return c.json(stored, status === 'created' ? 201 : 200);
  });

  // The receiving end of copy-batch: many blobs in one body (see blobFrames.ts), each stored with
  // the guarantees of a PUT. They are committed in groups (BATCH_COMMIT_GROUP): each blob is
  // received and its fsync started while the next arrives, and a group shares its folder fsyncs and
  // one index batch. One result per blob, in body order; the blobs received whole before
  // a body broke off are still committed and reported.
  app.post(BLOB_BATCH_PATH, async (c) => {
    const body = requestBody(c);
    const reader = new FrameReader(body.chunks);
    // A slot stays empty only while its blob waits in the group.
    const results: (BatchPutResult | undefined)[] = [];
    const group: { blob: ReceivedBlob; slot: number }[] = [];
    const record = (slot: number, id: string, stored: StoreResult<WriteOutcome>) => {
      if (stored.ok) {
        const { status, size, sha256 } = stored.value;
        results[slot] = { id, ok: true, status: status === 'created' ? 201 : 200, size, sha256 };
      } else {
        metrics.errors.inc({ kind: stored.error.code });
        results[slot] = { id, ok: false, ...stored.error.toJSON() };
      }
    };
    const commitGroup = async () => {
      const taken = group.splice(0);
      if (taken.length === 0) return;
      const outcomes = await store.commitReceived(taken.map((g) => g.blob));
      for (const [k, { blob, slot }] of taken.entries()) record(slot, blob.id, outcomes[k]!);
    };
    const refuse = async (message: string) => {
      body.abandon();
      await commitGroup();
      return failWith(c, 'InvalidRequest', message, { results });
    };
    try {
      for (let header = await reader.header(); header !== null; header = await reader.header()) {
        if (results.length >= MAX_COPY_BATCH)
          return await refuse(`a batch carries at most ${MAX_COPY_BATCH} blobs`);
        const { id, size, sha256, crc32c } = header;
        if (group.length >= BATCH_COMMIT_GROUP || group.some((g) => g.blob.id === id)) await commitGroup();
        const blob = reader.body(size);
        const receipt = isValidBlobId(id)
          ? await store.receive(id, blob, sha256, maxBlobBytes, {
              declaredLength: size,
              onBytes: (n) => metrics.bytesIn.inc(n),
              ...(crc32c === undefined ? {} : { expectedCrc32c: crc32c }),
            })
          : failure<never>('InvalidBlobId', 'blob id does not match the id pattern');
        // A blob refused early leaves bytes unread; a body cut short throws here. (A received or
        // stored blob was read whole, so there is nothing left to skip and nothing to throw.)
        await blob.skipRest();
        const slot = results.length;
        results.push(undefined);
        if (!receipt.ok) record(slot, id, receipt);
        else if (receipt.value.kind === 'stored') record(slot, id, success(receipt.value.outcome));
        else group.push({ blob: receipt.value.blob, slot });
      }
      await commitGroup();
    } catch (err) {
      if (!(err instanceof FrameError)) {
        await store.discardReceived(group.map((g) => g.blob));
        throw err;
      }
      if (err.aborted) {
        await commitGroup();
        return fail(c, new StorageError('BodyAborted', err.message));
      }
      return await refuse(err.message);
    }
    return c.json({ results }, 200);
  });

  app.get(BLOB_ROUTE, async (c) => {
    const id = c.req.param('id');
    if (!isValidBlobId(id)) return failWith(c, 'InvalidBlobId', 'blob id does not match the id pattern');
    if (c.req.method === 'GET' && c.req.header('range') === undefined) {
      // The common read, a whole small blob: its index entry is read once, by readWhole.
      const whole = await store.readWhole(id, WHOLE_READ_BYTES, wholeReadsFor(c));
      if (!whole.ok) return fail(c, whole.error);
      if (whole.value !== 'tooLarge') return wholeBlobAnswer(c, whole.value);
    }
    const stat = await store.stat(id);
    if (!stat.ok) return fail(c, stat.error);
    const { size, sha256 } = stat.value;
    const headers: Record<string, string> = {
      'accept-ranges': 'bytes',
      etag: `"${sha256}"`,
      'content-type': 'application/octet-stream',
    };
    const range = resolveRange(c.req.header('range'), size);
    if (range.kind === 'unsatisfiable') {
      return fail(
        c,
        new StorageError('RangeNotSatisfiable', `no byte of the requested range is in 0-${size - 1}`),
        {
          ...headers,
          'content-range': `bytes */${size}`,
        },
      );
    }
    const status = range.kind === 'partial' ? 206 : 200;
    const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size - 1];
    if (range.kind === 'partial') headers['content-range'] = `bytes ${start}-${end}/${size}`;
    headers['content-length'] = String(end - start + 1);
    if (c.req.method === 'HEAD') return new Response(null, { status, headers });

    if (range.kind === 'full') {
      const whole = await store.readWhole(id, WHOLE_READ_BYTES, wholeReadsFor(c));
      if (!whole.ok) return fail(c, whole.error);
      // What was read: the id may have been deleted and written anew since the stat above.
      if (whole.value !== 'tooLarge') return wholeBlobAnswer(c, whole.value);
    }
    const read = await store.openForRead(id, range.kind === 'partial' ? { start, end } : undefined);
    if (!read.ok) return fail(c, read.error);
    const stream = read.value.stream;
    stream.once('close', () => metrics.bytesOut.inc(bytesReadOf(stream)));
    return new Response(webStreamOf(stream), { status, headers });
  });

  const wholeBlobAnswer = (c: Context, { record, bytes, release }: WholeBlob): Response => {
    metrics.bytesOut.inc(record.size);
    releaseWhenWritten(c, release);
    // A buffer body is written to the socket as it is (@hono/node-server), not through a stream.
    return new Response(bytes, {
      status: 200,
      headers: {
        'accept-ranges': 'bytes',
        etag: `"${record.sha256}"`,
        'content-type': 'application/octet-stream',
        'content-length': String(record.size),
      },
    });
  };

  app.delete(BLOB_ROUTE, async (c) => {
    const id = c.req.param('id');
    if (!isValidBlobId(id)) return failWith(c, 'InvalidBlobId', 'blob id does not match the id pattern');
    const result = await store.delete(id);
    if (!result.ok) return fail(c, result.error);
    log.debug({ event: 'storage.blob_deleted', objectId: id }, 'blob deleted');
    return c.body(null, 204);
  });

  // Reads this worker's copy back and hashes it here, so a leader proving a copy (before it gives up
  // another one) needs an answer, not the bytes. `intact`: the bytes hash to the index's sha256,
  // which the answer names; `missing`: no such blob; `rotten`: they do not, and the blob is removed
  // and reported lost, as a failed read-back of the scrubber is; `changed`: deleted or rewritten
  // while it was read, which proves nothing.
  app.post(VERIFY_ROUTE, async (c) => {
    const id = c.req.param('id');
    if (!isValidBlobId(id)) return failWith(c, 'InvalidBlobId', 'blob id does not match the id pattern');
    const stat = await store.stat(id);
    if (!stat.ok) {
      if (stat.error.code === 'BlobNotFound') return c.json({ id, state: 'missing' });
      return fail(c, stat.error);
    }
    const { size, sha256 } = stat.value;
    const verdict = await store.scrub({ id, size, sha256 });
    if (verdict === 'intact') return c.json({ id, state: 'intact', size, sha256 });
    return c.json({ id, state: verdict === 'lost' ? 'rotten' : 'changed' });
  });

  // Many copies to one target in one request: repair sends a batch per (holder, target) pair, so
  // the leader makes one call, not one per object. Each blob succeeds or fails on its own.
  app.post(
    COPY_BATCH_PATH,
    zValidator('json', copyBatchBodySchema, (result, c) => {
      if (!result.success) {
        return failWith(
          c,
          'InvalidRequest',
          `the body must be JSON { "target": "<worker base URL>", "blobs": [{ "id", "sha256"? }] } with 1 to ${MAX_COPY_BATCH} distinct blobs`,
        );
      }
    }),
    async (c) => {
      const body = c.req.valid('json');
      const target = parseTargetUrl(body.target);
      if (target === undefined) {
        return failWith(c, 'InvalidRequest', 'target must be an absolute http(s) URL without credentials');
      }
      const targetName = targetNameOf(target);
      const auth = targetAuth(c);
      const { blobs } = body;
      const results: CopyBatchResult[] = new Array(blobs.length);
      const refuse = (i: number, error: StorageError) => {
        metrics.errors.inc({ kind: error.code });
        results[i] = { id: blobs[i]!.id, ok: false, ...error.toJSON() };
      };
      /** The blobs put in the body, in body order, with the record each was sent under. */
      const sent: { index: number; size: number; sha256: string }[] = [];
      // Each blob is opened only when the body reaches it: one descriptor and one read-ahead at a time.
      // Sent as read, unchecked: the target hashes every blob against its header, and a mismatch it
      // reports is checked here afterwards (scrub), so a rotten blob fails alone, not the batch.
      async function* frames(): AsyncGenerator<Buffer> {
        for (const [i, { id, sha256 }] of blobs.entries()) {
          const read = isValidBlobId(id)
            ? await store.openForCopy(id)
            : failure<never>('InvalidBlobId', 'blob id does not match the id pattern');
          if (!read.ok) {
            refuse(i, read.error);
            continue;
          }
          const { record, chunks, release } = read.value;
          try {
            if (sha256 !== undefined && record.sha256 !== sha256) {
              refuse(
                i,
                new StorageError('BlobConflict', `this worker holds other bytes under ${id}`, {
                  sha256: record.sha256,
                }),
              );
              continue;
            }
            sent.push({ index: i, size: record.size, sha256: record.sha256 });
            yield encodeFrameHeader({ id, ...record });
            for await (const chunk of chunks) {
              metrics.bytesOut.inc(chunk.length);
              yield chunk;
            }
          } finally {
            await release();
          }
        }
      }
      /** Every blob without a result yet (sent, or never reached by the body) fails with `message`. */
      const failRest = (message: string, details: Record<string, unknown>) => {
        for (const [index] of blobs.entries()) {
          if (results[index] === undefined) {
            refuse(index, new StorageError('CopyTargetFailed', message, { target: targetName, ...details }));
          }
        }
      };
      const frameBody = frames();
      try {
        const response = await undiciRequest(new URL(`.${BLOB_BATCH_PATH}`, target), {
          method: 'POST',
          // undici takes async iterables as bodies (docs/api/Dispatcher.md); its types lag behind.
          body: frameBody as unknown as Readable,
          headers: { ...auth, 'content-type': FRAMES_CONTENT_TYPE },
          headersTimeout: copyTimeoutMs,
          bodyTimeout: copyTimeoutMs,
        });
        const answer = await readSmallBody(response.body, 4 * 1024 * 1024);
        const stored = response.statusCode === 200 ? batchResultsOf(answer) : null;
        if (stored === null) {
          log.warn(
            { event: 'storage.copy_refused', target: targetName, targetStatus: response.statusCode },
            'copy target refused the batch',
          );
          failRest(`target ${targetName} answered ${response.statusCode}`, {
            targetStatus: response.statusCode,
            targetError: errorCodeOf(answer),
          });
        } else {
          for (const [k, { index, size, sha256 }] of sent.entries()) {
            const id = blobs[index]!.id;
            const r = stored[k];
            if (r?.id !== id) continue; // failed below, with the rest
            if (r.ok === true && (r.status === 200 || r.status === 201)) {
              results[index] = { ok: true, id, target: targetName, targetStatus: r.status, size, sha256 };
            } else {
              const code = typeof r.error?.code === 'string' ? r.error.code : null;
              const status =
                code !== null && code in STATUS_BY_CODE ? STATUS_BY_CODE[code as StorageErrorCode] : null;
              if (code === 'ChecksumMismatch') {
                // What this worker sent did not hash to its own index: read it back; if it is rotten
                // it is removed and reported lost, as a failed read-back of the scrubber is.
                await store.scrub({ id, size, sha256 }).catch(() => {});
              }
              refuse(
                index,
                new StorageError(
                  'CopyTargetFailed',
                  `target ${targetName} refused ${id}: ${r.error?.message ?? '?'}`,
                  {
                    target: targetName,
                    targetStatus: status,
                    targetError: code,
                  },
                ),
              );
            }
          }
          failRest(`target ${targetName} gave no result`, { targetStatus: response.statusCode });
        }
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        log.warn({ event: 'storage.copy_failed', target: targetName, err: message }, 'batch copy failed');
        failRest(`copy to ${targetName} failed: ${message}`, { targetStatus: null });
      } finally {
        await frameBody.return(undefined);
      }
      return c.json({ target: targetName, results }, 200);
    },
  );

  app.notFound((c) => failWith(c, 'NotFound', `no route ${c.req.method} ${new URL(c.req.url).pathname}`));

  app.onError((err, c) => {
    // Hono's own refusals (e.g. malformed JSON from the validator) are the client's fault.
    if (err instanceof HTTPException && err.status < 500) {
      return failWith(c, 'InvalidRequest', err.message);
    }
    log.error({ event: 'storage.request_failed', err, path: c.req.path }, 'request failed');
    return failWith(c, 'Internal', 'internal error');
  });

  return { app, registry: metrics.registry, metrics };
}

export type ResolvedRange =
  | { kind: 'full' }
  | { kind: 'partial'; start: number; end: number }
  | { kind: 'unsatisfiable' };

/**
 * RFC 9110 section 14: one `bytes=` range, resolved against `size`. Syntax we do not serve (other
 * units, several ranges, last < first) is ignored and the whole blob is sent, which the RFC allows.
 */
export function resolveRange(header: string | undefined, size: number): ResolvedRange {
  if (header === undefined) return { kind: 'full' };
  const match = /^bytes=\s*(\d*)\s*-\s*(\d*)\s*$/.exec(header.trim());
  if (match === null) return { kind: 'full' };
  const [, first = '', last = ''] = match;
  if (first === '' && last === '') return { kind: 'full' };
  if (first === '') {
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return { kind: 'unsatisfiable' };
    return { kind: 'partial', start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === '' ? size - 1 : Number(last);
  if (!Number.isSafeInteger(start) || (last !== '' && end < start)) return { kind: 'full' };
  if (start >= size) return { kind: 'unsatisfiable' };
  return { kind: 'partial', start, end: Math.min(end, size - 1) };
}

/** A target as it appears in answers and logs: its base URL without the trailing slash. */
function targetNameOf(target: URL): string {
  return target.origin + target.pathname.replace(/\/$/, '');
}

function parseTargetUrl(raw: string): URL | undefined {
  let url: URL;
  try {
    url = new URL(raw);
  } catch {
    return undefined;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') return undefined;
  if (url.username !== '' || url.password !== '' || url.search !== '' || url.hash !== '') return undefined;
  if (!url.pathname.endsWith('/')) url.pathname += '/';
  return url;
}

/** NDJSON lines `{id,size,sha256}`, produced only when the consumer pulls: bounded memory. */
function inventoryStream(
  store: BlobStore,
  after: string | undefined,
  log: Logger,
): ReadableStream<Uint8Array> {
  const entries = store.inventory(after === undefined ? {} : { after });
  const encoder = new TextEncoder();
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        let chunk = '';
        while (chunk.length < 64 * 1024) {
          const next = await entries.next();
          if (next.done) {
            if (chunk !== '') controller.enqueue(encoder.encode(chunk));
            controller.close();
            return;
          }
          const { id, size, sha256 } = next.value;
          chunk += `${JSON.stringify({ id, size, sha256 })}\n`;
        }
        controller.enqueue(encoder.encode(chunk));
      } catch (err) {
        log.error({ event: 'storage.inventory_failed', err }, 'inventory stream failed');
        controller.error(err);
      }
    },
    async cancel() {
      await entries.return(undefined);
    },
  });
}

function bytesReadOf(stream: Readable): number {
  return 'bytesRead' in stream && typeof stream.bytesRead === 'number' ? stream.bytesRead : 0;
}

async function readSmallBody(
  body: AsyncIterable<Buffer> & { destroy(): unknown },
  limit: number,
): Promise<string> {
  let text = '';
  for await (const chunk of body) {
    text += chunk.toString('utf8');
    if (text.length > limit) {
      body.destroy();
      break;
    }
  }
  return text;
}

interface StoredBlobAnswer {
  id?: unknown;
  ok?: unknown;
  status?: unknown;
  error?: { code?: unknown; message?: unknown };
}

/** The results of a `/blobs/batch` answer, or null when it is not one. */
function batchResultsOf(answer: string): StoredBlobAnswer[] | null {
  try {
    const parsed = JSON.parse(answer) as { results?: unknown };
    return Array.isArray(parsed.results) ? (parsed.results as StoredBlobAnswer[]) : null;
  } catch {
    return null;
  }
}

function errorCodeOf(answer: string): string | null {
  try {
    const parsed: unknown = JSON.parse(answer);
    const code = (parsed as { error?: { code?: unknown } }).error?.code;
    return typeof code === 'string' ? code : null;
  } catch {
    return null;
  }
}
