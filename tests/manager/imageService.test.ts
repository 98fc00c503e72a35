import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { ImageError } from '../../src/manager/imageService.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import type { Command } from '../../src/metadata/commands.ts';
import { EntryLog, MetadataFixture, registerCmd } from '../metadata/metadataFixture.ts';
import { SECRET, startTempWorker } from '../storagenode/workerHarness.ts';
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
