import { randomBytes } from 'node:crypto';
import { mkdir, readFile, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { takeCleanStopMarker } from '../../src/metadata/cleanStop.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { blobRelativePath } from '../../src/storagenode/blobId.ts';
import { BlobIndex } from '../../src/storagenode/blobIndex.ts';
import type { BlobStore } from '../../src/storagenode/blobStore.ts';
import { decodeTrailer, encodeTrailer, TRAILER_BYTES } from '../../src/storagenode/blobTrailer.ts';
import { sha256Of, useBlobStoreFolder } from './workerHarness.ts';

/**
 * The write protocol without a synced marker: each blob file carries a trailer, and a start after an
 * unclean stop indexes again the files whose index entry a power cut lost, checked against their
 * trailer. A power cut is played by removing index entries and the clean-stop flag behind a closed
 * store, which is what the disk holds after one that came between the answer and the next sync.
 */

const folder = useBlobStoreFolder();
const openStore = folder.open;
const closeStore = folder.close;

async function put(store: BlobStore, id: string, body: Buffer): Promise<void> {
  const res = await store.writeAtomically(id, Readable.from([body]), sha256Of(body), 1 << 30, {
    expectedCrc32c: crc32cHex(body),
  });
  if (!res.ok) throw res.error;
}

async function readAll(store: BlobStore, id: string): Promise<Buffer> {
  const read = await store.openForRead(id);
  if (!read.ok) throw read.error;
  const chunks: Buffer[] = [];
  for await (const chunk of read.value.stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/** What a power cut after the answers leaves: the files, without their unsynced index entries. */
async function loseIndexEntries(ids: string[]): Promise<void> {
  const index = await BlobIndex.open(path.join(folder.dataDir, 'index'));
  try {
    await index.deleteMany(ids);
  } finally {
    await index.close();
  }
  await takeCleanStopMarker(path.join(folder.dataDir, 'index'));
}

const fileOf = (id: string) => path.join(folder.dataDir, blobRelativePath(id));

describe('blob trailer', () => {
  it('follows the bytes in every file written, naming their size and checksums', async () => {
    const store = await openStore();
    const body = randomBytes(300_000);
    await put(store, 'sealed', body);
    const file = await readFile(store.blobPath('sealed'));
    expect(file.length).toBe(body.length + TRAILER_BYTES);
    expect(file.subarray(0, body.length).equals(body)).toBe(true);
    expect(decodeTrailer(file.subarray(body.length))).toEqual({
      size: body.length,
      sha256: sha256Of(body),
      crc32c: crc32cHex(body),
    });
    expect((await readAll(store, 'sealed')).equals(body)).toBe(true);
  });

  it('refuses a damaged trailer', () => {
    const trailer = encodeTrailer({ size: 5, sha256: 'ab'.repeat(32), crc32c: '0badf00d' });
    expect(decodeTrailer(trailer)).toEqual({ size: 5, sha256: 'ab'.repeat(32), crc32c: '0badf00d' });
    for (const at of [0, 9, 17, 30, TRAILER_BYTES - 1]) {
      const bad = Buffer.from(trailer);
      bad[at]! ^= 0x10;
      expect(decodeTrailer(bad), `byte ${at}`).toBeNull();
    }
    expect(decodeTrailer(trailer.subarray(1))).toBeNull();
  });
});

describe('start after an unclean stop', () => {
  it('indexes again the blobs whose entries a power cut lost, with their size and checksums', async () => {
    let store = await openStore();
    const bodies = Array.from({ length: 6 }, (_, i) => randomBytes(1000 * i));
    for (const [i, body] of bodies.entries()) await put(store, `lost-${i}`, body);
    await put(store, 'kept', Buffer.from('still indexed'));
    await closeStore(store);
    await loseIndexEntries(bodies.map((_, i) => `lost-${i}`));

    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: false, unindexedAdopted: 6, blobCount: 7 });
    for (const [i, body] of bodies.entries()) {
      expect(await store.stat(`lost-${i}`)).toEqual({
        ok: true,
        value: { size: body.length, sha256: sha256Of(body), crc32c: crc32cHex(body) },
      });
      expect((await readAll(store, `lost-${i}`)).equals(body)).toBe(true);
    }
    // The walk happens once: this stop is clean again.
    await closeStore(store);
    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: true, unindexedAdopted: 0, blobCount: 7 });
  });

  it('removes an unindexed file whose bytes do not match its trailer, and indexes nothing of it', async () => {
    let store = await openStore();
    const body = randomBytes(50_000);
    await put(store, 'rotten', body);
    await closeStore(store);
    await loseIndexEntries(['rotten']);
    const file = await readFile(fileOf('rotten'));
    file[123]! ^= 0x01;
    await writeFile(fileOf('rotten'), file);

    store = await openStore();
    expect(store.startupReport).toMatchObject({ unindexedAdopted: 0, unindexedRemoved: 1, blobCount: 0 });
    expect((await store.stat('rotten')).ok).toBe(false);
    await expect(stat(fileOf('rotten'))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('never indexes a file cut short of its trailer, nor one without a trailer', async () => {
    let store = await openStore();
    const body = randomBytes(40_000);
    await put(store, 'cut', body);
    await put(store, 'bare', body);
    await closeStore(store);
    await loseIndexEntries(['cut', 'bare']);
    await truncate(fileOf('cut'), body.length + TRAILER_BYTES - 7);
    await writeFile(fileOf('bare'), body);

    store = await openStore();
    expect(store.startupReport).toMatchObject({ unindexedAdopted: 0, blobCount: 0 });
    expect((await store.stat('cut')).ok).toBe(false);
    expect((await store.stat('bare')).ok).toBe(false);
    const read = await store.openForRead('cut');
    expect(read.ok).toBe(false);
  });

  it('skips what is not a regular file, however it is named, and still opens', async () => {
    let store = await openStore();
    await put(store, 'kept', Buffer.from('kept bytes'));
    await closeStore(store);
    await loseIndexEntries(['kept']);
    await mkdir(fileOf('dirnamed'));
    await writeFile(path.join(fileOf('dirnamed'), 'inside'), 'not a blob');

    store = await openStore();
    expect(store.startupReport).toMatchObject({ unindexedAdopted: 1, unindexedRemoved: 0, blobCount: 1 });
    expect((await stat(fileOf('dirnamed'))).isDirectory()).toBe(true);
    expect((await store.stat('dirnamed')).ok).toBe(false);
  });

  it('does not walk the folders after a clean stop', async () => {
    let store = await openStore();
    await put(store, 'planted', Buffer.from('planted bytes'));
    await closeStore(store);
    const index = await BlobIndex.open(path.join(folder.dataDir, 'index'));
    await index.deleteMany(['planted']);
    await index.close();

    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: true, unindexedAdopted: 0, blobCount: 0 });
  });
});

describe('scrub', () => {
  it('rewrites a damaged trailer behind intact bytes, so a lost entry can still be found again', async () => {
    let store = await openStore();
    const body = randomBytes(30_000);
    await put(store, 'resealed', body);
    const damaged = await readFile(fileOf('resealed'));
    damaged[damaged.length - 10]! ^= 0x40;
    await writeFile(fileOf('resealed'), damaged);

    expect(await store.scrub({ id: 'resealed', size: body.length, sha256: sha256Of(body) })).toBe('intact');
    const file = await readFile(fileOf('resealed'));
    expect(file.subarray(0, body.length).equals(body)).toBe(true);
    expect(decodeTrailer(file.subarray(body.length))).toEqual({
      size: body.length,
      sha256: sha256Of(body),
      crc32c: crc32cHex(body),
    });
    await closeStore(store);
    await loseIndexEntries(['resealed']);
    store = await openStore();
    expect(store.startupReport).toMatchObject({ unindexedAdopted: 1, blobCount: 1 });
    expect((await readAll(store, 'resealed')).equals(body)).toBe(true);
  });
});

describe('clean stop', () => {
  it('is a marker file: without it the next start walks, whatever the index holds', async () => {
    let store = await openStore();
    await put(store, 'kept', Buffer.from('kept bytes'));
    await closeStore(store);
    const index = await BlobIndex.open(path.join(folder.dataDir, 'index'));
    await index.deleteMany(['kept']);
    await index.close();
    expect(await takeCleanStopMarker(path.join(folder.dataDir, 'index'))).toBe(true);

    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: false, unindexedAdopted: 1, blobCount: 1 });
  });

  it('still reads the flag a worker of the previous version kept in the index', async () => {
    let store = await openStore();
    await put(store, 'planted', Buffer.from('planted bytes'));
    await closeStore(store);
    await takeCleanStopMarker(path.join(folder.dataDir, 'index'));
    const index = await BlobIndex.open(path.join(folder.dataDir, 'index'));
    await index.deleteMany(['planted']);
    await index.markCleanStop();
    await index.close();

    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: true, unindexedAdopted: 0, blobCount: 0 });
    await closeStore(store);
    await takeCleanStopMarker(path.join(folder.dataDir, 'index'));
    // Consumed: without the new marker either, the next start walks.
    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: false, unindexedAdopted: 1, blobCount: 1 });
  });

  it('refuses a group commit once close began, and indexes nothing of it', async () => {
    let store = await openStore();
    const body = Buffer.from('late bytes');
    const r = await store.receive('late', Readable.from([body]), sha256Of(body), 1 << 20, {
      expectedCrc32c: crc32cHex(body),
    });
    if (!r.ok || r.value.kind !== 'received') throw new Error('receive failed');
    folder.disown(store);
    const closing = store.close();
    await expect(store.commitReceived([r.value.blob])).rejects.toThrow(/closed/);
    await closing;

    store = await openStore();
    expect(store.startupReport).toMatchObject({ cleanStop: true, blobCount: 0, tempFilesRemoved: 0 });
    await expect(stat(fileOf('late'))).rejects.toMatchObject({ code: 'ENOENT' });
  });
});

describe('blobs written before trailers', () => {
  it('are read, scrubbed and kept across starts as they are', async () => {
    let store = await openStore();
    const body = randomBytes(70_000);
    await put(store, 'legacy', body);
    await closeStore(store);
    // A file of exactly the indexed size: as a worker of the previous version wrote it.
    await writeFile(fileOf('legacy'), body);

    store = await openStore();
    expect(store.startupReport).toMatchObject({ corruptDropped: 0, blobCount: 1 });
    expect((await readAll(store, 'legacy')).equals(body)).toBe(true);
    const whole = await store.readWhole('legacy', 1 << 20);
    expect(whole.ok && whole.value !== 'tooLarge' && whole.value.bytes.equals(body)).toBe(true);
    expect(await store.scrub({ id: 'legacy', size: body.length, sha256: sha256Of(body) })).toBe('intact');
  });
});
