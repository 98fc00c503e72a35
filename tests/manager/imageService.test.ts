import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import { ImageError, ImageService } from '../../src/manager/imageService.ts';
import { ObjectSlots } from '../../src/manager/placement/execute.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import type { Command } from '../../src/metadata/commands.ts';
import { EntryLog, MetadataFixture, registerCmd } from '../metadata/metadataFixture.ts';
import {
  AUTH,
  makeDataDir,
  type RunningWorker,
  removeDir,
  SECRET,
  startTempWorker,
  startWorker,
} from '../storagenode/workerHarness.ts';
import { readingImageService } from './readingImageService.ts';

const fx = new MetadataFixture();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanups.splice(0)) await undo();
  await fx.cleanup();
});

const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), Buffer.alloc(200, 1)]);

it('a new leader answers for an existing id only from a table as of everything committed', async () => {
  const sm = await fx.machine();
  const log = new EntryLog();
  await sm.apply([log.command(registerCmd('w1')), log.command(registerCmd('w2', 1000, 'z2'))]);
  await sm.apply([
    log.command({
      type: 'recordObject',
      id: 'cat',
      size: PNG.length,
      sha256: createHash('sha256').update(PNG).digest('hex'),
      contentType: 'image/png',
      createdAt: 1,
      replicas: ['w1', 'w2'],
    }),
  ]);
  // The previous leader committed the delete; this one has not applied it yet.
  const committedDelete = log.command({ type: 'deleteObject', id: 'cat' });
  let reads = 0;
  const workers = new WorkerClient({ secret: 'test-secret' });
  const { images, removeStaging } = await readingImageService({
    metadata: sm,
    workers,
    leaderId: 'm2',
    readIndex: async () => {
      reads += 1;
      await sm.apply([committedDelete]);
    },
  });
  cleanups.push(async () => {
    await workers.close();
    await removeStaging();
  });
  // Not "200, already stored" from the deleted record: the upload goes on to place new copies,
  // and here no worker has been heard to take them.
  const upload = images.upload('cat', async function* () {
    yield PNG;
  });
  await expect(upload).rejects.toSatisfy(
    (err) => err instanceof ImageError && ['NoLiveWorker', 'InsufficientStorage'].includes(err.code),
  );
  expect(reads).toBe(1);
  expect(await sm.getObject('cat')).toBeNull();
});

describe('reads: ReadIndex beside the worker read', () => {
  const OTHER = Buffer.concat([PNG.subarray(0, 16), Buffer.alloc(300, 2)]);
  const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
  const record = (bytes: Buffer, createdAt: number): Command => ({
    type: 'recordObject',
    id: 'cat',
    size: bytes.length,
    sha256: sha(bytes),
    contentType: 'image/png',
    createdAt,
    replicas: ['w1'],
  });

  /** A service whose table holds `cat` on a real worker, and whose ReadIndex first applies `pending`. */
  async function setup(pending: Command[]) {
    const sm = await fx.machine();
    const log = new EntryLog();
    const workers = new WorkerClient({ secret: SECRET });
    cleanups.push(() => workers.close());
    const worker = await startTempWorker((undo) => cleanups.push(undo));
    await workers.putBlob(worker.url, 'cat', sha(PNG), PNG.length, Readable.from([PNG]));
    await sm.apply([
      log.command({ type: 'registerWorker', nodeId: 'w1', url: worker.url, zone: 'z1', at: 1000 }),
      log.command(record(PNG, 1)),
    ]);
    let reads = 0;
    const { images, removeStaging } = await readingImageService({
      metadata: sm,
      workers,
      readIndex: async () => {
        reads += 1;
        await sm.apply(pending.splice(0).map((c) => log.command(c)));
      },
    });
    cleanups.push(removeStaging);
    return { images, reads: () => reads };
  }

  it('serves the local record once ReadIndex confirmed it, with one round', async () => {
    const { images, reads } = await setup([]);
    const download = await images.open('cat', { method: 'GET' });
    expect(download.bytes?.equals(PNG)).toBe(true);
    expect(reads()).toBe(1);
  });

  it('confirms each of two overlapping reads with a round of its own', async () => {
    const { images, reads } = await setup([]);
    const both = await Promise.all([
      images.open('cat', { method: 'GET' }),
      images.open('cat', { method: 'GET' }),
    ]);
    for (const download of both) expect(download.bytes?.equals(PNG)).toBe(true);
    expect(reads()).toBe(2);
  });

  it('gathers a pooled read into a buffer the next one reuses once released, and no other read', async () => {
    const { images } = await setup([]);
    const first = await images.open('cat', { method: 'GET', pooled: true });
    const held = await images.open('cat', { method: 'GET', pooled: true });
    expect(held.bytes?.buffer).not.toBe(first.bytes?.buffer);
    first.release?.();
    const next = await images.open('cat', { method: 'GET', pooled: true });
    expect(next.bytes?.buffer).toBe(first.bytes?.buffer);
    expect(next.bytes?.equals(PNG)).toBe(true);
    expect(held.bytes?.equals(PNG)).toBe(true);
    const unpooled = await images.open('cat', { method: 'GET' });
    expect(unpooled.release).toBeUndefined();
  });

  it('never serves a record deleted before the read began, though its bytes were read', async () => {
    const { images } = await setup([{ type: 'deleteObject', id: 'cat' }]);
    await expect(images.open('cat', { method: 'GET' })).rejects.toMatchObject({ code: 'NotFound' });
  });

  it('checks the bytes against the confirmed record when the id was deleted and stored anew meanwhile', async () => {
    const { images } = await setup([{ type: 'deleteObject', id: 'cat' }, record(OTHER, 2)]);
    // The worker still holds the old bytes under `cat`: they were read for the local record, but
    // the confirmed one names other bytes, so nothing is served rather than the old bytes.
    await expect(images.open('cat', { method: 'GET' })).rejects.toMatchObject({ code: 'Unavailable' });
  });
});

describe('uploads held in memory: slabs reused only after a clean send', () => {
  // Three real workers in three zones. `full` has a 1 KiB quota: a copy sent to it is refused with
  // 507 while its body streams, so the copy falls back to the third worker.
  const ZONES = { full: 'z1', b: 'z2', c: 'z3' } as const;
  const image = (size: number, seed: number) => {
    const bytes = Buffer.alloc(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
    PNG.copy(bytes, 0, 0, 16);
    return bytes;
  };

  async function setup() {
    const sm = await fx.machine();
    const log = new EntryLog();
    const running: Record<string, RunningWorker> = {};
    for (const id of Object.keys(ZONES) as (keyof typeof ZONES)[]) {
      const dir = await makeDataDir();
      const worker = await startWorker(dir, id === 'full' ? { quotaBytes: 1024 } : {});
      cleanups.push(async () => {
        await worker.stop();
        await removeDir(dir);
      });
      running[id] = worker;
      await sm.apply([
        log.command({ type: 'registerWorker', nodeId: id, url: worker.url, zone: ZONES[id], at: 1 }),
      ]);
    }
    const stagingDir = await makeDataDir();
    const workers = new WorkerClient({ secret: SECRET });
    cleanups.push(async () => {
      await workers.close();
      await removeDir(stagingDir);
    });
    const staging = await StagingArea.open(stagingDir, { memoryBytes: 16 * SLAB_BYTES });
    const liveness = new WorkerLiveness({ suspectAfterMs: 60_000 });
    // Proposals apply in order, as a leader's log would.
    let tail: Promise<unknown> = Promise.resolve();
    const images = new ImageService({
      raft: {
        isLeader: () => true,
        leaderInfo: () => ({ id: 'm1', url: null }),
        readIndex: async () => {},
        propose(data, requestId) {
          const run = tail.then(async () => {
            const results = await sm.apply([log.raw(data)]);
            return results.find((r) => r.requestId === requestId)?.result;
          });
          tail = run.catch(() => {});
          return run;
        },
      },
      metadata: sm,
      staging,
      workers,
      liveness,
      log: createLogger('test'),
      maxImageBytes: 1 << 24,
      slots: new ObjectSlots(),
    });
    const GB = 1e9;
    /** Heartbeats that rank the workers by how used their disks are, in percent (placement.ts). */
    const beat = (usedPercent: Record<keyof typeof ZONES, number>) => {
      for (const [nodeId, used] of Object.entries(usedPercent))
        liveness.heard({
          nodeId,
          diskUsed: used * GB,
          diskFree: (100 - used) * GB,
          objectCount: 0,
          lastSeen: Date.now(),
        });
    };
    const upload = (bytes: Buffer) =>
      images.upload(
        images.newId(),
        async function* () {
          for (let at = 0; at < bytes.length; at += 64 * 1024) yield bytes.subarray(at, at + 64 * 1024);
        },
        { declaredLength: bytes.length },
      );
    const blobOn = async (nodeId: string, id: string) => {
      const res = await fetch(`${running[nodeId]!.url}/blobs/${id}`, { headers: AUTH });
      return Buffer.from(await res.arrayBuffer());
    };
    return { staging, beat, upload, blobOn };
  }

  it('keeps the slabs of a body that fell back out of the pool, reuses a clean one, and mixes no bytes', async () => {
    const { staging, beat, upload, blobOn } = await setup();
    // The full worker looks emptiest, so it is a first target and refuses its copy mid-body.
    beat({ full: 0, b: 10, c: 50 });
    const fallenBack = image(3 * SLAB_BYTES + 1_000, 1);
    const first = await upload(fallenBack);
    // c, ranked last, holds a copy only as the replacement of the full worker's.
    expect([...first.object.replicas].sort()).toEqual(['b', 'c']);
    for (const nodeId of ['b', 'c'])
      expect((await blobOn(nodeId, first.object.id)).equals(fallenBack)).toBe(true);
    expect(staging.spareSlabs).toBe(0);
    expect(staging.heldInMemory).toBe(0);

    // Now the full worker looks fullest: both copies are stored at their first targets.
    beat({ full: 90, b: 10, c: 50 });
    const clean = await upload(image(3 * SLAB_BYTES + 1_000, 2));
    expect([...clean.object.replicas].sort()).toEqual(['b', 'c']);
    expect(staging.spareSlabs).toBe(4);

    // Two bodies at once, on reused slabs and new ones: each arrives whole and unmixed on both.
    beat({ full: 90, b: 10, c: 50 });
    const bodies = [image(5 * SLAB_BYTES + 7, 3), image(4 * SLAB_BYTES + 300, 4)];
    const both = await Promise.all(bodies.map((bytes) => upload(bytes)));
    for (const [i, outcome] of both.entries()) {
      expect([...outcome.object.replicas].sort()).toEqual(['b', 'c']);
      for (const nodeId of ['b', 'c'])
        expect((await blobOn(nodeId, outcome.object.id)).equals(bodies[i]!)).toBe(true);
    }
    expect(staging.heldInMemory).toBe(0);
  });

  it('holds a body of one slab whole before its copies, and reuses its slab only after a clean send', async () => {
    const { staging, beat, upload, blobOn } = await setup();
    beat({ full: 0, b: 10, c: 50 });
    const fallenBack = image(100 * 1024, 5);
    const first = await upload(fallenBack);
    expect([...first.object.replicas].sort()).toEqual(['b', 'c']);
    for (const nodeId of ['b', 'c'])
      expect((await blobOn(nodeId, first.object.id)).equals(fallenBack)).toBe(true);
    expect(staging.spareSlabs).toBe(0);

    beat({ full: 90, b: 10, c: 50 });
    const bodies = [image(SLAB_BYTES, 6), image(1_000, 7), image(200 * 1024, 8)];
    const stored = [];
    for (const bytes of bodies) stored.push(await upload(bytes));
    expect(staging.spareSlabs).toBe(1);
    const together = [image(150 * 1024, 9), image(150 * 1024, 10)];
    stored.push(...(await Promise.all(together.map((bytes) => upload(bytes)))));
    for (const [i, bytes] of [...bodies, ...together].entries()) {
      expect(stored[i]!.object.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      for (const nodeId of ['b', 'c'])
        expect((await blobOn(nodeId, stored[i]!.object.id)).equals(bytes)).toBe(true);
    }
    expect(staging.spareSlabs).toBe(2);
    expect(staging.heldInMemory).toBe(0);
  });
});
