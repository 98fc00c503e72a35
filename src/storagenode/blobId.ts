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
 * `blobs/ab/<id>` relative to the data folder, with `ab` the first byte of sha256(id). The 256
 * folders are made once, with the data folder, so a new blob never waits for a new folder to be
 * made durable. Ten million blobs put about 40,000 names in a folder, which ext4 and XFS index
 * (hashed B-trees): a lookup or a rename stays logarithmic. (Data folders of the earlier two-level
 * layout, `blobs/ab/cd/<id>`, are moved to this one when opened: see blobLayout.ts.) Throws on an
 * invalid id: a caller that reaches here without validating has a bug, and no path may be built
 * from such input.
 */
export function blobRelativePath(id: string): string {
  if (!isValidBlobId(id))
    throw new Error(`refusing to build a path from an invalid blob id: ${JSON.stringify(id)}`);
  return path.join('blobs', blobFolderOf(id), id);
}

/** The `blobs/` sub-folder (two hex digits) a valid id's file lives in. */
export function blobFolderOf(id: string): string {
  return createHash('sha256').update(id).digest('hex').slice(0, 2);
}
