// The manager's side of the worker protocol (src/storagenode): bytes go to and between workers,
// never through a Raft log. Every call carries the worker's access credential (or the single cluster
// secret); every failure comes back as a
// WorkerCallError with a code the pipeline and repair loops can decide on.

import type { Readable } from 'node:stream';
import { Agent, type Dispatcher, request } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../http/clusterAuth.ts';
import { COPY_CREDENTIAL_HEADER } from '../http/credentials.ts';
import { ndjsonLines } from '../http/ndjson.ts';
import { internalConnect } from '../http/tls.ts';
import { CRC32C_HEADER } from '../protocol/checksums.ts';
import {
  type BlobSums,
  CHECKSUM_TRAILER_BYTES,
  CHECKSUMS_HEADER,
  encodeChecksumTrailer,
  TRAILING_CHECKSUMS,
} from '../protocol/checksumTrailer.ts';
import { type ReadLinkClaims, readLinkUrl } from '../protocol/readLink.ts';
import { SHA256_HEADER } from '../protocol/workerHeaders.ts';
import { blobPath, COPY_BATCH_PATH, INVENTORY_PATH, verifyPath } from '../protocol/workerPaths.ts';

export type WorkerCallErrorCode =
  | 'Unreachable'
  | 'ChecksumMismatch'
  | 'Conflict'
  | 'InsufficientStorage'
  | 'NotFound'
  | 'Rejected';

export class WorkerCallError extends Error {
  constructor(
    readonly code: WorkerCallErrorCode,
    readonly workerUrl: string,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'WorkerCallError';
  }
}

function codeForStatus(status: number): WorkerCallErrorCode {
  if (status === 404) return 'NotFound';
  if (status === 409) return 'Conflict';
  if (status === 422) return 'ChecksumMismatch';
  if (status === 507) return 'InsufficientStorage';
  return 'Rejected';
}

async function failure(
  workerUrl: string,
  what: string,
  res: Dispatcher.ResponseData,
): Promise<WorkerCallError> {
  const text = await res.body.text().catch(() => '');
  return new WorkerCallError(
    codeForStatus(res.statusCode),
    workerUrl,
    `${what} on ${workerUrl} answered ${res.statusCode}: ${text.slice(0, 300)}`,
    res.statusCode,
  );
}

/** One blob of a copy-batch: what the holder sent, or why it did not get there. */
export type CopyBatchOutcome =
  | { ok: true; sha256: string | null; size: number | null }
  /** `code`: the holder's or the target's error code (BlobNotFound: the holder has no such blob). */
  | { ok: false; message: string; code: string | null };

/** What a worker found reading its copy back (see workerApp's POST /blobs/:id/verify). */
export type BlobVerdict =
  | { state: 'intact'; size: number; sha256: string }
  | { state: 'missing' | 'rotten' | 'changed' };

/** What a manager presents to one worker, and what a holder presents to it when copying there. */
export interface WorkerCallCredentials {
  access: string;
  copy: string;
}

export interface WorkerClientOptions {
  /** The single cluster secret, sent to every worker; `credentialsFor` wins when given. */
  secret?: string;
  /** Per-role: the credentials of the worker at a URL; undefined for a URL no registered worker has. */
  credentialsFor?: (workerUrl: string) => Promise<WorkerCallCredentials | undefined>;
  /**
   * Changes whenever what `credentialsFor` answers may change (the node table's version): its
   * answers are kept per URL until then, instead of looked up on every call. Without it, every
   * call asks `credentialsFor`.
   */
  credentialsVersion?: () => number;
  /** Time allowed between two chunks of a transfer, and for headers; a stalled worker is abandoned. */
  idleTimeoutMs?: number;
  /** Time allowed to open a connection to a worker. */
  connectTimeoutMs?: number;
  /**
   * A blob PUT's bound on the worker's answer: from the request, kept alive by every write the
   * worker's socket held back (so a big body that keeps moving never runs into it) and restarted
   * when the last byte is sent. A worker cut off the network answers no RST: without this bound a
   * write to it waits out the idle timeout before the next target is tried.
   */
  putAnswerTimeoutMs?: number;
  /**
   * The disk speed a worker's fsync of a PUT body is allowed to go at: the answer bound grows by
   * the body's size at this pace (see putAnswerBoundMs), so a large blob on a slow disk is not
   * abandoned while the worker is still making it durable.
   */
  putAnswerBytesPerSecond?: number;
  /**
   * A read's bound from sending the request (connecting included) to the worker's response headers.
   * A host cut off the network sends no RST: without it a read waits out the idle timeout on a dead
   * keep-alive connection before the next replica is tried. Once headers arrive, the body has the
   * idle timeout again (large images on slow links).
   */
  readFirstByteTimeoutMs?: number;
}

/** One blob a worker holds, as its index says (an inventory line). */
export interface InventoryEntry {
  id: string;
  size: number;
  sha256: string;
}

/** An inventory line is far below this; a longer one is a broken stream. */
const MAX_INVENTORY_LINE_BYTES = 4096;

/** A worker answers a GET's headers after a stat and an open: no work that grows with the image. */
export const DEFAULT_READ_FIRST_BYTE_TIMEOUT_MS = 3_000;
/** A connect to a worker on a live host takes a round trip. */
export const DEFAULT_CONNECT_TIMEOUT_MS = 5_000;
/** A worker answers a PUT after its file and folder fsyncs: seconds only on a disk in trouble. */
export const DEFAULT_PUT_ANSWER_TIMEOUT_MS = 10_000;
/** A slow disk's write-back pace: a 1 GiB body's fsync may take ~20 s on it. */
export const DEFAULT_PUT_ANSWER_BYTES_PER_SECOND = 50_000_000;

/** A PUT's answer bound for a body of `size` bytes: the base, plus its fsync at `bytesPerSecond`. */
export function putAnswerBoundMs(size: number, baseMs: number, bytesPerSecond: number): number {
  return baseMs + Math.ceil((size / bytesPerSecond) * 1000);
}

export class WorkerClient {
  private readonly dispatcher: Agent;
  private readonly lookUpCredentials: (workerUrl: string) => Promise<WorkerCallCredentials | undefined>;
  private readonly credentialsVersion: (() => number) | undefined;
  /** `lookUpCredentials`' answers, as of `cachedVersion`. */
  private readonly cachedCredentials = new Map<string, WorkerCallCredentials | undefined>();
  private cachedVersion = Number.NaN;
  private readonly readFirstByteTimeoutMs: number;
  private readonly putAnswerTimeoutMs: number;
  private readonly putAnswerBytesPerSecond: number;

  constructor(opts: WorkerClientOptions) {
    const { secret } = opts;
    if (opts.credentialsFor) this.lookUpCredentials = opts.credentialsFor;
    else if (secret) this.lookUpCredentials = async () => ({ access: secret, copy: secret });
    else throw new Error('WorkerClient: a cluster secret or credentialsFor is required');
    this.credentialsVersion = opts.credentialsFor ? opts.credentialsVersion : undefined;
    this.readFirstByteTimeoutMs = opts.readFirstByteTimeoutMs ?? DEFAULT_READ_FIRST_BYTE_TIMEOUT_MS;
    this.putAnswerTimeoutMs = opts.putAnswerTimeoutMs ?? DEFAULT_PUT_ANSWER_TIMEOUT_MS;
    this.putAnswerBytesPerSecond = opts.putAnswerBytesPerSecond ?? DEFAULT_PUT_ANSWER_BYTES_PER_SECOND;
    const idle = opts.idleTimeoutMs ?? 30_000;
    this.dispatcher = new Agent({
      headersTimeout: idle,
      bodyTimeout: idle,
      keepAliveTimeout: 10_000,
      connect: internalConnect({ timeout: opts.connectTimeoutMs ?? DEFAULT_CONNECT_TIMEOUT_MS }),
    });
  }

  /**
   * The credentials for `workerUrl`: kept from an earlier call while `credentialsVersion` is
   * unchanged. An answer whose look-up overlapped a change of the table is used once, not kept.
   */
  private async credentialsFor(workerUrl: string): Promise<WorkerCallCredentials | undefined> {
    const version = this.credentialsVersion?.();
    if (version === undefined) return this.lookUpCredentials(workerUrl);
    if (version === this.cachedVersion && this.cachedCredentials.has(workerUrl)) {
      return this.cachedCredentials.get(workerUrl);
    }
    const credentials = await this.lookUpCredentials(workerUrl);
    // Kept only if the table did not change during the look-up.
    if (this.credentialsVersion?.() !== version) return credentials;
    if (version !== this.cachedVersion) {
      this.cachedCredentials.clear();
      this.cachedVersion = version;
    }
    this.cachedCredentials.set(workerUrl, credentials);
    return credentials;
  }

  /** The headers that open the worker at `workerUrl` (none for a URL no registered worker has). */
  async authHeaders(workerUrl: string): Promise<Record<string, string>> {
    const credentials = await this.credentialsFor(workerUrl);
    return credentials ? { [CLUSTER_SECRET_HEADER]: credentials.access } : {};
  }

  /** The header a holder presents to the copy target at `targetUrl`. */
  private async copyHeaders(targetUrl: string): Promise<Record<string, string>> {
    const credentials = await this.credentialsFor(targetUrl);
    return credentials ? { [COPY_CREDENTIAL_HEADER]: credentials.copy } : {};
  }

  private async call(
    method: Dispatcher.HttpMethod,
    workerUrl: string,
    path: string,
    extra: {
      headers?: Record<string, string>;
      body?: Readable | AsyncIterable<Uint8Array> | Uint8Array | string;
      /** Abort unless the response headers are in within this many ms. */
      firstByteMs?: number;
      /** undici's headers timeout for this request (see putAnswerTimeoutMs), instead of the idle one. */
      headersTimeout?: number;
      /** Gives up on the request if it aborts before the response headers are in. */
      signal?: AbortSignal;
    } = {},
  ): Promise<Dispatcher.ResponseData> {
    const auth = await this.authHeaders(workerUrl);
    const abort = new AbortController();
    const timer =
      extra.firstByteMs === undefined ? undefined : setTimeout(() => abort.abort(), extra.firstByteMs);
    const given = extra.signal;
    const giveUp = () => abort.abort();
    given?.addEventListener('abort', giveUp, { once: true });
    if (given?.aborted) giveUp();
    try {
      return await request(new URL(path, workerUrl), {
        method,
        dispatcher: this.dispatcher,
        headers: { ...auth, ...extra.headers },
        // undici takes async iterables as bodies (docs/api/Dispatcher.md); its types lag behind.
        body: (extra.body ?? null) as Readable | Uint8Array | string | null,
        signal: abort.signal,
        ...(extra.headersTimeout === undefined ? {} : { headersTimeout: extra.headersTimeout }),
      });
    } catch (err) {
      const why = given?.aborted
        ? ((given.reason as Error | undefined)?.message ?? 'given up')
        : abort.signal.aborted
          ? `no response headers within ${extra.firstByteMs} ms`
          : String(err);
      throw new WorkerCallError('Unreachable', workerUrl, `${method} ${path} on ${workerUrl} failed: ${why}`);
    } finally {
      // Cleared once headers are in: the body is bounded by the idle timeout alone.
      clearTimeout(timer);
      given?.removeEventListener('abort', giveUp);
    }
  }

  /**
   * Streams a blob to a worker; resolves once the worker has it fsynced under `id`. With `crc32c`,
   * the worker checks the body against it instead of hashing it with sha256 (workerApp's PUT). The
   * answer must name the checksums and size sent (the worker checked what it stored): a 2xx
   * without them, from something that took the bytes and kept none, is a failed copy, never a
   * stored one. (An answer without a crc32c comes from a worker that predates it and checked the
   * sha256 itself.)
   */
  async putBlob(
    workerUrl: string,
    id: string,
    sha256: string,
    size: number,
    body: Readable | AsyncIterable<Uint8Array> | Uint8Array,
    crc32c?: string,
    signal?: AbortSignal,
  ): Promise<'created' | 'alreadyPresent'> {
    const res = await this.call('PUT', workerUrl, blobPath(id), {
      headers: {
        [SHA256_HEADER]: sha256,
        ...(crc32c === undefined ? {} : { [CRC32C_HEADER]: crc32c }),
        'content-length': String(size),
      },
      body,
      headersTimeout: putAnswerBoundMs(size, this.putAnswerTimeoutMs, this.putAnswerBytesPerSecond),
      ...(signal ? { signal } : {}),
    });
    if (res.statusCode === 201 || res.statusCode === 200) {
      await this.checkPutAnswer(workerUrl, id, res, sha256, size, crc32c, false);
      return res.statusCode === 201 ? 'created' : 'alreadyPresent';
    }
    throw await failure(workerUrl, `PUT /blobs/${id}`, res);
  }

  /**
   * putBlob for a body whose checksums are known only once it has been read whole (an upload
   * forwarded as it arrives): the body of `size` bytes goes out followed by the checksum trailer
   * (src/protocol/checksumTrailer.ts) that `sums` gives once the body ended. The worker checks the
   * bytes against the trailer's CRC32C, and its answer must name the same sums and size.
   */
  async putBlobStreamed(
    workerUrl: string,
    id: string,
    size: number,
    body: AsyncIterable<Uint8Array>,
    sums: () => BlobSums,
    signal?: AbortSignal,
  ): Promise<'created' | 'alreadyPresent'> {
    async function* withTrailer(): AsyncGenerator<Uint8Array> {
      yield* body;
      yield encodeChecksumTrailer(sums());
    }
    const res = await this.call('PUT', workerUrl, blobPath(id), {
      headers: {
        [CHECKSUMS_HEADER]: TRAILING_CHECKSUMS,
        'content-length': String(size + CHECKSUM_TRAILER_BYTES),
      },
      body: withTrailer(),
      // Does not cut a slow client's body: while the body is being written, undici 7 acts on a
      // headers timeout only if the socket waits for a drain (the worker stopped reading), and it
      // restarts the timeout when the body's last byte is written (client-h1.js, onParserTimeout).
      headersTimeout: putAnswerBoundMs(size, this.putAnswerTimeoutMs, this.putAnswerBytesPerSecond),
      ...(signal ? { signal } : {}),
    });
    if (res.statusCode !== 201 && res.statusCode !== 200)
      throw await failure(workerUrl, `PUT /blobs/${id}`, res);
    let sent: BlobSums;
    try {
      sent = sums();
    } catch {
      // A 2xx before the trailer went out: the worker cannot have checked the bytes.
      await res.body.dump();
      throw new WorkerCallError('Rejected', workerUrl, `PUT /blobs/${id} answered before its body was sent`);
    }
    await this.checkPutAnswer(workerUrl, id, res, sent.sha256, size, sent.crc32c, true);
    return res.statusCode === 201 ? 'created' : 'alreadyPresent';
  }

  /**
   * A 2xx PUT answer must name the checksums and size sent (the worker checked what it stored).
   * `crcRequired`: an answer without a crc32c is a failed copy too (only a worker that
   * understood the trailer may answer 2xx to one).
   */
  private async checkPutAnswer(
    workerUrl: string,
    id: string,
    res: Dispatcher.ResponseData,
    sha256: string,
    size: number,
    crc32c: string | undefined,
    crcRequired: boolean,
  ): Promise<void> {
    const answer = (await res.body.json().catch(() => null)) as {
      sha256?: unknown;
      size?: unknown;
      crc32c?: unknown;
    } | null;
    const crcAgrees =
      crc32c === undefined || (answer?.crc32c === undefined && !crcRequired) || answer?.crc32c === crc32c;
    if (answer?.sha256 === sha256 && answer.size === size && crcAgrees) return;
    throw new WorkerCallError(
      'Rejected',
      workerUrl,
      `PUT /blobs/${id} on ${workerUrl} answered ${res.statusCode} with sha256 ${String(answer?.sha256)} ` +
        `crc32c ${String(answer?.crc32c)} (${String(answer?.size)} bytes), not the ${sha256} ` +
        `crc32c ${String(crc32c)} (${size} bytes) sent`,
      res.statusCode,
    );
  }

  /**
   * The holder sends its copies of `blobs` to the target in one request; the target hash-checks each
   * against the checksum the holder sent (its index entry), and a holder whose copy has other bytes
   * than `sha256` (the record's) refuses it. Resolves with one result per blob, in order: a blob the
   * holder or the target refused fails alone. Rejects when the holder could not run the batch at all.
   */
  async copyBatch(
    holderUrl: string,
    targetUrl: string,
    blobs: readonly { id: string; sha256: string }[],
  ): Promise<CopyBatchOutcome[]> {
    const res = await this.call('POST', holderUrl, COPY_BATCH_PATH, {
      headers: { 'content-type': 'application/json', ...(await this.copyHeaders(targetUrl)) },
      body: JSON.stringify({ target: targetUrl, blobs }),
    });
    if (res.statusCode !== 200) throw await failure(holderUrl, `copy-batch to ${targetUrl}`, res);
    const answer = (await res.body.json().catch(() => null)) as { results?: unknown } | null;
    const results = Array.isArray(answer?.results) ? (answer.results as unknown[]) : [];
    if (results.length !== blobs.length) {
      throw new WorkerCallError(
        'Rejected',
        holderUrl,
        `copy-batch answered ${results.length} results for ${blobs.length} blobs`,
      );
    }
    return results.map((raw, i): CopyBatchOutcome => {
      const r = (raw ?? {}) as Record<string, unknown>;
      const error = (r.error ?? {}) as Record<string, unknown>;
      if (r.id !== blobs[i]!.id)
        return { ok: false, message: `result ${i} is not for ${blobs[i]!.id}`, code: null };
      if (r.ok === true) {
        return {
          ok: true,
          sha256: typeof r.sha256 === 'string' ? r.sha256 : null,
          size: typeof r.size === 'number' ? r.size : null,
        };
      }
      return {
        ok: false,
        message: `${String(error.code ?? 'Error')}: ${String(error.message ?? '')}`,
        code: typeof error.code === 'string' ? error.code : null,
      };
    });
  }

  /** Deletes a copy; a copy that is already gone counts as deleted. */
  async deleteBlob(workerUrl: string, id: string): Promise<void> {
    const res = await this.call('DELETE', workerUrl, blobPath(id));
    await res.body.dump();
    if (res.statusCode === 204 || res.statusCode === 404) return;
    throw new WorkerCallError(
      'Rejected',
      workerUrl,
      `DELETE /blobs/${id} answered ${res.statusCode}`,
      res.statusCode,
    );
  }

  /**
   * Has the worker read its copy of `id` back and hash it (POST /blobs/:id/verify): what its disk
   * really holds, without the bytes crossing the network. A rotten copy is removed by the worker.
   */
  async verifyBlob(workerUrl: string, id: string): Promise<BlobVerdict> {
    const res = await this.call('POST', workerUrl, verifyPath(id));
    if (res.statusCode !== 200) throw await failure(workerUrl, `verify of ${id}`, res);
    const answer = (await res.body.json().catch(() => null)) as Record<string, unknown> | null;
    const state = answer?.state;
    if (state === 'intact' && typeof answer?.size === 'number' && typeof answer.sha256 === 'string') {
      return { state, size: answer.size, sha256: answer.sha256 };
    }
    if (state === 'missing' || state === 'rotten' || state === 'changed') return { state };
    throw new WorkerCallError('Rejected', workerUrl, `verify of ${id} answered no verdict`);
  }

  /**
   * Opens a download; the caller streams `body` and must consume or destroy it. A worker that has
   * not answered its headers within the read's first-byte timeout fails as Unreachable.
   */
  async getBlob(
    workerUrl: string,
    id: string,
    opts: { method?: 'GET' | 'HEAD'; range?: string } = {},
  ): Promise<Dispatcher.ResponseData> {
    const headers: Record<string, string> = opts.range ? { range: opts.range } : {};
    const res = await this.call(opts.method ?? 'GET', workerUrl, blobPath(id), {
      headers,
      firstByteMs: this.readFirstByteTimeoutMs,
    });
    if (res.statusCode === 200 || res.statusCode === 206 || res.statusCode === 416) return res;
    throw await failure(workerUrl, `GET /blobs/${id}`, res);
  }

  /**
   * A signed direct-read link to `claims.id` on the worker at `workerUrl` (protocol/readLink.ts),
   * signed with that worker's access credential; undefined for a URL no registered worker has.
   */
  async readLink(workerUrl: string, claims: ReadLinkClaims): Promise<string | undefined> {
    const credentials = await this.credentialsFor(workerUrl);
    return credentials ? readLinkUrl(workerUrl, credentials.access, claims) : undefined;
  }

  /** Whether the worker holds `id` now (HEAD /blobs/:id); `unknown` when it could not say. */
  async holds(workerUrl: string, id: string): Promise<'yes' | 'no' | 'unknown'> {
    return this.getBlob(workerUrl, id, { method: 'HEAD' }).then(
      (res) => res.body.dump().then(() => 'yes' as const),
      (err: unknown) => ((err as { code?: string }).code === 'NotFound' ? 'no' : 'unknown'),
    );
  }

  /**
   * Streams the worker's inventory (GET /inventory, NDJSON in ascending id order). Lines without an
   * id are passed over; the caller checks the order. Rejects when the worker cannot list.
   */
  async *inventory(workerUrl: string): AsyncGenerator<InventoryEntry> {
    const res = await this.call('GET', workerUrl, INVENTORY_PATH);
    if (res.statusCode !== 200) throw await failure(workerUrl, 'GET /inventory', res);
    for await (const text of ndjsonLines(res.body, MAX_INVENTORY_LINE_BYTES)) {
      const line = JSON.parse(text) as Partial<InventoryEntry>;
      if (typeof line.id === 'string' && typeof line.size === 'number' && typeof line.sha256 === 'string')
        yield { id: line.id, size: line.size, sha256: line.sha256 };
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}
