// Syncs that fail under a PUT: the early fdatasync of a blob received alone and written through
// the page cache (its first batches, synced while the rest arrives), and the folder fsync that the index batch runs beside. Either
// fails the blob alone, and leaves no file, no temp file and no index entry behind. (A failed sync
// may consume the file's error, so a later fsync that succeeds proves nothing.)

import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { beforeEach, expect, it, vi } from 'vitest';
import type { BlobStore } from '../../src/storagenode/blobStore.ts';
import { sha256Of, useBlobStoreFolder } from './workerHarness.ts';

/** Which syncs fail next with EIO: the next fdatasync, or the next fsync of a folder. */
const failing = vi.hoisted(() => ({ fdatasync: false, folderFsync: false }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const eio = (call: string) => Object.assign(new Error(`EIO: i/o error, ${call}`), { code: 'EIO' });
  const fdatasync = (fd: number, callback: (err: Error | null) => void) => {
    if (!failing.fdatasync) return real.fdatasync(fd, callback);
    failing.fdatasync = false;
    real.fdatasync(fd, () => callback(eio('fdatasync')));
  };
  const fsync = (fd: number, callback: (err: Error | null) => void) => {
    if (!(failing.folderFsync && real.fstatSync(fd).isDirectory())) return real.fsync(fd, callback);
    failing.folderFsync = false;
    real.fsync(fd, () => callback(eio('fsync')));
  };
  return { ...real, default: { ...real, fdatasync, fsync }, fdatasync, fsync };
});

const folder = useBlobStoreFolder();
let store: BlobStore;
beforeEach(async () => {
  failing.fdatasync = false;
  failing.folderFsync = false;
  store = await folder.open();
});

/** Over two write batches, in socket-sized chunks: a blob written alone syncs its first batch early. */
const big = Buffer.alloc(1024 * 1024 + 7, 3);
const chunks = (bytes: Buffer) =>
  Readable.from(
    Array.from({ length: Math.ceil(bytes.length / 65536) }, (_, i) =>
      bytes.subarray(i * 65536, (i + 1) * 65536),
    ),
  );

async function nothingLeft(id: string): Promise<void> {
  expect((await store.stat(id)).ok).toBe(false);
  expect(await readdir(store.tmpDir)).toEqual([]);
  expect(await readdir(path.dirname(store.blobPath(id)))).toEqual([]);
  expect(store.counters()).toEqual({ blobCount: 0, blobBytes: 0, reservedBytes: 0 });
}

/** Writes the big blob with one sync failing, and checks it failed alone and left nothing. */
async function writeFailing(id: string, which: keyof typeof failing): Promise<void> {
  failing[which] = true;
  const res = await store.writeAtomically(id, chunks(big), sha256Of(big), 4 << 20);
  // The hazard was there: the sync ran, and failed.
  expect(failing[which]).toBe(false);
  expect(res.ok).toBe(false);
  await nothingLeft(id);
}

it('fails a blob whose early sync failed, though its last fsync succeeds, and keeps nothing of it', async () => {
  // Early syncs are the buffered writes' (a direct write's batches are on the disk already).
  await folder.close(store);
  store = await folder.open({ directWrites: false });
  await writeFailing('early', 'fdatasync');
  // The next write is unaffected.
  const again = await store.writeAtomically('early', chunks(big), sha256Of(big), 4 << 20);
  expect(again.ok && again.value.status).toBe('created');
});

it('fails a blob whose folder fsync failed and takes back the index entry written beside it', async () => {
  await writeFailing('folder', 'folderFsync');
  // Still out of the index after a reopen: the entry's removal was synced.
  await folder.close(store);
  store = await folder.open();
  expect((await store.stat('folder')).ok).toBe(false);
  expect(store.startupReport.missingDropped).toBe(0);
});
