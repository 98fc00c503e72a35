// A worker whose disk filled up must still start: its index's LevelDB writes as it opens (a table
// from the last run's log, a new MANIFEST) and failed with ENOSPC, so the worker stayed down and the
// leader repaired every copy it held elsewhere. The store keeps a reserve file and releases it to
// open (src/diskReserve.ts); the worker serves reads and answers 507 to writes until
// the reserve is made again, once there is room. A real tmpfs filled to the brim; skipped where mounting
// needs a privilege the runner lacks (as diskFull.test.ts).

import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { RESERVE_FILE } from '../../src/diskReserve.ts';
import { RESERVE_BYTES } from '../../src/storagenode/blobStore.ts';
import { until } from '../helpers/until.ts';
import {
  AUTH,
  fillDisk,
  type JsonAnswer,
  type RunningWorker,
  sha256Of,
  smallDiskForSuite,
  startWorker,
} from './workerHarness.ts';

const disk = smallDiskForSuite('24m');

const reserveSize = async (dataDir: string) =>
  (await stat(path.join(dataDir, RESERVE_FILE)).catch(() => null))?.size ?? 0;

function put(w: RunningWorker, id: string, bytes: Buffer) {
  return request(`${w.url}/blobs/${id}`, {
    method: 'PUT',
    body: bytes,
    headers: { ...AUTH, 'x-imgvault-sha256': sha256Of(bytes), 'content-length': String(bytes.length) },
  });
}

/** The filler removed: the next look at the disk (each heartbeat's) makes the reserve, and blobs come. */
async function roomAgain(w: RunningWorker, dataDir: string, filler: string): Promise<void> {
  await rm(filler);
  await until('the reserve made again', async () => (await w.store.stats()).diskFreeBytes > 0, 10_000);
  expect(await reserveSize(dataDir)).toBe(RESERVE_BYTES);
  const taken = await put(w, 'new', Buffer.alloc(64 * 1024, 7));
  expect(taken.statusCode).toBe(201);
  await taken.body.dump();
}

describe('a worker on a full disk', () => {
  it('starts by releasing its disk reserve, serves reads, takes no new blob until the reserve is made again', async (ctx) => {
    if (!disk.mounted) ctx.skip();
    const dataDir = path.join(disk.dir, 'data');
    const filler = path.join(disk.dir, 'filler');
    const kept = Buffer.from('an image the worker held before its disk filled up');
    let w = await startWorker(dataDir, { diskReserveBytes: RESERVE_BYTES });
    try {
      // Made when the folder is set up.
      expect(await reserveSize(dataDir)).toBe(RESERVE_BYTES);
      const stored = await put(w, 'kept', kept);
      expect(stored.statusCode).toBe(201);
      await stored.body.dump();
    } finally {
      await w.stop();
    }

    await fillDisk(filler);
    w = await startWorker(dataDir, { diskReserveBytes: RESERVE_BYTES });
    try {
      expect(await reserveSize(dataDir)).toBe(0);
      const read = await request(`${w.url}/blobs/kept`, { headers: AUTH });
      expect(read.statusCode).toBe(200);
      expect(Buffer.from(await read.body.arrayBuffer())).toEqual(kept);
      // What the release freed stays the index's: no new blob, and none placed here meanwhile.
      const refused = await put(w, 'new', Buffer.alloc(64 * 1024, 7));
      expect(refused.statusCode).toBe(507);
      const answer = (await refused.body.json()) as JsonAnswer;
      expect(answer.error.code).toBe('InsufficientStorage');
      expect(answer.error.message).toContain('disk reserve');
      expect((await w.store.stats()).diskFreeBytes).toBe(0);
      // A restart on the disk still full opens in the room the release left.
      await w.stop();
      w = await startWorker(dataDir, { diskReserveBytes: RESERVE_BYTES });
      const again = await request(`${w.url}/blobs/kept`, { headers: AUTH });
      expect(again.statusCode).toBe(200);
      await again.body.dump();
      await roomAgain(w, dataDir, filler);
    } finally {
      await w.stop();
    }
  });

  it('notices a reserve deleted by hand while it runs: no new blob until the disk has room for it again', async (ctx) => {
    if (!disk.mounted) ctx.skip();
    // The small disk to itself: another test's folder would leave no room for a second reserve.
    for (const entry of await readdir(disk.dir)) await rm(path.join(disk.dir, entry), { recursive: true });
    const dataDir = path.join(disk.dir, 'deleted');
    const filler = path.join(disk.dir, 'filler-deleted');
    const w = await startWorker(dataDir, { diskReserveBytes: RESERVE_BYTES });
    try {
      expect(await reserveSize(dataDir)).toBe(RESERVE_BYTES);
      await fillDisk(filler);
      // The operator frees space by deleting the reserve; the next look at the disk notices.
      await rm(path.join(dataDir, RESERVE_FILE));
      await until('the reserve seen gone', async () => (await w.store.stats()).diskFreeBytes === 0, 10_000);
      const refused = await put(w, 'new', Buffer.alloc(64 * 1024, 7));
      expect(refused.statusCode).toBe(507);
      expect(((await refused.body.json()) as JsonAnswer).error.message).toContain('disk reserve');
      await roomAgain(w, dataDir, filler);
    } finally {
      await w.stop();
      await rm(filler, { force: true });
    }
  });
});
