// A temp file whose close(2) reports an error during a group commit. Linux frees the descriptor
// even then, so its number can be handed to the next file opened: a second close of that number
// would close someone else's file. The blob fails alone; the rest of its group is unaffected.

import * as realFs from 'node:fs';
import { openSync } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, expect, it, vi } from 'vitest';
import { BlobStore, type ReceivedBlob } from '../../src/storagenode/blobStore.ts';
import { makeDataDir, removeDir, sha256Of } from './workerHarness.ts';

/** The next closeSync of `fd` closes it, runs `after` (which may throw), as a failing close(2) would. */
const failingClose = vi.hoisted(() => ({ fd: -1, after: null as null | ((fd: number) => void) }));
vi.mock('node:fs', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:fs')>();
  const closeSync = (fd: number) => {
    const after = failingClose.after;
    if (after && fd === failingClose.fd) {
      failingClose.after = null;
      real.closeSync(fd);
      after(fd);
      return;
    }
    real.closeSync(fd);
  };
  return { ...real, default: { ...real, closeSync }, closeSync };
});

let dataDir: string;
let store: BlobStore;
beforeEach(async () => {
  dataDir = await makeDataDir();
  store = await BlobStore.open(dataDir);
});
afterEach(async () => {
  failingClose.after = null;
  await store.close();
  await removeDir(dataDir);
});

async function receiveTwo(): Promise<ReceivedBlob[]> {
  const blobs: ReceivedBlob[] = [];
  for (const [id, body] of [
    ['a1', Buffer.from('aaaa')],
    ['b1', Buffer.from('bbbbbbbb')],
  ] as const) {
    const r = await store.receive(id, Readable.from([body]), sha256Of(body), 1 << 20);
    if (!r.ok || r.value.kind !== 'received') throw new Error(`receive ${id} failed`);
    blobs.push(r.value.blob);
  }
  return blobs;
}

it('fails the blob whose close failed, commits the rest, and never closes its descriptor number again', async () => {
  const blobs = await receiveTwo();
  let reused = -1;
  failingClose.fd = await blobs[0]!.temp.opened;
  failingClose.after = () => {
    // Another file opened right after takes the freed number.
    reused = openSync(path.join(dataDir, 'unrelated'), 'w');
    throw Object.assign(new Error('EIO: i/o error, close'), { code: 'EIO' });
  };
  const outcomes = await store.commitReceived(blobs);
  // The hazard was there to be hit: the failed close's number went to the unrelated file.
  expect(reused).toBe(failingClose.fd);
  expect(outcomes.map((o) => o.ok)).toEqual([false, true]);
  // Still open: nothing closed the number a second time.
  expect(realFs.fstatSync(reused).isFile()).toBe(true);
  realFs.closeSync(reused);
  expect((await store.stat('a1')).ok).toBe(false);
  expect((await store.stat('b1')).ok).toBe(true);
  expect(store.counters()).toEqual({ blobCount: 1, blobBytes: 8, reservedBytes: 0 });
});
