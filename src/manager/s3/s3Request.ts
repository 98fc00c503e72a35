// One S3 request as the operations see it, once its signature is checked (or, forwarded by another
// manager, its cluster secret): path-style bucket and key, decoded query, headers, decoded body.

import type { ServerResponse } from 'node:http';
import { S3Error } from './s3Errors.ts';

export interface S3Request {
  method: string;
  /** null: the service (ListBuckets). */
  bucket: string | null;
  /** null: the bucket itself. */
  key: string | null;
  query: Record<string, string | string[]>;
  headers: Headers;
  /** The payload, decoded from aws-chunked when it was; null for a request without one. */
  body: AsyncIterable<Uint8Array> | null;
  /** The sha256 the client signed for the payload, when it signed one. */
  declaredSha256?: string;
  /** Whom the upload caps count against: the access key. */
  client: string;
  requestId: string;
  /** The path as sent, for error documents. */
  resource: string;
  /**
   * Where the answer is written, when known (served by @hono/node-server): an object's bytes may
   * then come in a reused buffer, handed back once that write is done (http/readBuffers.ts).
   */
  outgoing?: ServerResponse | undefined;
}

/** `/bucket/key/with/slashes` (percent-encoded) -> bucket and decoded key. */
export function splitPath(rawPath: string): { bucket: string | null; key: string | null } {
  const path = rawPath.replace(/^\/+/, '');
  if (path === '') return { bucket: null, key: null };
  const slash = path.indexOf('/');
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      throw new S3Error('InvalidArgument', 'the path is not valid percent-encoding');
    }
  };
  if (slash < 0 || slash === path.length - 1) return { bucket: decode(path.replace(/\/$/, '')), key: null };
  return { bucket: decode(path.slice(0, slash)), key: decode(path.slice(slash + 1)) };
}

export function queryValue(q: S3Request['query'], name: string): string | undefined {
  const v = q[name];
  return Array.isArray(v) ? v[0] : v;
}

export function has(q: S3Request['query'], name: string): boolean {
  return q[name] !== undefined;
}
