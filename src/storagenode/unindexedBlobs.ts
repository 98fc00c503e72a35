// After an unclean stop, the blob files the index does not name: a blob renamed into place whose
// unsynced index batch a power cut lost (blobStore.ts, write protocol). Its trailer (blobTrailer.ts)
// says what it holds; its bytes are checked against the trailer before it is indexed again, so a
// file that would read back wrong is never served. One readdir per blob folder and one index lookup
// per name, about the cost of the stat per entry every start already pays.

import fs from 'node:fs/promises';
import path from 'node:path';
import { fsyncPath } from '../fileWrites.ts';
import type { Logger } from '../logging.ts';
import { Crc32c } from '../protocol/checksums.ts';
import { isValidBlobId } from './blobId.ts';
import type { BlobEntry, BlobIndex } from './blobIndex.ts';
import { hashBlobBytes, readTrailer } from './blobTrailer.ts';

export interface UnindexedReport {
  unindexedAdopted: number;
  unindexedRemoved: number;
}

/**
 * Indexes every blob file under `blobsDir` the index lacks whose trailer is intact and whose bytes
 * match it (its folder fsynced first: the crash may have come before the rename was made durable),
 * and removes those whose bytes do not match their trailer. Only that is removed: the walk is the
 * only way back to a blob whose index entry a power cut lost, so a file that cannot be read now
 * (EIO, EMFILE, EACCES) is left for the next unclean start, logged, and so is a file without an
 * intact trailer (nothing vouches for its bytes, and no crash of this protocol leaves one: every
 * file is fsynced, trailer included, before its rename). Anything but a regular file is skipped.
 * An unindexed file is never served.
 */
export async function adoptUnindexedBlobs(
  blobsDir: string,
  index: BlobIndex,
  log: Logger,
): Promise<UnindexedReport> {
  const report: UnindexedReport = { unindexedAdopted: 0, unindexedRemoved: 0 };
  const folders = (await fs.readdir(blobsDir, { withFileTypes: true }))
    .filter((e) => e.isDirectory() && /^[0-9a-f]{2}$/.test(e.name))
    .map((e) => path.join(blobsDir, e.name));
  for (const folder of folders) {
    const found: BlobEntry[] = [];
    let removed = false;
    for (const entry of await fs.readdir(folder, { withFileTypes: true })) {
      const name = entry.name;
      if (!entry.isFile() || !isValidBlobId(name) || index.getSync(name) !== undefined) continue;
      const file = path.join(folder, name);
      const verdict = await checkAgainstTrailer(file).catch((err: unknown) => {
        log.error(
          { event: 'storage.unindexed_unreadable', objectId: name, err },
          'blob file with no index entry could not be read; left for the next unclean start',
        );
        return 'unreadable' as const;
      });
      if (verdict === 'unreadable') continue;
      if (verdict === 'noTrailer') {
        log.warn(
          { event: 'storage.unindexed_unknown', objectId: name },
          'blob file with no index entry and no intact trailer; left alone',
        );
      } else if (verdict === 'bad') {
        log.error(
          { event: 'storage.unindexed_removed', objectId: name },
          'unindexed blob file does not match its trailer; removed',
        );
        await fs.rm(file, { force: true });
        removed = true;
        report.unindexedRemoved += 1;
      } else {
        found.push({ id: name, ...verdict });
      }
    }
    if (found.length === 0 && !removed) continue;
    await fsyncPath(folder);
    if (found.length === 0) continue;
    await index.record(found, { sync: true });
    report.unindexedAdopted += found.length;
    for (const { id } of found) {
      log.warn(
        { event: 'storage.unindexed_adopted', objectId: id },
        'indexed a blob file an unclean stop left unnamed',
      );
    }
  }
  return report;
}

/**
 * The record a file's intact trailer names, if its bytes match it; 'bad' only when they were read
 * whole and do not. Throws on an I/O error: that says nothing about the bytes.
 */
async function checkAgainstTrailer(
  file: string,
): Promise<{ size: number; sha256: string; crc32c: string } | 'noTrailer' | 'bad'> {
  const { record } = readTrailer(file);
  if (record === null) return 'noTrailer';
  const crc = new Crc32c();
  await hashBlobBytes(file, record.size, crc);
  return crc.hex() === record.crc32c ? record : 'bad';
}
