// What every answer carrying an image's bytes says, whoever sends it: a manager, or a worker
// serving a direct read (readLink.ts).

/**
 * An id can be deleted and uploaded again with other bytes, so a cached image must be revalidated
 * before each use; revalidation is cheap (a 304 from the record, see the manager's GET route).
 */
export const IMAGE_CACHE_CONTROL = 'private, no-cache';

/**
 * Bytes stored are whatever a client sent behind a valid magic number: a PNG header followed by
 * HTML must never be sniffed into a page, nor run script if opened as a document.
 */
export const IMAGE_SAFETY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'content-security-policy': "default-src 'none'; sandbox",
} as const;
