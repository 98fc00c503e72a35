// Direct reads: a manager that has read an image's record linearizably (ReadIndex) answers a client
// that asked for it with a short-lived link to a worker holding a copy, so the bytes go from the
// worker's disk to the client without passing through the manager. The link carries the record
// (size, sha256, CRC32C, content type), an expiry and, optionally, the other copy's link, and is
// signed with a key only the managers and that worker hold (derived from the worker's access
// credential): the worker serves the blob only if its copy is the record's bytes, checked before
// the first byte is sent, and otherwise redirects to the other copy's link.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { CRC32C_HEX_PATTERN } from './checksums.ts';

/** The worker's route for a direct read; the token is in the `t` query parameter. */
export const READ_LINK_ROUTE = '/direct/:id';
export const READ_LINK_QUERY = 't';

/** How long a link is good for: enough to follow a redirect, not enough to be worth sharing. */
export const READ_LINK_TTL_MS = 60_000;

const claimsSchema = z.object({
  id: z.string().min(1).max(200),
  size: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  crc32c: z.string().regex(CRC32C_HEX_PATTERN).optional(),
  contentType: z.string().min(1).max(255),
  /** Expiry, ms since 1970. */
  exp: z.number().int().positive(),
  /** The other copy's link, where the worker sends the client when its own copy cannot be served. */
  next: z.url().max(4096).optional(),
});

export type ReadLinkClaims = z.infer<typeof claimsSchema>;

function signature(credential: string, payload: string): Buffer {
  // Domain-separated, so a link's MAC is never a value any other use of the credential produces.
  return createHmac('sha256', credential).update(`imgvault/read-link/v1/${payload}`).digest();
}

/** The token for `claims`, signed with the credential of the worker it is for. */
export function signReadLink(credential: string, claims: ReadLinkClaims): string {
  const payload = Buffer.from(JSON.stringify(claims)).toString('base64url');
  return `${payload}.${signature(credential, payload).toString('base64url')}`;
}

/** The link to `id` on the worker at `workerUrl`. */
export function readLinkUrl(workerUrl: string, credential: string, claims: ReadLinkClaims): string {
  const url = new URL(READ_LINK_ROUTE.replace(':id', encodeURIComponent(claims.id)), workerUrl);
  url.searchParams.set(READ_LINK_QUERY, signReadLink(credential, claims));
  return url.toString();
}

/** The claims of a token this worker signed for `id` and that has not expired; else why not. */
export function verifyReadLink(
  credential: string,
  token: string | undefined,
  id: string,
  now: number,
): { ok: true; claims: ReadLinkClaims } | { ok: false; why: string } {
  if (!token) return { ok: false, why: `the link has no ${READ_LINK_QUERY} parameter` };
  const dot = token.indexOf('.');
  if (dot <= 0) return { ok: false, why: 'the link token is malformed' };
  const payload = token.slice(0, dot);
  const given = Buffer.from(token.slice(dot + 1), 'base64url');
  const expected = signature(credential, payload);
  if (given.length !== expected.length || !timingSafeEqual(given, expected))
    return { ok: false, why: 'the link is not signed for this worker' };
  let parsed: ReturnType<typeof claimsSchema.safeParse>;
  try {
    parsed = claimsSchema.safeParse(JSON.parse(Buffer.from(payload, 'base64url').toString('utf8')));
  } catch {
    return { ok: false, why: 'the link token is malformed' };
  }
  if (!parsed.success) return { ok: false, why: 'the link token is malformed' };
  const claims = parsed.data;
  if (claims.id !== id) return { ok: false, why: `the link is for another image than ${id}` };
  if (claims.exp < now) return { ok: false, why: 'the link has expired; ask the manager again' };
  return { ok: true, claims };
}
