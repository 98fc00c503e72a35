// A direct read (protocol/readLink.ts): a client sent here by a manager's signed link gets this
// worker's copy only if it is the record's bytes the link names, checked before the first byte is
// sent for a blob read whole (as a GET through the manager is); otherwise it is sent on to the
// other copy's link, or told no copy could be served, or, when no worker of the chain holds the
// blob, that the image is lost (500 Lost, as the manager answers such a read). A larger blob
// streams, checked as it goes, and a copy that fails cuts the answer.

import type { Readable } from 'node:stream';
import type { Context } from 'hono';
import { type ReadBuffers, releaseWhenWritten } from '../http/readBuffers.ts';
import { webStreamOf } from '../http/webStream.ts';
import type { Logger } from '../logging.ts';
import { IMAGE_CACHE_CONTROL, IMAGE_SAFETY_HEADERS } from '../protocol/imageHeaders.ts';
import {
  goneSoFar,
  passOn,
  READ_LINK_GONE_QUERY,
  READ_LINK_QUERY,
  type ReadLinkClaims,
  verifyReadLink,
} from '../protocol/readLink.ts';
import type { BlobRecord } from './blobIndex.ts';
import type { BlobStore } from './blobStore.ts';
import { failure, type StorageError, type StoreResult } from './errors.ts';
import type { WorkerMetrics } from './workerMetrics.ts';

export interface ReadLinkDeps {
  store: BlobStore;
  /** This worker's access credential (or the single secret): what managers sign its links with. */
  credential: string;
  metrics: WorkerMetrics;
  log: Logger;
  /** Blobs up to this size are read whole and checked before the answer starts. */
  wholeReadBytes: number;
  /** Where those whole reads lease their buffer, if anywhere. */
  wholeReads?: ReadBuffers | undefined;
}

/** Why this copy is not the record's bytes the link names, or null when it is. */
function otherBytes(record: BlobRecord, claims: ReadLinkClaims): string | null {
  if (record.size !== claims.size) return `this copy has ${record.size} bytes, the record ${claims.size}`;
  if (record.sha256 !== claims.sha256) return 'this copy is of other bytes than the record';
  if (record.crc32c !== undefined && claims.crc32c !== undefined && record.crc32c !== claims.crc32c)
    return 'this copy has another crc32c than the record';
  return null;
}

/**
 * `read`, with a throw (EIO, ELOOP, ...: anything but the store's own refusals) made a failure: a copy
 * that cannot be read is what the other copy's link is for, so it must not end as a 500.
 */
async function readCopy<T>(
  read: () => Promise<StoreResult<T>>,
  log: Logger,
  id: string,
): Promise<StoreResult<T>> {
  try {
    return await read();
  } catch (err) {
    log.error({ event: 'storage.request_failed', err, objectId: id }, 'direct read of a copy failed');
    return failure('Internal', `this copy could not be read: ${err instanceof Error ? err.message : err}`);
  }
}

function bytesReadOf(stream: Readable): number {
  return 'bytesRead' in stream && typeof stream.bytesRead === 'number' ? stream.bytesRead : 0;
}

export async function serveReadLink(c: Context, deps: ReadLinkDeps): Promise<Response> {
  const { store, metrics, log } = deps;
  const id = c.req.param('id') ?? '';
  const verified = verifyReadLink(deps.credential, c.req.query(READ_LINK_QUERY), id, Date.now());
  if (!verified.ok) {
    metrics.errors.inc({ kind: 'Unauthorized' });
    return c.json({ error: { code: 'Unauthorized', message: verified.why } }, 401);
  }
  const { claims } = verified;
  const gone = goneSoFar(c.req.query(READ_LINK_GONE_QUERY), claims);
  /** Sends the client on to the next copy, or says none could be served: `why` this one was not. */
  const elsewhere = (why: string | StorageError): Response => {
    // What a read through the manager counts as a copy gone: the worker has no such blob.
    const goneHere = typeof why !== 'string' && why.code === 'BlobNotFound';
    // Counted only along a chain over every copy: otherwise no count tells a lost image.
    const found = claims.copies === undefined ? 0 : gone + (goneHere ? 1 : 0);
    if (claims.next) {
      return new Response(null, {
        status: 307,
        headers: { location: passOn(claims.next, found), 'cache-control': 'no-store' },
      });
    }
    const message = typeof why === 'string' ? why : why.message;
    if (found === claims.copies) {
      metrics.errors.inc({ kind: 'Lost' });
      return c.json(
        {
          error: {
            code: 'Lost',
            message: `every copy of ${id} is lost: none of the ${found} workers its record names holds it (no worker that should hold it has it intact)`,
          },
        },
        500,
      );
    }
    metrics.errors.inc({ kind: 'Unavailable' });
    return c.json(
      { error: { code: 'Unavailable', message: `no copy of ${id} could be served: ${message}` } },
      503,
    );
  };
  const headers: Record<string, string> = {
    'content-type': claims.contentType,
    'content-length': String(claims.size),
    etag: `"${claims.sha256}"`,
    'cache-control': IMAGE_CACHE_CONTROL,
    ...IMAGE_SAFETY_HEADERS,
  };
  // Hono answers HEAD through this GET handler and drops the body unread: a body opened here would
  // hold its file open until GC and count bytes never sent. The index alone answers.
  if (c.req.method === 'HEAD') {
    const stat = await readCopy(() => store.stat(id), log, id);
    if (!stat.ok) return elsewhere(stat.error);
    const wrong = otherBytes(stat.value, claims);
    return wrong ? elsewhere(wrong) : new Response(null, { status: 200, headers });
  }
  if (claims.size <= deps.wholeReadBytes) {
    const whole = await readCopy(() => store.readWhole(id, deps.wholeReadBytes, deps.wholeReads), log, id);
    if (!whole.ok) return elsewhere(whole.error);
    if (whole.value === 'tooLarge')
      return elsewhere(`this copy is larger than the record's ${claims.size} bytes`);
    // What was read, checked against its checksum by readWhole, is what is compared with the link.
    const wrong = otherBytes(whole.value.record, claims);
    if (wrong) {
      whole.value.release?.();
      return elsewhere(wrong);
    }
    metrics.bytesOut.inc(claims.size);
    releaseWhenWritten(c, whole.value.release);
    return new Response(whole.value.bytes, { status: 200, headers });
  }
  // Checked as it streams against the worker's record, which must be the link's.
  const read = await readCopy(() => store.openForRead(id), log, id);
  if (!read.ok) return elsewhere(read.error);
  const wrong = otherBytes(read.value.record, claims);
  if (wrong) {
    read.value.stream.destroy();
    return elsewhere(wrong);
  }
  // What was read when the stream ends, as the /blobs route counts: a cut transfer counts its part.
  const stream = read.value.stream;
  stream.once('close', () => metrics.bytesOut.inc(bytesReadOf(stream)));
  return new Response(webStreamOf(stream), { status: 200, headers });
}
