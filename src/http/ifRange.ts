// RFC 9110 13.1.5 If-Range: a Range request is served as a range only while the representation is
// still the one the client holds; otherwise the whole current representation is sent (200), so a
// resumed download never splices the bytes of two images.

/**
 * Whether `ifRange` (the header's value) lets a Range apply to content whose etag is `"<sha256>"`.
 * Only a strong, equal entity tag matches: a weak tag never does (strong comparison), and neither
 * does a date, since neither route has a strong Last-Modified (an id can be uploaded again within
 * the same second, and a name's Last-Modified is the file's own mtime, which new bytes may share).
 */
export function ifRangeMatches(ifRange: string, sha256: string): boolean {
  return ifRange.trim() === `"${sha256}"`;
}
