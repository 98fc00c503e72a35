// Liveness across a change of leader: workers heartbeat every manager, so a follower that becomes
// leader places uploads at once, while down verdicts still wait a full down timeout of silence
// observed by the new leader itself; and a placement that cannot tell whether workers live says
// so with a 503, never a 507.

import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { afterEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { FailureDetector } from '../../src/manager/failureDetector.ts';
import { publicRoutes } from '../../src/manager/http/publicRoutes.ts';
import { ImageError, ImageService, type RaftAccess } from '../../src/manager/imageService.ts';
import { ObjectSlots } from '../../src/manager/placement/execute.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { UnknownWorker, WorkerRegistry } from '../../src/manager/workerRegistry.ts';
import { decodeCommand } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { EntryLog, MetadataFixture } from '../metadata/metadataFixture.ts';
import { makeDataDir, removeDir, SECRET, startWorker } from '../storagenode/workerHarness.ts';

const log = createLogger('test');
const fx = new MetadataFixture();
const cleanups: (() => Promise<unknown>)[] = [];

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await fx.cleanup();
});

const SUSPECT_MS = 3_000;
const DOWN_MS = 10_000;
const PNG = Buffer.concat([Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex'), Buffer.alloc(500, 1)]);

/** A Raft member whose role the test sets: proposals apply in order while it leads. */
function switchableRaft(sm: MetadataStateMachine): RaftAccess & { leading: boolean } {
  const entries = new EntryLog();
  let tail: Promise<unknown> = Promise.resolve();
  const raft = {
    leading: false,
    isLeader: () => raft.leading,
    leaderInfo: () => (raft.leading ? { id: 'm2', url: null } : { id: 'm1', url: 'http://127.0.0.1:1' }),
    readIndex: async () => {},
    propose(data: string, requestId: string) {
      if (!raft.leading) return Promise.reject(new Error('not the leader'));
      expect(decodeCommand(data).ok).toBe(true);
      const run = tail.then(async () => {
        const results = await sm.apply([entries.raw(data)]);
        return results.find((r) => r.requestId === requestId)?.result;
      });
      tail = run.catch(() => {});
      return run;
    },
  };
  return raft;
}

interface Manager {
  sm: MetadataStateMachine;
  raft: ReturnType<typeof switchableRaft>;
  clock: { now: number };
  liveness: WorkerLiveness;
  registry: WorkerRegistry;
  images: ImageService;
  detector: FailureDetector;
  urls: Map<string, string>;
}

/** A manager (as follower) whose table holds `workerIds`, each a real worker on 127.0.0.1. */
async function follower(workerIds: string[]): Promise<Manager> {
  const sm = await fx.machine();
  const raft = switchableRaft(sm);
  const clock = { now: Date.now() };
  const liveness = new WorkerLiveness({ suspectAfterMs: SUSPECT_MS, now: () => clock.now });
  const urls = new Map<string, string>();
  raft.leading = true;
  for (const id of workerIds) {
    const dir = await makeDataDir();
    const w = await startWorker(dir);
    cleanups.push(async () => {
      await w.stop().catch(() => {});
      await removeDir(dir);
    });
    urls.set(id, w.url);
    await proposeCommand(raft, { type: 'registerWorker', nodeId: id, url: w.url, zone: `z-${id}`, at: 1 });
  }
  raft.leading = false;
  const stagingDir = await makeDataDir();
  const client = new WorkerClient({ secret: SECRET, idleTimeoutMs: 5_000 });
  cleanups.push(async () => {
    await client.close();
    await removeDir(stagingDir);
  });
  const registry = new WorkerRegistry({
    raft,
    metadata: sm,
    liveness,
    log,
    heartbeatIntervalMs: 1_000,
    summaryIntervalMs: 5_000,
    spoolDir: stagingDir,
  });
  const images = new ImageService({
    raft,
    metadata: sm,
    staging: await StagingArea.open(stagingDir),
    workers: client,
    liveness,
    log,
    maxImageBytes: 1 << 20,
    slots: new ObjectSlots(),
  });
  const detector = new FailureDetector({
    raft,
    metadata: sm,
    liveness,
    log,
    downAfterMs: DOWN_MS,
    now: () => clock.now,
  });
  return { sm, raft, clock, liveness, registry, images, detector, urls };
}

function beat(m: Manager, id: string, diskFree = 1e12) {
  return m.registry.heartbeat({ id, diskUsed: 1_000, diskFree, blobCount: 0, blobBytes: 0 });
}

async function upload(m: Manager) {
  return m.images.upload(m.images.newId(), async function* () {
    yield PNG;
  });
}

describe('a follower that heard the workers', () => {
  it('records their heartbeats without answering for the leader', async () => {
    const m = await follower(['w1', 'w2']);
    // A follower names the leader, so a worker that was not told of it (a manager added later) beats it too.
    expect(await beat(m, 'w1')).toMatchObject({ leader: false });
    expect((await beat(m, 'w1')).leaderUrl).toBe(m.raft.leaderInfo()?.url);
    // Unknown to this follower's table (a registration it has not applied yet): no UnknownWorker,
    // which would make the worker resend its whole inventory.
    expect(await beat(m, 'w9')).toMatchObject({ leader: false });
    m.raft.leading = true;
    expect(await beat(m, 'w1')).toEqual({ leader: true });
    await expect(beat(m, 'w9')).rejects.toBeInstanceOf(UnknownWorker);
  });

  it('places an upload the moment it leads, before any heartbeat reaches it as leader', async () => {
    const m = await follower(['w1', 'w2']);
    // Long after this manager started: a worker it had never heard would be suspect by now.
    m.clock.now += 10 * SUSPECT_MS;
    await beat(m, 'w1');
    await beat(m, 'w2');
    m.clock.now += SUSPECT_MS / 2;

    m.raft.leading = true;
    const stored = await upload(m);

    expect(stored.created).toBe(true);
    expect([...stored.object.replicas].sort()).toEqual(['w1', 'w2']);
  });

  it('condemns no worker on what it saw as a follower: the down clock starts when it leads', async () => {
    const m = await follower(['w1', 'w2']);
    await beat(m, 'w1');
    // w2 never reached this manager, w1 not for far longer than the down timeout.
    m.clock.now += 6 * DOWN_MS;

    m.raft.leading = true;
    expect(await m.detector.check()).toEqual([]);
    m.clock.now += DOWN_MS - 1_000;
    await beat(m, 'w2');
    expect(await m.detector.check()).toEqual([]);
    m.clock.now += 1_500;

    expect(await m.detector.check()).toEqual(['w1']);
    expect((await m.sm.getNode('w1'))?.state).toBe('down');
    expect((await m.sm.getNode('w2'))?.state).toBe('up');
  });
});

describe('placement without fresh liveness', () => {
  it('answers 503 with Retry-After, not 507, when no worker was heard lately', async () => {
    const m = await follower(['w1', 'w2']);
    m.raft.leading = true;
    m.clock.now += 2 * SUSPECT_MS;

    const err = await upload(m).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ImageError);
    expect(err).toMatchObject({ code: 'NoLiveWorker' });
    expect((err as Error).message).toMatch(/heard from lately/);

    const server = serve({ fetch: publicRoutes(m.images).fetch, port: 0, hostname: '127.0.0.1' });
    cleanups.push(() => new Promise((r) => server.close(r)));
    await new Promise((r) => server.once('listening', r));
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}/v1/images`, { method: 'POST', body: PNG });
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('NoLiveWorker');
    expect(body.error.message).not.toMatch(/127\.0\.0\.1|http:/);
  });

  it('answers 507 when the workers it heard lately really lack room', async () => {
    const m = await follower(['w1', 'w2']);
    m.raft.leading = true;
    await beat(m, 'w1', 10);
    await beat(m, 'w2', 10);

    await expect(upload(m)).rejects.toMatchObject({ code: 'InsufficientStorage' });
  });

  it('judges room only on workers heard lately: 507 for them, 503 once they fall silent', async () => {
    const m = await follower(['w1', 'w2', 'w3']);
    m.raft.leading = true;
    await beat(m, 'w1');
    await beat(m, 'w2', 10);
    // w3 was heard with no room, then fell silent: its figures say nothing about it now.
    await beat(m, 'w3', 10);
    m.clock.now += SUSPECT_MS / 2;
    await beat(m, 'w1');
    await beat(m, 'w2', 10);
    m.clock.now += SUSPECT_MS / 2 + 100;

    const err = await upload(m).catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'InsufficientStorage' });
    // Now w2 falls silent too: the only worker with room (w1) needs a peer nobody can vouch for.
    m.clock.now += SUSPECT_MS / 2;
    await beat(m, 'w1');
    m.clock.now += SUSPECT_MS / 2 + 100;
    await expect(upload(m)).rejects.toMatchObject({ code: 'NoLiveWorker' });
  });
});
