// A registration cannot move a worker: the same id at another URL is refused (409) and the node
// table keeps the recorded URL, while the worker restarting at its URL registers as before. A
// worker removed for good (`worker remove`) is refused (410) when it registers or beats again.
// A real metadata state machine on LevelDB behind the real worker routes.

import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { createLogger } from '../../src/logging.ts';
import { workerRoutes } from '../../src/manager/http/workerRoutes.ts';
import type { RaftAccess } from '../../src/manager/imageService.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { WorkerRegistry } from '../../src/manager/workerRegistry.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { EntryLog, MetadataFixture } from '../metadata/metadataFixture.ts';
import { makeDataDir, removeDir } from '../storagenode/workerHarness.ts';

const SECRET = 'registration-secret';
const fx = new MetadataFixture();
const dirs: string[] = [];

afterEach(async () => {
  for (const d of dirs.splice(0)) await removeDir(d);
  await fx.cleanup();
});

/** A leader that applies each proposal to `sm` in order. */
function leadingRaft(sm: MetadataStateMachine): RaftAccess {
  const entries = new EntryLog();
  let tail: Promise<unknown> = Promise.resolve();
  return {
    isLeader: () => true,
    leaderInfo: () => ({ id: 'm1', url: null }),
    readIndex: () => tail.then(() => {}),
    propose(data: string, requestId: string) {
      const run = tail.then(async () => {
        const results = await sm.apply([entries.raw(data)]);
        return results.find((r) => r.requestId === requestId)?.result;
      });
      tail = run.catch(() => {});
      return run;
    },
  } as RaftAccess;
}

async function manager() {
  const sm = await fx.machine();
  const raft = leadingRaft(sm);
  const spoolDir = await makeDataDir();
  dirs.push(spoolDir);
  const registry = new WorkerRegistry({
    raft,
    metadata: sm,
    liveness: new WorkerLiveness({ suspectAfterMs: 3_000 }),
    log: createLogger('test'),
    heartbeatIntervalMs: 1_000,
    summaryIntervalMs: 5_000,
    spoolDir,
  });
  return {
    sm,
    raft,
    app: workerRoutes({ registry, secret: SECRET, heartbeatIntervalMs: 1_000 }),
  };
}

async function register(app: ReturnType<typeof workerRoutes>, url: string, inventory: object[] = []) {
  const header = { id: 'w3', url, zone: 'z1', diskUsed: 0, diskFree: 1 << 30, blobCount: 0, blobBytes: 0 };
  const res = await app.request('http://127.0.0.1/internal/v1/workers/register', {
    method: 'POST',
    headers: { 'content-type': 'application/x-ndjson', [CLUSTER_SECRET_HEADER]: SECRET },
    body: [header, ...inventory].map((l) => JSON.stringify(l)).join('\n'),
  });
  return { status: res.status, body: (await res.json()) as { error?: { code: string; message: string } } };
}

describe('POST /internal/v1/workers/register with a known id', () => {
  it('takes the worker again at its recorded URL', async () => {
    const { sm, app } = await manager();
    expect((await register(app, 'http://127.0.0.1:7103')).status).toBe(200);
    expect((await register(app, 'http://127.0.0.1:7103')).status).toBe(200);
    expect((await sm.getNode('w3'))?.url).toBe('http://127.0.0.1:7103');
  });

  it('refuses another URL with 409 naming the operator way, and keeps the recorded one', async () => {
    const { sm, app } = await manager();
    expect((await register(app, 'http://127.0.0.1:7103')).status).toBe(200);
    const moved = await register(app, 'http://127.0.0.1:9999');
    expect(moved.status).toBe(409);
    expect(moved.body.error?.code).toBe('WorkerUrlConflict');
    expect(moved.body.error?.message).toContain('imgvault worker drain w3');
    expect((await sm.getNode('w3'))?.url).toBe('http://127.0.0.1:7103');
  });
});

describe('a worker removed for good', () => {
  it('is refused with 410 WorkerRemoved when it registers or heartbeats again', async () => {
    const { sm, raft, app } = await manager();
    expect((await register(app, 'http://127.0.0.1:7103')).status).toBe(200);
    await proposeCommand(raft, { type: 'markNodeState', nodeId: 'w3', state: 'drained', at: 2 });
    expect(await proposeCommand(raft, { type: 'removeWorker', nodeId: 'w3', at: 3 })).toMatchObject({
      ok: true,
    });

    const again = await register(app, 'http://127.0.0.1:7103');
    expect(again.status).toBe(410);
    expect(again.body.error).toEqual({
      code: 'WorkerRemoved',
      message: expect.stringContaining('new worker id'),
    });
    expect(await sm.getNode('w3')).toBeNull();
    const beat = await app.request('http://127.0.0.1/internal/v1/workers/heartbeat', {
      method: 'POST',
      headers: { 'content-type': 'application/json', [CLUSTER_SECRET_HEADER]: SECRET },
      body: JSON.stringify({ id: 'w3', diskUsed: 0, diskFree: 1, blobCount: 0, blobBytes: 0 }),
    });
    expect(beat.status).toBe(410);
    expect(await beat.json()).toMatchObject({ error: { code: 'WorkerRemoved' } });
  });
});
