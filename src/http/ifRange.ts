// RFC 9110 13.1.5 If-Range: a Range request is served as a range only while the representation is
// still the one the client holds; otherwise the whole current representation is sent (200), so a
// resumed download never splices the bytes of two images.

import type { Context } from 'hono';
import { jsonError } from './errors.ts';

/**
 * Whether `ifRange` (the header's value) lets a Range apply to content whose etag is `"<sha256>"`.
 * Only a strong, equal entity tag matches: a weak tag never does (strong comparison), and neither
 * does a date, since neither route has a strong Last-Modified (an id can be uploaded again within
 * the same second, and a name's Last-Modified is the file's own mtime, which new bytes may share).
 */
export function ifRangeMatches(ifRange: string, sha256: string): boolean {
  return ifRange.trim() === `"${sha256}"`;
}

/** RFC 9110 15.5.17: a range with no byte of the content gets 416, its content-range naming the size. */
export function rangeNotSatisfiable(c: Context, size: number): Response {
  c.header('content-range', `bytes */${size}`);
  return jsonError(c, 416, 'RangeNotSatisfiable', `no byte of the requested range is in 0-${size - 1}`);
}
