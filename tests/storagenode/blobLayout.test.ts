// Data folders of the earlier two-level layout (`blobs/ab/cd/<id>`) are moved to one level
// (`blobs/ab/<id>`) when the store opens them: every blob reads back, nothing is dropped, and a
// migration cut short is finished by the next open.

import { createHash } from 'node:crypto';
import { mkdir, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { LAYOUT_MARKER } from '../../src/storagenode/blobLayout.ts';
import type { BlobStore } from '../../src/storagenode/blobStore.ts';
import { sha256Of, useBlobStoreFolder } from './workerHarness.ts';

const folder = useBlobStoreFolder();
const openStore = folder.open;
const closeStore = folder.close;

const hashOf = (id: string) => createHash('sha256').update(id).digest('hex');

/** Where the two-level layout kept a blob: `blobs/ab/cd/<id>`. */
const oldPath = (id: string) => {
  const h = hashOf(id);
  return path.join(folder.dataDir, 'blobs', h.slice(0, 2), h.slice(2, 4), id);
};

/**
 * An id named like a second-level folder (two hex digits), and another id whose old folder has
 * exactly that name in the same top folder: moving the first up collides with that folder unless
 * the migration sets old folders aside first.
 */
function collidingIds(): [string, string] {
  const named = 'ab';
  const prefix = `${hashOf(named).slice(0, 2)}${named}`;
  for (let i = 0; i < 2_000_000; i++) {
    if (hashOf(`filler-${i}`).startsWith(prefix)) return [named, `filler-${i}`];
  }
  throw new Error('no colliding id found');
}

/** Stores `bodies` with the store, then moves them into the old layout as an earlier worker left them. */
async function oldLayoutFolder(bodies: Map<string, Buffer>): Promise<void> {
  const store = await openStore();
  for (const [id, body] of bodies) {
    const written = await store.writeAtomically(id, Readable.from([body]), sha256Of(body), 1 << 20);
    expect(written.ok).toBe(true);
  }
  const current = [...bodies.keys()].map((id) => store.blobPath(id));
  await closeStore(store);
  for (const [k, id] of [...bodies.keys()].entries()) {
    await mkdir(path.dirname(oldPath(id)), { recursive: true });
    await rename(current[k]!, oldPath(id));
  }
  await rm(path.join(folder.dataDir, 'blobs', LAYOUT_MARKER));
}

async function subfolders(): Promise<string[]> {
  const found: string[] = [];
  for (const top of await readdir(path.join(folder.dataDir, 'blobs'), { withFileTypes: true })) {
    if (!top.isDirectory()) continue;
    for (const e of await readdir(path.join(folder.dataDir, 'blobs', top.name), { withFileTypes: true })) {
      if (e.isDirectory()) found.push(`${top.name}/${e.name}`);
    }
  }
  return found;
}

async function expectAllReadBack(store: BlobStore, bodies: Map<string, Buffer>): Promise<void> {
  for (const [id, body] of bodies) {
    const read = await store.openForRead(id);
    if (!read.ok) throw read.error;
    const chunks: Buffer[] = [];
    for await (const chunk of read.value.stream) chunks.push(chunk as Buffer);
    expect(Buffer.concat(chunks).equals(body), id).toBe(true);
  }
}

describe('blob folder layout', () => {
  const ids = [...collidingIds(), ...Array.from({ length: 40 }, (_, i) => `img-${i}`)];
  const bodies = new Map(ids.map((id) => [id, Buffer.from(`the bytes of ${id}`)]));

  it('moves an old two-level data folder to one level at open, every blob kept, and only once', async () => {
    await oldLayoutFolder(bodies);
    expect((await subfolders()).length).toBeGreaterThan(0);

    let store = await openStore();
    expect(store.startupReport).toMatchObject({
      migratedBlobs: ids.length,
      missingDropped: 0,
      corruptDropped: 0,
      blobCount: ids.length,
    });
    expect(await subfolders()).toEqual([]);
    expect(await readdir(path.join(folder.dataDir, 'blobs'))).toContain(LAYOUT_MARKER);
    await expectAllReadBack(store, bodies);
    await closeStore(store);

    store = await openStore();
    expect(store.startupReport).toMatchObject({ migratedBlobs: 0, blobCount: ids.length });
  });

  it('finishes a migration cut short: a folder set aside, a blob already moved', async () => {
    await oldLayoutFolder(bodies);
    // As a crash would leave it: one old folder renamed aside, one blob already moved up.
    const first = oldPath('img-0');
    const aside = path.join(path.dirname(path.dirname(first)), `.${path.basename(path.dirname(first))}`);
    await rename(path.dirname(first), aside);
    await rename(path.join(aside, 'img-0'), path.join(path.dirname(aside), 'img-0'));

    const store = await openStore();
    expect(store.startupReport).toMatchObject({ missingDropped: 0, blobCount: ids.length });
    expect(await subfolders()).toEqual([]);
    await expect(stat(aside)).rejects.toMatchObject({ code: 'ENOENT' });
    await expectAllReadBack(store, bodies);
  });
});
