// A follower that knows no live leader answers an upload or a delete "no leader": the request is
// held and run again (awaitLiveLeader.ts), so that answer is no outcome of an upload or a delete,
// as a redirect to the leader is not. Counted, it would show failures during every election for
// requests that end in 201 or 204.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterEach, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { ImageError, ImageService } from '../../src/manager/imageService.ts';
import { ObjectSlots } from '../../src/manager/placement/execute.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { UploadMetrics } from '../../src/manager/uploadMetrics.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { MetadataFixture } from '../metadata/metadataFixture.ts';

const fx = new MetadataFixture();
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanups.splice(0)) await undo();
  await fx.cleanup();
});

async function outcomes(registry: Registry, name: string): Promise<Record<string, number>> {
  const { values } = await registry.getSingleMetric(name)!.get();
  return Object.fromEntries(values.map((v) => [String(v.labels.outcome), v.value]));
}

it('an upload or delete answered "no leader" on a follower counts as neither', async () => {
  const stagingDir = await mkdtemp(join(tmpdir(), 'imgvault-staging-'));
  const workers = new WorkerClient({ secret: 'test-secret' });
  cleanups.push(async () => {
    await workers.close();
    await rm(stagingDir, { recursive: true, force: true });
  });
  const registry = new Registry();
  const images = new ImageService({
    // A follower during an election: it leads not, and knows no leader.
    raft: {
      isLeader: () => false,
      leaderInfo: () => null,
      readIndex: () => Promise.reject(new Error('no read expected')),
      propose: () => Promise.reject(new Error('no proposal expected')),
    },
    metadata: await fx.machine(),
    staging: await StagingArea.open(stagingDir),
    workers,
    liveness: new WorkerLiveness({ suspectAfterMs: 1_000 }),
    log: createLogger('test'),
    maxImageBytes: 1 << 20,
    slots: new ObjectSlots(),
    metrics: new UploadMetrics(registry),
  });
  const noLeader = (err: unknown) => err instanceof ImageError && err.code === 'NoLeader';
  await expect(
    images.upload('cat', async function* () {
      yield Buffer.from('never read');
    }),
  ).rejects.toSatisfy(noLeader);
  await expect(images.remove('cat')).rejects.toSatisfy(noLeader);
  expect(await outcomes(registry, 'imgvault_uploads_total')).toEqual({ created: 0, existing: 0 });
  expect(await outcomes(registry, 'imgvault_deletes_total')).toEqual({ deleted: 0 });
});
