// The public names surface: /v1/buckets/:bucket/keys/<key> (a key is a path: the rest of the URL,
// percent-decoded) and the content lookup a backup client dedups with. Handlers parse, call one
// NameService method, and map its typed error to one HTTP status; image errors (upload, read,
// NotLeader's 307) map as on /v1/images.

import { type Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import { jsonError } from '../../http/errors.ts';
import { ifRangeMatches, rangeNotSatisfiable } from '../../http/ifRange.ts';
import { outgoingOf, releaseWhenWritten } from '../../http/readBuffers.ts';
import { requestBody } from '../../http/requestBody.ts';
import { webStreamOf } from '../../http/webStream.ts';
import type { NameView } from '../../metadata/commands.ts';
import { CONTENT_SHA256_HEADER, MTIME_HEADER } from '../../protocol/nameHeaders.ts';
import type { ImageService } from '../imageService.ts';
import { NameError, type NameErrorCode, type NameService } from '../nameService.ts';
import { clientOf, IMAGE_SAFETY_HEADERS, mapError } from './publicRoutes.ts';

const STATUS: Record<NameErrorCode, ContentfulStatusCode> = {
  InvalidName: 400,
  InvalidQuery: 400,
  NameNotFound: 404,
  ContentNotFound: 404,
  ChecksumMismatch: 422,
  BucketNotFound: 404,
  BucketNotEmpty: 409,
};

const listQuerySchema = z.object({
  prefix: z.string().max(1024).optional(),
  delimiter: z.string().max(16).optional(),
  cursor: z.string().max(2048).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(1000),
});

const SHA256 = /^[0-9a-f]{64}$/;

export function nameJson(n: NameView) {
  return {
    bucket: n.bucket,
    key: n.key,
    objectId: n.objectId,
    size: n.size,
    sha256: n.sha256,
    contentType: n.contentType,
    mtime: n.mtime,
    updatedAt: new Date(n.updatedAt).toISOString(),
  };
}

function errorResponse(c: Context, err: unknown): Response {
  if (err instanceof NameError) return jsonError(c, STATUS[err.code], err.code, err.message);
  return mapError(c, err);
}

/** The key: everything after `/v1/buckets/<bucket>/<segment>/`, percent-decoded. */
function keyOf(c: Context, segment: 'keys' | 'meta'): string {
  const parts = new URL(c.req.url).pathname.split('/');
  if (parts[4] !== segment)
    throw new NameError('InvalidName', `expected /v1/buckets/<bucket>/${segment}/<key>`);
  try {
    return decodeURIComponent(parts.slice(5).join('/'));
  } catch {
    throw new NameError('InvalidName', 'key is not valid percent-encoding');
  }
}

function mtimeOf(c: Context): number {
  const raw = c.req.header(MTIME_HEADER);
  if (raw === undefined) return Date.now();
  if (!/^\d{1,15}$/.test(raw))
    throw new NameError('InvalidName', `${MTIME_HEADER} must be milliseconds since 1970`);
  return Number(raw);
}

function nameHeaders(n: NameView): Headers {
  return new Headers({
    'content-type': n.contentType,
    etag: `"${n.sha256}"`,
    'last-modified': new Date(n.mtime).toUTCString(),
    [MTIME_HEADER]: String(n.mtime),
    'accept-ranges': 'bytes',
    'cache-control': 'private, no-cache',
    ...IMAGE_SAFETY_HEADERS,
  });
}

async function put(c: Context, names: NameService, byToken: boolean): Promise<Response> {
  const bucket = c.req.param('bucket')!;
  const key = keyOf(c, 'keys');
  const mtime = mtimeOf(c);
  const sha256 = c.req.header(CONTENT_SHA256_HEADER);
  if (sha256 !== undefined && !SHA256.test(sha256)) {
    throw new NameError('InvalidName', `${CONTENT_SHA256_HEADER} must be 64 lowercase hex digits`);
  }
  const length = c.req.header('content-length');
  const declaredLength = length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined;
  const outcome =
    sha256 !== undefined && declaredLength === 0
      ? await names.putExisting(bucket, key, sha256, mtime)
      : await names.putBytes(bucket, key, () => requestBody(c).chunks, {
          mtime,
          client: clientOf(c, byToken),
          ...(declaredLength !== undefined ? { declaredLength } : {}),
          ...(sha256 !== undefined ? { sha256 } : {}),
        });
  c.header('etag', `"${outcome.name.sha256}"`);
  return c.json(
    { ...nameJson(outcome.name), deduplicated: outcome.deduplicated },
    outcome.created ? 201 : 200,
  );
}

async function read(c: Context, names: NameService, images: ImageService): Promise<Response> {
  const name = await names.get(c.req.param('bucket')!, keyOf(c, 'keys'));
  const headers = nameHeaders(name);
  if (c.req.method === 'HEAD') {
    headers.set('content-length', String(name.size));
    return new Response(null, { status: 200, headers });
  }
  const ifRange = c.req.header('if-range');
  const range =
    ifRange === undefined || ifRangeMatches(ifRange, name.sha256) ? c.req.header('range') : undefined;
  // `body` is the checked stream (verifiedRead): the worker's raw response may be read already.
  // Where the answer is written, known: a small object's bytes may then come in a reused buffer,
  // handed back once that write is done (imageService.ts, OpenOptions.pooled).
  const { object, response, body, bytes, release } = await images.open(name.objectId, {
    method: 'GET',
    ...(range ? { range } : {}),
    ...(outgoingOf(c) ? { pooled: true } : {}),
  });
  if (response.statusCode === 416) {
    await response.body.dump();
    return rangeNotSatisfiable(c, object.size);
  }
  for (const h of ['content-length', 'content-range']) {
    const value = response.headers[h];
    if (typeof value === 'string') headers.set(h, value);
  }
  releaseWhenWritten(c, release);
  return new Response(bytes ?? webStreamOf(body), { status: response.statusCode, headers });
}

/** `clientsByToken`: upload caps count per bearer token (tokens on), else per address, as for images. */
export function nameRoutes(
  names: NameService,
  images: ImageService,
  opts: { clientsByToken?: boolean } = {},
): Hono {
  const app = new Hono();
  const handle =
    (fn: (c: Context) => Promise<Response>) =>
    async (c: Context): Promise<Response> => {
      try {
        return await fn(c);
      } catch (err) {
        return errorResponse(c, err);
      }
    };

  app.put(
    '/v1/buckets/:bucket/keys/*',
    handle((c) => put(c, names, opts.clientsByToken ?? false)),
  );
  // Hono answers HEAD through the GET route: HEAD is served from the record, no worker asked.
  app.get(
    '/v1/buckets/:bucket/keys/*',
    handle((c) => read(c, names, images)),
  );
  app.get(
    '/v1/buckets/:bucket/meta/*',
    handle(async (c) => c.json(nameJson(await names.get(c.req.param('bucket')!, keyOf(c, 'meta'))))),
  );
  app.delete(
    '/v1/buckets/:bucket/keys/*',
    handle(async (c) => {
      await names.remove(c.req.param('bucket')!, keyOf(c, 'keys'));
      return c.body(null, 204);
    }),
  );
  app.get(
    '/v1/buckets',
    handle(async (c) =>
      c.json({
        buckets: (await names.listBuckets()).map((b) => ({
          bucket: b.bucket,
          createdAt: new Date(b.createdAt).toISOString(),
        })),
      }),
    ),
  );
  app.put(
    '/v1/buckets/:bucket',
    handle(async (c) => {
      const bucket = c.req.param('bucket')!;
      const { created } = await names.createBucket(bucket);
      return c.json({ bucket, created }, created ? 201 : 200);
    }),
  );
  app.delete(
    '/v1/buckets/:bucket',
    handle(async (c) => {
      await names.deleteBucket(c.req.param('bucket')!);
      return c.body(null, 204);
    }),
  );
  app.get(
    '/v1/buckets/:bucket',
    handle(async (c) => {
      const query = listQuerySchema.safeParse(c.req.query());
      if (!query.success) return jsonError(c, 400, 'InvalidQuery', z.prettifyError(query.error));
      const page = await names.list(c.req.param('bucket')!, query.data);
      return c.json({
        names: page.names.map(nameJson),
        commonPrefixes: page.commonPrefixes,
        next: page.next,
      });
    }),
  );
  app.get(
    '/v1/content/:sha256',
    handle(async (c) => {
      const sha256 = c.req.param('sha256')!;
      if (!SHA256.test(sha256))
        return jsonError(c, 400, 'InvalidQuery', 'sha256 must be 64 lowercase hex digits');
      const objectId = await names.contentObject(sha256);
      if (objectId === null)
        return jsonError(c, 404, 'ContentNotFound', `no named content has sha256 ${sha256}`);
      return c.json({ sha256, objectId });
    }),
  );
  return app;
}
