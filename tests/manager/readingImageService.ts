// An ImageService on a leader that only reads, for the tests of its read path: its Raft access
// confirms a read with `readIndex` and refuses every proposal, and it stages in a temp folder.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createLogger } from '../../src/logging.ts';
import { ImageService } from '../../src/manager/imageService.ts';
import { ObjectSlots } from '../../src/manager/placement/execute.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import type { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';

export interface ReadingImageServiceOptions {
  metadata: MetadataStateMachine;
  workers: WorkerClient;
  /** The leader this manager is (a new leader may not have applied everything yet). */
  leaderId?: string;
  /** What a ReadIndex round does before it confirms. */
  readIndex?: () => Promise<void>;
  /** Which workers this manager has heard from (by default: none). */
  liveness?: WorkerLiveness;
}

/** The service and the removal of its staging folder, which the caller runs after the test. */
export async function readingImageService(
  opts: ReadingImageServiceOptions,
): Promise<{ images: ImageService; removeStaging: () => Promise<void> }> {
  const stagingDir = await mkdtemp(join(tmpdir(), 'imgvault-staging-'));
  const images = new ImageService({
    raft: {
      isLeader: () => true,
      leaderInfo: () => ({ id: opts.leaderId ?? 'm1', url: null }),
      readIndex: opts.readIndex ?? (async () => {}),
      propose: () => Promise.reject(new Error('no proposal expected')),
    },
    metadata: opts.metadata,
    staging: await StagingArea.open(stagingDir),
    workers: opts.workers,
    liveness: opts.liveness ?? new WorkerLiveness({ suspectAfterMs: 1_000 }),
    log: createLogger('test'),
    maxImageBytes: 1 << 20,
    slots: new ObjectSlots(),
  });
  return { images, removeStaging: () => rm(stagingDir, { recursive: true, force: true }) };
}
