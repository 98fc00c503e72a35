// The S3 endpoint: its own listener per manager (path-style, so it cannot collide with /v1 and the
// dashboard on the main port). Every manager verifies signatures itself (the keys are replicated)
// and decodes aws-chunked bodies; the leader runs the operation, and a follower forwards the
// verified, decoded request to the leader over the cluster secret, because S3 clients do not
// reliably follow a 307 for a PUT. A forward that fails (the leader died, or froze and another
// leads now) is a 503, which every S3 client retries, by then against the new leader.

import { randomBytes } from 'node:crypto';
import type { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import { serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { request } from 'undici';
import { clientGoneSignal } from '../../http/clientGone.ts';
import { CLUSTER_SECRET_HEADER } from '../../http/clusterAuth.ts';
import type { ManagerCredentials } from '../../http/credentials.ts';
import { outgoingOf } from '../../http/readBuffers.ts';
import { webStreamOf } from '../../http/webStream.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import { type RaftAccess, raftFailure } from '../imageService.ts';
import type { LeaderWait, LiveLeader } from '../leaderWait.ts';
import { decodeAwsChunked } from './awsChunked.ts';
import { errorResponse, S3Error } from './s3Errors.ts';
import { type S3Request, splitPath } from './s3Request.ts';
import { runS3Request, type S3Deps } from './s3Router.ts';
import { parseQuery, verifySigV4 } from './sigV4.ts';

/** The path prefix of forwarded S3 requests on the main port. */
export const S3_FORWARD_PREFIX = '/internal/s3';
const CLIENT_HEADER = 'x-imgvault-s3-client';
const SHA256_HEADER = 'x-imgvault-s3-sha256';
const REQUEST_ID_HEADER = 'x-imgvault-s3-request-id';
/** Headers an operation reads; the rest (signature, hop-by-hop) stay at the edge. */
const FORWARDED = [
  'content-type',
  'content-md5',
  'range',
  'if-range',
  'x-amz-copy-source',
  'x-amz-metadata-directive',
];

export interface S3EndpointDeps extends S3Deps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  /** What this manager presents when it forwards to the leader, and checks when forwarded to. */
  credentials: ManagerCredentials;
  selfId: string;
  /** A follower forwards only to a leader known to be alive, waiting for one (leaderWait.ts). */
  leaderWait?: LeaderWait;
}

function headersOf(incoming: IncomingMessage): Headers {
  const headers = new Headers();
  const raw = incoming.rawHeaders;
  for (let i = 0; i + 1 < raw.length; i += 2) headers.append(raw[i]!.toLowerCase(), raw[i + 1]!);
  return headers;
}

function splitUrl(url: string): { rawPath: string; rawQuery: string } {
  const q = url.indexOf('?');
  return q < 0 ? { rawPath: url, rawQuery: '' } : { rawPath: url.slice(0, q), rawQuery: url.slice(q + 1) };
}

const hasBody = (method: string) => method === 'PUT' || method === 'POST';

/** A key that a follower has not applied yet is read again after a ReadIndex. */
function secretLookup(deps: S3EndpointDeps) {
  return async (accessKeyId: string): Promise<string | null> => {
    const local = await deps.metadata.getS3Key(accessKeyId);
    if (local !== null) return local.secretAccessKey;
    await deps.raft.readIndex().catch(raftFailure);
    return (await deps.metadata.getS3Key(accessKeyId))?.secretAccessKey ?? null;
  };
}

async function verifiedRequest(deps: S3EndpointDeps, c: Context, requestId: string): Promise<S3Request> {
  const incoming = (c.env as { incoming: IncomingMessage }).incoming;
  const { rawPath, rawQuery } = splitUrl(incoming.url ?? '/');
  const headers = headersOf(incoming);
  const method = incoming.method ?? 'GET';
  const verified = await verifySigV4({ method, rawPath, rawQuery, headers }, secretLookup(deps));
  let body: AsyncIterable<Uint8Array> | null = hasBody(method) ? incoming : null;
  if (body !== null && verified.payload.kind === 'streaming') {
    body = decodeAwsChunked(body, verified.payload.seed);
    const decoded = headers.get('x-amz-decoded-content-length');
    if (decoded !== null) headers.set('content-length', decoded);
    else headers.delete('content-length');
  }
  return {
    method,
    ...splitPath(rawPath),
    query: parseQuery(rawQuery),
    headers,
    body,
    ...(verified.payload.kind === 'sha256' ? { declaredSha256: verified.payload.sha256 } : {}),
    client: verified.accessKeyId,
    requestId,
    resource: rawPath,
    outgoing: outgoingOf(c),
  };
}

function forwardHeaders(req: S3Request, credential: string): Record<string, string> {
  const out: Record<string, string> = {
    [CLUSTER_SECRET_HEADER]: credential,
    [CLIENT_HEADER]: req.client,
    [REQUEST_ID_HEADER]: req.requestId,
  };
  if (req.declaredSha256 !== undefined) out[SHA256_HEADER] = req.declaredSha256;
  for (const [name, value] of req.headers) {
    if (FORWARDED.includes(name) || name.startsWith('x-amz-meta-')) out[name] = value;
  }
  const length = req.headers.get('content-length');
  if (req.body !== null && length !== null) out['content-length'] = length;
  return out;
}

/**
 * Where a follower's request goes: with a LeaderWait, a leader known to be alive (this node, if it
 * came to lead meanwhile), after waiting for one; else the leader this node knows.
 */
async function leaderToServe(deps: S3EndpointDeps, gone?: AbortSignal): Promise<LiveLeader> {
  if (deps.leaderWait?.holds()) {
    const outcome = await deps.leaderWait.until(deps.leaderWait.deadlineFromNow(), gone);
    if (!outcome.ok) throw new S3Error('ServiceUnavailable', outcome.message);
    return outcome.leader;
  }
  const leader = deps.raft.leaderInfo();
  if (!leader?.url) throw new S3Error('ServiceUnavailable', 'no leader is known right now; retry shortly');
  return { self: false, id: leader.id, url: leader.url };
}

/** Sends the verified request to the leader's main port and relays its answer. */
async function forward(
  deps: S3EndpointDeps,
  req: S3Request,
  rawUrl: string,
  leader: { id: string; url: string },
): Promise<Response> {
  let res: Awaited<ReturnType<typeof request>>;
  const replaced = deps.leaderWait?.replaced(leader.id);
  try {
    res = await request(`${leader.url}${S3_FORWARD_PREFIX}${rawUrl}`, {
      method: req.method as 'GET',
      headers: forwardHeaders(req, deps.credentials.raftCredential(deps.selfId, leader.id)),
      ...(req.body !== null ? { body: Readable.from(req.body) } : {}),
      headersTimeout: 120_000,
      bodyTimeout: 120_000,
      ...(replaced ? { signal: replaced.signal } : {}),
    });
  } catch (err) {
    if (err instanceof S3Error) throw err;
    if (replaced?.signal.aborted) {
      throw new S3Error(
        'ServiceUnavailable',
        `the leader ${leader.id} stopped answering and another leads now; retry shortly`,
      );
    }
    throw new S3Error('ServiceUnavailable', 'the leader did not answer; retry shortly');
  } finally {
    replaced?.stop();
  }
  const headers = new Headers();
  for (const [name, value] of Object.entries(res.headers)) {
    if (typeof value === 'string' && !['connection', 'transfer-encoding', 'keep-alive'].includes(name)) {
      headers.set(name, value);
    }
  }
  const empty = req.method === 'HEAD' || res.statusCode === 204 || res.statusCode === 304;
  if (empty) await res.body.dump();
  return new Response(empty ? null : webStreamOf(res.body), { status: res.statusCode, headers });
}

function failure(err: unknown, resource: string, requestId: string, method: string): Response {
  const s3 = err instanceof S3Error ? err : new S3Error('InternalError', 'internal error');
  const res = errorResponse(s3, resource, requestId, method);
  // The body of a refused PUT may be unread: the client must not reuse this connection.
  if (hasBody(method)) res.headers.set('connection', 'close');
  return res;
}

/** The app on the S3 port. */
export function s3EdgeApp(deps: S3EndpointDeps): Hono {
  const app = new Hono();
  app.all('*', async (c) => {
    const requestId = randomBytes(8).toString('hex').toUpperCase();
    const incoming = (c.env as { incoming: IncomingMessage }).incoming;
    let req: S3Request;
    try {
      req = await verifiedRequest(deps, c, requestId);
    } catch (err) {
      return failure(err, splitUrl(incoming.url ?? '/').rawPath, requestId, incoming.method ?? 'GET');
    }
    if (deps.raft.isLeader()) return runS3Request(deps, req);
    try {
      const gone = clientGoneSignal(c.env);
      const leader = await leaderToServe(deps, gone);
      // The client hung up while held: serving or forwarding it would only cost work.
      if (gone?.aborted) throw new S3Error('ServiceUnavailable', 'the client closed the connection');
      if (leader.self) return runS3Request(deps, req);
      return await forward(deps, req, incoming.url ?? '/', leader);
    } catch (err) {
      return failure(err, req.resource, requestId, req.method);
    }
  });
  return app;
}

/** Forwarded requests, on the main port: a manager's raft credential stands for the checked signature. */
export function s3ForwardRoutes(deps: S3EndpointDeps): Hono {
  const app = new Hono();
  app.all(`${S3_FORWARD_PREFIX}/*`, async (c) => {
    const incoming = (c.env as { incoming: IncomingMessage }).incoming;
    const requestId = c.req.header(REQUEST_ID_HEADER) ?? randomBytes(8).toString('hex').toUpperCase();
    const { rawPath, rawQuery } = splitUrl((incoming.url ?? '').slice(S3_FORWARD_PREFIX.length));
    if (deps.credentials.authenticate(c.req.header(CLUSTER_SECRET_HEADER), ['raft'], deps.selfId) === null) {
      return failure(
        new S3Error('AccessDenied', "forwarded S3 requests need a manager's raft credential"),
        rawPath,
        requestId,
        c.req.method,
      );
    }
    let req: S3Request;
    try {
      const sha256 = c.req.header(SHA256_HEADER);
      req = {
        method: c.req.method,
        ...splitPath(rawPath),
        query: parseQuery(rawQuery),
        headers: headersOf(incoming),
        body: hasBody(c.req.method) ? incoming : null,
        ...(sha256 !== undefined ? { declaredSha256: sha256 } : {}),
        client: c.req.header(CLIENT_HEADER) ?? 'unknown',
        requestId,
        resource: rawPath,
        outgoing: outgoingOf(c),
      };
    } catch (err) {
      return failure(err, rawPath, requestId, c.req.method);
    }
    return runS3Request(deps, req);
  });
  return app;
}

/** Listens on `port` of `host` with the edge app; resolves once listening. */
export async function listenS3(
  deps: S3EndpointDeps,
  host: string,
  port: number,
): Promise<{ port: number; close: () => Promise<void> }> {
  const app = s3EdgeApp(deps);
  const server = serve({ fetch: app.fetch, hostname: host, port });
  await new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', reject);
  });
  const address = server.address();
  return {
    port: typeof address === 'object' && address !== null ? address.port : port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        (server as { closeAllConnections?: () => void }).closeAllConnections?.();
      }),
  };
}
