// The operator's drain and undrain routes over a real state machine (LevelDB in a temp folder) and
// a one-member Raft stand-in that applies each proposal in order.

import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { DrainError, startDrain, undrain } from '../../src/manager/drain.ts';
import { adminRoutes } from '../../src/manager/http/adminRoutes.ts';
import type { RaftAccess } from '../../src/manager/imageService.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { EntryLog, MetadataFixture } from '../metadata/metadataFixture.ts';

const SECRET = 'admin-routes-test-secret';
const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

/** Leader while `leading.value`; otherwise a follower that knows the leader at LEADER_URL. */
const LEADER_URL = 'http://127.0.0.1:7999';
function raftOver(sm: MetadataStateMachine, leading = { value: true }): RaftAccess {
  const entries = new EntryLog();
  let tail: Promise<unknown> = Promise.resolve();
  return {
    isLeader: () => leading.value,
    leaderInfo: () => (leading.value ? { id: 'm1', url: null } : { id: 'm2', url: LEADER_URL }),
    readIndex: async () => {},
    propose(data, requestId) {
      const run = tail.then(async () => {
        const results = await sm.apply([entries.raw(data)]);
        return results.find((r) => r.requestId === requestId)?.result;
      });
      tail = run.catch(() => {});
      return run;
    },
  };
}

async function setup(leading = { value: true }) {
  const sm = await fx.machine();
  const raft = raftOver(sm, leading);
  for (const id of ['w1', 'w2', 'w3']) {
    await proposeCommand(raft, {
      type: 'registerWorker',
      nodeId: id,
      url: `http://127.0.0.1:1/${id}`,
      zone: `zone-${id}`,
      at: Date.now(),
    });
  }
  const app = adminRoutes({ raft, metadata: sm, secret: SECRET });
  const post = (path: string, secret = SECRET) =>
    app.request(path, { method: 'POST', headers: { [CLUSTER_SECRET_HEADER]: secret } });
  return { sm, raft, app, post };
}

describe('drain and undrain', () => {
  it('takes a drain back: draining -> up, drained -> up, each committed and answered with the state', async () => {
    const { sm, post } = await setup();
    expect((await post('/v1/cluster/nodes/w1/drain')).status).toBe(202);
    expect((await sm.getNode('w1'))?.state).toBe('draining');
    const res = await post('/v1/cluster/nodes/w1/undrain');
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ nodeId: 'w1', state: 'up', objectsLeft: 0 });
    expect((await sm.getNode('w1'))?.state).toBe('up');
  });

  it('undoes a finished drain too', async () => {
    const { sm, raft } = await setup();
    await proposeCommand(raft, { type: 'markNodeState', nodeId: 'w2', state: 'drained', at: Date.now() });
    expect(await undrain(raft, sm, 'w2')).toMatchObject({ nodeId: 'w2', state: 'up' });
  });

  it('refuses an undrain of a node that is not draining (409), unknown (404) or a bad id (400)', async () => {
    const { post } = await setup();
    const notDraining = await post('/v1/cluster/nodes/w3/undrain');
    expect(notDraining.status).toBe(409);
    expect(await notDraining.json()).toMatchObject({ error: { code: 'NotDraining' } });
    const unknown = await post('/v1/cluster/nodes/w9/undrain');
    expect(unknown.status).toBe(404);
    expect(await unknown.json()).toMatchObject({ error: { code: 'NodeUnknown' } });
    expect((await post('/v1/cluster/nodes/-bad/undrain')).status).toBe(400);
  });

  it('requires the cluster secret', async () => {
    const { post, sm } = await setup();
    await post('/v1/cluster/nodes/w1/drain');
    const res = await post('/v1/cluster/nodes/w1/undrain', 'wrong-secret');
    expect(res.status).toBe(401);
    expect((await sm.getNode('w1'))?.state).toBe('draining');
  });

  it('redirects an undrain sent to a follower to the same path on the leader', async () => {
    const leading = { value: true };
    const { post } = await setup(leading);
    await post('/v1/cluster/nodes/w1/drain');
    leading.value = false;
    const res = await post('/v1/cluster/nodes/w1/undrain');
    expect(res.status).toBe(307);
    expect(res.headers.get('location')).toBe(`${LEADER_URL}/v1/cluster/nodes/w1/undrain`);
  });

  it('drain and undrain are leader-only functions with typed errors', async () => {
    const { sm, raft } = await setup();
    await expect(startDrain(raft, sm, 'nope')).rejects.toBeInstanceOf(DrainError);
    await expect(undrain(raft, sm, 'w1')).rejects.toMatchObject({ code: 'NotDraining' });
  });
});

describe('remove', () => {
  const del = (app: Awaited<ReturnType<typeof setup>>['app'], id: string, secret = SECRET) =>
    app.request(`/v1/cluster/nodes/${id}`, {
      method: 'DELETE',
      headers: { [CLUSTER_SECRET_HEADER]: secret },
    });

  it('removes a drained worker holding nothing; refuses one not drained (409), unknown (404), a bad id (400)', async () => {
    const { sm, raft, app } = await setup();
    const notDrained = await del(app, 'w1');
    expect(notDrained.status).toBe(409);
    expect(await notDrained.json()).toMatchObject({
      error: { code: 'NodeNotDrained', message: expect.stringContaining('imgvault worker drain w1') },
    });
    expect((await del(app, 'w9')).status).toBe(404);
    expect((await del(app, '-bad')).status).toBe(400);

    await proposeCommand(raft, { type: 'markNodeState', nodeId: 'w1', state: 'drained', at: Date.now() });
    const removed = await del(app, 'w1');
    expect(removed.status).toBe(200);
    expect(await removed.json()).toMatchObject({ nodeId: 'w1', alreadyRemoved: false });
    expect(await sm.getNode('w1')).toBeNull();
    // A retry whose first answer was lost finds it done.
    const again = await del(app, 'w1');
    expect([again.status, await again.json()]).toEqual([
      200,
      expect.objectContaining({ alreadyRemoved: true }),
    ]);
  });

  it('refuses a drained worker that a record still names a copy on', async () => {
    const { sm, raft, app } = await setup();
    await proposeCommand(raft, {
      type: 'recordObject',
      id: 'a',
      size: 10,
      sha256: 'a'.repeat(64),
      contentType: 'image/png',
      createdAt: 1,
      replicas: ['w1', 'w2'],
    });
    await proposeCommand(raft, { type: 'markNodeState', nodeId: 'w1', state: 'drained', at: Date.now() });
    const res = await del(app, 'w1');
    expect(res.status).toBe(409);
    expect(await res.json()).toMatchObject({ error: { code: 'NodeHoldsCopies' } });
    expect(await sm.getNode('w1')).not.toBeNull();
  });

  it('requires the operator credential and is redirected by a follower', async () => {
    const leading = { value: true };
    const { sm, raft, app } = await setup(leading);
    await proposeCommand(raft, { type: 'markNodeState', nodeId: 'w1', state: 'drained', at: Date.now() });
    expect((await del(app, 'w1', 'wrong-secret')).status).toBe(401);
    expect(await sm.getNode('w1')).not.toBeNull();
    leading.value = false;
    const res = await del(app, 'w1');
    expect(res.status).toBe(307);
    expect(res.headers.get('location')).toBe(`${LEADER_URL}/v1/cluster/nodes/w1`);
  });
});
