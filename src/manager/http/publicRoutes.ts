// The public /v1 images surface. Handlers parse, call one ImageService method, and map its typed
// error to one HTTP status. A follower answers writes with 307 to the leader's same URL, so
// `curl -L --data-binary @cat.jpg http://<any manager>/v1/images` works.

import { createHash } from 'node:crypto';
import type { HttpBindings } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import { jsonError, withoutAddresses } from '../../http/errors.ts';
import { ifRangeMatches, rangeNotSatisfiable } from '../../http/ifRange.ts';
import { noLeaderKnown, redirectToLeader } from '../../http/leaderRedirect.ts';
import { outgoingOf, releaseWhenWritten } from '../../http/readBuffers.ts';
import { requestBody } from '../../http/requestBody.ts';
import { webStreamOf } from '../../http/webStream.ts';
import type { ObjectView } from '../../metadata/commands.ts';
import { IMAGE_CACHE_CONTROL, IMAGE_SAFETY_HEADERS } from '../../protocol/imageHeaders.ts';
import { ImageError, type ImageErrorCode, type ImageService } from '../imageService.ts';
import { FormError, formFile } from './formUpload.ts';
import { RefusedBodyDrain } from './refusedBodyDrain.ts';

const STATUS: Record<Exclude<ImageErrorCode, 'NotLeader'>, ContentfulStatusCode> = {
  InvalidId: 400,
  EmptyBody: 400,
  TooLarge: 413,
  NotAnImage: 415,
  BodyTooSlow: 408,
  LengthMismatch: 400,
  TooManyUploads: 503,
  StagingFull: 503,
  Conflict: 409,
  NotFound: 404,
  Unavailable: 503,
  // The server's failure, not the client's, and not cached as a 410 would be: a copy may come back.
  Lost: 500,
  NoLiveWorker: 503,
  InsufficientStorage: 507,
  NoLeader: 503,
  CommitFailed: 503,
};

const BODY_LEFT_UNREAD: ReadonlySet<ImageErrorCode> = new Set([
  'TooLarge',
  'NotAnImage',
  'BodyTooSlow',
  'LengthMismatch',
  'TooManyUploads',
  'StagingFull',
]);

const listQuerySchema = z.object({
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  after: z.string().max(128).optional(),
});

/** An object as the API answers it (and `npm run bench:listlat` serializes it). */
export function toJson(o: ObjectView) {
  return {
    id: o.id,
    size: o.size,
    sha256: o.sha256,
    contentType: o.contentType,
    createdAt: new Date(o.createdAt).toISOString(),
    replicas: o.replicas,
  };
}

/** `bodyRead`: a refused upload's body was read to its end (drainRefusedBody), so the connection stays open. */
export function mapError(c: Context, err: unknown, opts: { bodyRead?: boolean } = {}): Response {
  if (!(err instanceof ImageError)) throw err;
  if (err.code === 'NotLeader' && err.leaderUrl) return redirectToLeader(c, err.leaderUrl, err.message);
  if (err.code === 'NotLeader' || err.code === 'NoLeader')
    return noLeaderKnown(c, withoutAddresses(err.message));
  const status = STATUS[err.code];
  if (status === 503) c.header('retry-after', '1');
  // The rest of a refused body stays unread: a client must not send its next request on this
  // connection, or it would reach a socket the server is about to close.
  if (BODY_LEFT_UNREAD.has(err.code) && !opts.bodyRead) c.header('connection', 'close');
  return jsonError(c, status, err.code, withoutAddresses(err.message));
}

/** Refusals by the admission caps: nothing of the body was read, and the client may well retry. */
const ADMISSION_REFUSALS: ReadonlySet<ImageErrorCode> = new Set(['TooManyUploads', 'StagingFull']);
/** One per process: its budget bounds the refused bytes all public servers read at once. */
const refusedBodies = new RefusedBodyDrain();

/**
 * Reads and drops the body of an upload the admission caps refused, within refusedBodyDrain.ts's
 * bounds, so the 503 goes out on a connection that stays usable. The slot is not held meanwhile.
 * False when the body was not (or not wholly) read: the 503 then closes the connection.
 */
async function drainRefusedBody(c: Context): Promise<boolean> {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  const length = Number(c.req.header('content-length') ?? Number.NaN);
  if (!incoming || FORM_BODY.test(c.req.header('content-type') ?? '')) return false;
  return refusedBodies.drain(incoming, length);
}

export { IMAGE_SAFETY_HEADERS };

/** `GET /v1/images/:id?direct=1`: answered with a redirect to a worker's signed link (docs/api.md). */
const DIRECT_QUERY = 'direct';

/** RFC 9110 If-None-Match (weak comparison): `*`, or a list of entity tags one of which is ours. */
function etagListMatches(header: string, sha256: string): boolean {
  if (header.trim() === '*') return true;
  return header.split(',').some((tag) => tag.trim().replace(/^W\//, '') === `"${sha256}"`);
}

/**
 * Whom the per-client upload caps count against: the bearer token when tokens are on (checked by
 * the auth middleware; hashed, so no token sits in a map or a log), else the remote address.
 */
export function clientOf(c: Context, byToken: boolean): string {
  const auth = c.req.header('authorization');
  if (byToken && auth?.startsWith('Bearer ')) {
    return `token:${createHash('sha256').update(auth.slice('Bearer '.length).trim()).digest('hex').slice(0, 16)}`;
  }
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  return `address:${incoming?.socket.remoteAddress ?? 'unknown'}`;
}

/** The upload body's chunks, read from the Node request itself (src/http/requestBody.ts). */
function bodyOf(c: Context): AsyncIterable<Uint8Array> {
  return requestBody(c).chunks;
}

/**
 * What an HTML form with a file or `curl -F` sends: the image is the form's file part
 * (formUpload.ts). Not application/x-www-form-urlencoded: `curl --data-binary @cat.jpg` labels raw
 * bytes so by default.
 */
const FORM_BODY = /^\s*multipart\/form-data\b/i;

/**
 * The upload's body and declared length: the raw body, or the file part of a form (whose length
 * is not the image's). A form without a file part is answered here with a 400 naming the fix.
 */
async function uploadBody(
  c: Context,
  images: ImageService,
): Promise<{ open: () => AsyncIterable<Uint8Array>; declaredLength?: number } | Response> {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (FORM_BODY.test(c.req.header('content-type') ?? '') && incoming) {
    // A follower redirects before a byte of the form is parsed.
    images.requireLeader();
    try {
      const file = await formFile(incoming);
      return { open: () => file };
    } catch (err) {
      if (!(err instanceof FormError)) throw err;
      c.header('connection', 'close');
      return jsonError(c, 400, 'InvalidForm', err.message);
    }
  }
  const length = c.req.header('content-length');
  const declaredLength = length !== undefined && /^\d+$/.test(length) ? Number(length) : undefined;
  return { open: () => bodyOf(c), ...(declaredLength !== undefined ? { declaredLength } : {}) };
}

export interface PublicRoutesOptions {
  /** Client tokens are on: the per-client upload caps count by token rather than by address. */
  clientsByToken?: boolean;
}

export function publicRoutes(images: ImageService, opts: PublicRoutesOptions = {}): Hono {
  const app = new Hono();

  const upload = async (c: Context, id: string) => {
    try {
      const body = await uploadBody(c, images);
      if (body instanceof Response) return body;
      const { created, object } = await images.upload(id, body.open, {
        ...(body.declaredLength !== undefined ? { declaredLength: body.declaredLength } : {}),
        client: clientOf(c, opts.clientsByToken ?? false),
      });
      c.header('location', `/v1/images/${encodeURIComponent(object.id)}`);
      c.header('etag', `"${object.sha256}"`);
      return c.json(toJson(object), created ? 201 : 200);
    } catch (err) {
      const refused = err instanceof ImageError && ADMISSION_REFUSALS.has(err.code);
      return mapError(c, err, { bodyRead: refused && (await drainRefusedBody(c)) });
    }
  };

  app.post('/v1/images', (c) => upload(c, images.newId()));
  app.put('/v1/images/:id', (c) => upload(c, c.req.param('id')));

  app.get('/v1/images', async (c) => {
    const query = listQuerySchema.safeParse(c.req.query());
    if (!query.success) return jsonError(c, 400, 'InvalidQuery', z.prettifyError(query.error));
    try {
      const page = await images.list(query.data);
      return c.json({ items: page.items.map(toJson), next: page.next });
    } catch (err) {
      return mapError(c, err);
    }
  });

  app.get('/v1/images/:id/meta', async (c) => {
    try {
      return c.json(toJson(await images.getMeta(c.req.param('id'))));
    } catch (err) {
      return mapError(c, err);
    }
  });

  // Hono answers HEAD through the GET route; the worker is asked with HEAD so no bytes move.
  app.get('/v1/images/:id', async (c) => {
    try {
      const id = c.req.param('id');
      const ifNoneMatch = c.req.header('if-none-match');
      let known: ObjectView | undefined;
      if (ifNoneMatch !== undefined) {
        // Revalidation is answered from the record alone: no worker is asked for bytes.
        known = await images.getMeta(id);
        if (etagListMatches(ifNoneMatch, known.sha256)) {
          return new Response(null, {
            status: 304,
            headers: {
              etag: `"${known.sha256}"`,
              'cache-control': IMAGE_CACHE_CONTROL,
              ...IMAGE_SAFETY_HEADERS,
            },
          });
        }
      }
      const method = c.req.method === 'HEAD' ? 'HEAD' : 'GET';
      let range = c.req.header('range');
      const ifRange = c.req.header('if-range');
      if (range !== undefined && ifRange !== undefined) {
        // Opened through this same record below, so the bytes sent are the ones compared.
        known ??= await images.getMeta(id);
        if (!ifRangeMatches(ifRange, known.sha256)) range = undefined;
      }
      if (method === 'GET' && range === undefined && c.req.query(DIRECT_QUERY) === '1') {
        // Opted into: the bytes go from a worker straight to the client (protocol/readLink.ts).
        known ??= await images.getMeta(id);
        const location = await images.readLink(known);
        if (location) {
          return new Response(null, {
            status: 307,
            headers: { location, etag: `"${known.sha256}"`, 'cache-control': 'no-store' },
          });
        }
      }
      // Where the answer is written, known: a small object's bytes may then come in a reused
      // buffer, handed back once that write is done (imageService.ts, OpenOptions.pooled).
      const outgoing = outgoingOf(c);
      const { object, response, body, bytes, release } = await images.open(id, {
        method,
        ...(range ? { range } : {}),
        ...(known ? { object: known } : {}),
        ...(outgoing ? { pooled: true } : {}),
      });
      if (response.statusCode === 416) {
        await response.body.dump();
        return rangeNotSatisfiable(c, object.size);
      }
      const headers = new Headers({
        'content-type': object.contentType,
        etag: `"${object.sha256}"`,
        'accept-ranges': 'bytes',
        'cache-control': IMAGE_CACHE_CONTROL,
        ...IMAGE_SAFETY_HEADERS,
      });
      for (const name of ['content-length', 'content-range']) {
        const value = response.headers[name];
        if (typeof value === 'string') headers.set(name, value);
      }
      if (method === 'HEAD') {
        await response.body.dump();
        return new Response(null, { status: response.statusCode, headers });
      }
      releaseWhenWritten(c, release);
      // A buffer is written to the socket as it is (@hono/node-server); a stream goes chunk by chunk.
      return new Response(bytes ?? webStreamOf(body), { status: response.statusCode, headers });
    } catch (err) {
      return mapError(c, err);
    }
  });

  app.delete('/v1/images/:id', async (c) => {
    try {
      await images.remove(c.req.param('id'));
      return c.body(null, 204);
    } catch (err) {
      return mapError(c, err);
    }
  });

  return app;
}
