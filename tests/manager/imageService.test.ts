import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { CopyLocks } from '../../src/manager/copyLocks.ts';
import { ImageError, ImageService } from '../../src/manager/imageService.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { EntryLog, MetadataFixture, registerCmd } from '../metadata/metadataFixture.ts';

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
  const raft = {
    isLeader: () => true,
    leaderInfo: () => ({ id: 'm2', url: null }),
    readIndex: async () => {
      reads += 1;
      await sm.apply([committedDelete]);
    },
    propose: () => Promise.reject(new Error('no proposal expected')),
  };
  const stagingDir = await mkdtemp(join(tmpdir(), 'imgvault-staging-'));
  const workers = new WorkerClient({ secret: 'test-secret' });
  cleanups.push(async () => {
    await workers.close();
    await rm(stagingDir, { recursive: true, force: true });
  });
  const images = new ImageService({
    raft,
    metadata: sm,
    staging: await StagingArea.open(stagingDir),
    workers,
    liveness: new WorkerLiveness({ suspectAfterMs: 1_000 }),
    log: createLogger('test'),
    maxImageBytes: 1 << 20,
    copies: new CopyLocks(),
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
