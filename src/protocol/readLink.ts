// Direct reads: a manager that has read an image's record linearizably (ReadIndex) answers a client
// that asked for it with a short-lived link to a worker holding a copy, so the bytes go from the
// worker's disk to the client without passing through the manager. The link carries the record
// (size, sha256, CRC32C, content type), an expiry and, optionally, the other copy's link, and is
// signed with the worker's access credential, which only the managers and that worker hold (the
// cluster secret in single-secret mode, which every worker holds): the worker serves the blob only
// if its copy is the record's bytes, checked before the first byte is sent, and otherwise redirects
// to the other copy's link. The expiry is the manager's wall clock, checked against the worker's.
//
// A lost image (every copy the record names is gone) must get the answer a read through the manager
// gets, 500 Lost, not the last worker's 503. The manager cannot know when it signs: it has asked
// no worker (asking one per direct read is the round trip these reads exist to save), and only the
// leader keeps verdicts, found by its repair pass. The workers find out, one each, along the chain:
// the manager signs how many copies the record names when the chain covers all of them (`copies`),
// and a worker without the blob passes the count of such answers on in the next link's `gone`
// parameter. It is not signed (a worker holds no other worker's key), so it decides only which
// error the client reading that link gets: a client that alters it misleads itself, nothing else.

import { createHmac, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';
import { CRC32C_HEX_PATTERN } from './checksums.ts';

/** The worker's route for a direct read; the token is in the `t` query parameter. */
export const READ_LINK_ROUTE = '/direct/:id';
export const READ_LINK_QUERY = 't';
/** How many workers earlier in the chain answered they hold no such blob (unsigned, see above). */
export const READ_LINK_GONE_QUERY = 'gone';

/** How long a link is good for: enough to follow a redirect, not enough to be worth sharing. */
export const READ_LINK_TTL_MS = 60_000;

/**
 * How far a manager's clock may run ahead of a worker's before the worker refuses its links as
 * expiring too late: the expiry is the manager's wall clock, checked against the worker's, so
 * without this bound a manager whose clock is ahead would mint links good for as long as it is ahead.
 */
export const READ_LINK_CLOCK_SLACK_MS = 5 * 60_000;

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
  /**
   * How many copies the record names, when the chain of links covers every one: all of them found
   * missing is a lost image, as a read through the manager would find it.
   */
  copies: z.number().int().positive().max(16).optional(),
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

/** `gone` as a link carries it: a count no greater than the chain's copies, anything else 0. */
export function goneSoFar(value: string | undefined, claims: ReadLinkClaims): number {
  const n = /^\d{1,2}$/.test(value ?? '') ? Number(value) : 0;
  return claims.copies !== undefined && n < claims.copies ? n : 0;
}

/** The next link in the chain, carrying how many copies were found missing so far. */
export function passOn(next: string, gone: number): string {
  if (gone === 0) return next;
  const url = new URL(next);
  url.searchParams.set(READ_LINK_GONE_QUERY, String(gone));
  return url.toString();
}

/** The claims of a token signed with this worker's credential for `id` and that has not expired; else why not. */
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
  if (claims.exp < now) {
    const late = Math.ceil((now - claims.exp) / 1000);
    return { ok: false, why: `the link expired ${late} s ago; ask the manager again` };
  }
  if (claims.exp > now + READ_LINK_TTL_MS + READ_LINK_CLOCK_SLACK_MS) {
    const ahead = Math.ceil((claims.exp - now) / 1000);
    return {
      ok: false,
      why:
        `the link expires in ${ahead} s, later than the ${READ_LINK_TTL_MS / 1000} s a link is good for ` +
        `plus ${READ_LINK_CLOCK_SLACK_MS / 1000} s of clock slack: the manager's and this worker's clocks disagree`,
    };
  }
  return { ok: true, claims };
}
