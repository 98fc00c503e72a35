import { createHash } from 'node:crypto';
import path from 'node:path';

import { OBJECT_ID_PATTERN } from '../protocol/ids.ts';

export { SHA256_HEX_PATTERN } from '../protocol/ids.ts';

/** A blob is stored under its object's id: one safe file name (protocol/ids.ts says why). */
export const BLOB_ID_PATTERN = OBJECT_ID_PATTERN;

export function isValidBlobId(id: unknown): id is string {
  return typeof id === 'string' && BLOB_ID_PATTERN.test(id);
}

/**
 * `blobs/ab/cd/<id>` relative to the data folder, with `ab/cd` the first two bytes of sha256(id).
 * Two levels of 256 spread ten million blobs at about 150 per folder. Throws on an invalid id: a
 * caller that reaches here without validating has a bug, and no path may be built from such input.
 */
export function blobRelativePath(id: string): string {
  if (!isValidBlobId(id))
    throw new Error(`refusing to build a path from an invalid blob id: ${JSON.stringify(id)}`);
  const digest = createHash('sha256').update(id).digest('hex');
  return path.join('blobs', digest.slice(0, 2), digest.slice(2, 4), id);
}
