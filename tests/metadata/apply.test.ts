import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type Command, parseCommand, type ReplicaChange } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import {
  applyOne,
  EntryLog,
  MetadataFixture,
  recordCmd,
  registerCmd,
  SHA_A,
  SHA_B,
} from './metadataFixture.ts';

const fx = new MetadataFixture();
let sm: MetadataStateMachine;
let log: EntryLog;

beforeEach(async () => {
  sm = await fx.machine();
  log = new EntryLog();
});
afterEach(() => fx.cleanup());

async function setup(...commands: Command[]): Promise<void> {
  for (const c of commands) await applyOne(sm, log, c);
}

/** Applies `command`, expecting it to be a no-op on every table with `code`. */
async function expectRejected(command: Command, code: string): Promise<void> {
  const before = await sm.tableDigest();
  const result = await applyOne(sm, log, command);
  expect(result).toEqual({ ok: false, code, message: expect.any(String) });
  const after = await sm.tableDigest();
  expect(after.sha256).toBe(before.sha256);
  expect(after.appliedIndex).toBe(before.appliedIndex + 1);
}

describe('registerWorker and updateWorker', () => {
  it('registers a new worker up, with its registration as last contact', async () => {
    const result = await applyOne(sm, log, registerCmd('w1', 1234, 'zA'));
    const node = {
      nodeId: 'w1',
      url: 'http://127.0.0.1:9000/w1',
      zone: 'zA',
      state: 'up',
      stateSince: 1234,
      lastSeen: 1234,
      diskUsed: 0,
      diskFree: 0,
      objectCount: 0,
    };
    expect(result).toEqual({ ok: true, created: true, node });
    expect(await sm.getNode('w1')).toEqual(node);
    expect(await sm.listNodes()).toEqual([node]);
    expect(await sm.stats()).toEqual({ appliedIndex: 1, objects: 0, bytes: 0, nodes: {} });
  });

  it('brings a down worker that registers again back up, but leaves a draining one draining', async () => {
    await setup(
      registerCmd('w1', 1000),
      registerCmd('w2', 1000),
      { type: 'markNodeState', nodeId: 'w1', state: 'down', at: 2000 },
      { type: 'markNodeState', nodeId: 'w2', state: 'draining', at: 2000 },
    );
    const again = await applyOne(sm, log, { ...registerCmd('w1', 3000, 'zB'), url: 'http://127.0.0.1:9100' });
    expect(again).toMatchObject({ ok: true, created: false });
    expect(await sm.getNode('w1')).toMatchObject({
      url: 'http://127.0.0.1:9100',
      zone: 'zB',
      state: 'up',
      stateSince: 3000,
      lastSeen: 3000,
    });
    await applyOne(sm, log, registerCmd('w2', 3000));
    expect(await sm.getNode('w2')).toMatchObject({ state: 'draining', stateSince: 2000, lastSeen: 3000 });
  });

  it('updates a worker url or zone, and rejects an unknown worker', async () => {
    await setup(registerCmd('w1', 1000, 'zA'));
    const result = await applyOne(sm, log, {
      type: 'updateWorker',
      nodeId: 'w1',
      url: 'http://127.0.0.1:9999',
    });
    expect(result).toMatchObject({
      ok: true,
      node: { nodeId: 'w1', url: 'http://127.0.0.1:9999', zone: 'zA' },
    });
    await applyOne(sm, log, { type: 'updateWorker', nodeId: 'w1', zone: 'zC' });
    expect(await sm.getNode('w1')).toMatchObject({ url: 'http://127.0.0.1:9999', zone: 'zC', state: 'up' });
    await expectRejected({ type: 'updateWorker', nodeId: 'w9', zone: 'zC' }, 'NodeUnknown');
  });
});

describe('listNodes (served from a cache of the node table)', () => {
  it('follows every change to the node table, including one applied while a read runs', async () => {
    await setup(registerCmd('w1', 1000));
    expect((await sm.listNodes()).map((n) => n.nodeId)).toEqual(['w1']);
    await setup(registerCmd('w2', 1000));
    expect((await sm.listNodes()).map((n) => n.nodeId)).toEqual(['w1', 'w2']);
    await setup({
      type: 'heartbeatSummary',
      nodes: [{ nodeId: 'w1', diskUsed: 7, diskFree: 93, objectCount: 1, lastSeen: 2000 }],
    });
    expect((await sm.listNodes())[0]).toMatchObject({ nodeId: 'w1', diskUsed: 7, lastSeen: 2000 });

    // A read racing an apply: whatever it returned, the next read sees the change.
    const racing = sm.listNodes();
    await Promise.all([racing, setup({ type: 'markNodeState', nodeId: 'w2', state: 'down', at: 3000 })]);
    expect((await sm.listNodes())[1]).toMatchObject({ nodeId: 'w2', state: 'down', stateSince: 3000 });
  });

  it('refuses a state change whose expected state is no longer the node state (an undrain beats a finishing drain)', async () => {
    await setup(registerCmd('w1', 1000), {
      type: 'markNodeState',
      nodeId: 'w1',
      state: 'draining',
      at: 2000,
    });
    // The drain decided 'drained' while w1 was draining; an undrain committed first.
    await setup({ type: 'markNodeState', nodeId: 'w1', state: 'up', expected: 'draining', at: 3000 });
    const late = await applyOne(sm, log, {
      type: 'markNodeState',
      nodeId: 'w1',
      state: 'drained',
      expected: 'draining',
      at: 4000,
    });
    expect(late).toMatchObject({ ok: false, code: 'StateChanged' });
    expect(await sm.getNode('w1')).toMatchObject({ state: 'up', stateSince: 3000 });
  });

  it('hands out copies: a caller changing its answer does not change the next one', async () => {
    await setup(registerCmd('w1', 1000));
    const first = await sm.listNodes();
    first[0]!.state = 'down';
    expect((await sm.listNodes())[0]!.state).toBe('up');
  });
});

describe('heartbeatSummary', () => {
  it('records the latest usage of many nodes in one entry, skipping unknown and stale reports', async () => {
    await setup(registerCmd('w1', 1000), registerCmd('w2', 1000), recordCmd('o1', ['w1', 'w2'], 50));
    const result = await applyOne(sm, log, {
      type: 'heartbeatSummary',
      nodes: [
        { nodeId: 'w1', diskUsed: 500, diskFree: 9500, objectCount: 3, lastSeen: 5000 },
        { nodeId: 'w2', diskUsed: 600, diskFree: 9400, objectCount: 4, lastSeen: 900 },
        { nodeId: 'ghost', diskUsed: 1, diskFree: 1, objectCount: 1, lastSeen: 5000 },
      ],
    });
    expect(result).toEqual({ ok: true, updated: 1, unknown: ['ghost'] });
    expect(await sm.getNode('w1')).toMatchObject({
      state: 'up',
      lastSeen: 5000,
      diskUsed: 500,
      diskFree: 9500,
      objectCount: 3,
    });
    // w2's report predates what the table holds (e.g. a deposed leader's summary).
    expect(await sm.getNode('w2')).toMatchObject({ lastSeen: 1000, diskUsed: 0, objectCount: 0 });
    expect(await sm.getNode('ghost')).toBeNull();
    // The worker's own report never touches the table-derived counters.
    expect((await sm.stats()).nodes).toEqual({
      w1: { objects: 1, bytes: 50 },
      w2: { objects: 1, bytes: 50 },
    });
  });
});

describe('recordObject', () => {
  beforeEach(() => setup(registerCmd('w1'), registerCmd('w2'), registerCmd('w3')));

  it('writes the object, a node index row per replica and every counter', async () => {
    const result = await applyOne(sm, log, recordCmd('img.png', ['w2', 'w1'], 300));
    const object = {
      id: 'img.png',
      size: 300,
      sha256: 'a'.repeat(64),
      contentType: 'image/png',
      createdAt: 2000,
      replicas: ['w2', 'w1'],
    };
    expect(result).toEqual({ ok: true, created: true, object });
    expect(await sm.getObject('img.png')).toEqual(object);
    expect((await sm.objectsOnNode('w1')).items).toEqual(['img.png']);
    expect((await sm.objectsOnNode('w2')).items).toEqual(['img.png']);
    expect((await sm.objectsOnNode('w3')).items).toEqual([]);
    expect(await sm.stats()).toEqual({
      appliedIndex: 4,
      objects: 1,
      bytes: 300,
      nodes: { w1: { objects: 1, bytes: 300 }, w2: { objects: 1, bytes: 300 } },
    });
    await applyOne(sm, log, recordCmd('b', ['w1', 'w3'], 5));
    expect(await sm.stats()).toMatchObject({
      objects: 2,
      bytes: 305,
      nodes: { w1: { objects: 2, bytes: 305 }, w2: { objects: 1, bytes: 300 }, w3: { objects: 1, bytes: 5 } },
    });
  });

  it('is idempotent for the same id and bytes, and refuses other bytes under an existing id', async () => {
    const first = await applyOne(sm, log, recordCmd('img', ['w1', 'w2'], 300));
    const before = await sm.tableDigest();
    // A retry after a leader change, placed elsewhere: the first record stands.
    const retry = await applyOne(sm, log, recordCmd('img', ['w3', 'w2'], 300));
    expect(retry).toEqual({ ok: true, created: false, object: (first as { object: unknown }).object });
    expect((await sm.tableDigest()).sha256).toBe(before.sha256);
    await expectRejected(recordCmd('img', ['w1', 'w2'], 300, SHA_B), 'ObjectExists');
    await expectRejected(recordCmd('img', ['w1', 'w2'], 301), 'ObjectExists');
  });

  it('keeps the crc32c an upload names, and records without one as they were', async () => {
    const withCrc = await applyOne(sm, log, { ...recordCmd('new', ['w1', 'w2']), crc32c: '0badf00d' });
    expect(withCrc).toMatchObject({ ok: true, object: { id: 'new', crc32c: '0badf00d' } });
    expect(await sm.getObject('new')).toMatchObject({ crc32c: '0badf00d' });
    // An entry logged before the field existed applies as it did then: no crc32c key at all.
    const old = parseCommand(JSON.parse(JSON.stringify(recordCmd('old', ['w1', 'w2']))));
    expect(old.ok).toBe(true);
    await applyOne(sm, log, (old as { command: Command }).command);
    expect(Object.keys((await sm.getObject('old'))!)).not.toContain('crc32c');
  });

  it('refuses a replica on an unregistered node and writes nothing', async () => {
    await expectRejected(recordCmd('img', ['w1', 'w7']), 'NodeUnknown');
    expect(await sm.getObject('img')).toBeNull();
    expect((await sm.objectsOnNode('w1')).items).toEqual([]);
    expect((await sm.stats()).objects).toBe(0);
  });
});

describe('deleteObject', () => {
  it('removes the object, its index rows and its counters, and returns the replicas to clean up', async () => {
    await setup(registerCmd('w1'), registerCmd('w2'), recordCmd('keep', ['w1', 'w2'], 7));
    const emptyish = await sm.tableDigest();
    await setup(recordCmd('gone', ['w2', 'w1'], 40));
    const result = await applyOne(sm, log, { type: 'deleteObject', id: 'gone' });
    expect(result).toMatchObject({ ok: true, object: { id: 'gone', replicas: ['w2', 'w1'], size: 40 } });
    expect(await sm.getObject('gone')).toBeNull();
    expect((await sm.objectsOnNode('w1')).items).toEqual(['keep']);
    // Every table is back to what it was before the object existed.
    expect((await sm.tableDigest()).sha256).toBe(emptyish.sha256);
    await applyOne(sm, log, { type: 'deleteObject', id: 'keep' });
    expect(await sm.stats()).toEqual({ appliedIndex: log.lastIndex, objects: 0, bytes: 0, nodes: {} });
    await expectRejected({ type: 'deleteObject', id: 'gone' }, 'ObjectNotFound');
  });
});

describe('replica changes', () => {
  beforeEach(() =>
    setup(registerCmd('w1'), registerCmd('w2'), registerCmd('w3'), recordCmd('o', ['w1', 'w2'], 10)),
  );

  it('addReplica appends a replica with its index row and counter', async () => {
    const result = await applyOne(sm, log, { type: 'addReplica', id: 'o', nodeId: 'w3' });
    expect(result).toMatchObject({ ok: true, object: { id: 'o', replicas: ['w1', 'w2', 'w3'] } });
    expect((await sm.objectsOnNode('w3')).items).toEqual(['o']);
    expect(await sm.stats()).toMatchObject({
      objects: 1,
      bytes: 10,
      nodes: { w3: { objects: 1, bytes: 10 } },
    });
    await expectRejected({ type: 'addReplica', id: 'o', nodeId: 'w3' }, 'ReplicaExists');
    await expectRejected({ type: 'addReplica', id: 'nope', nodeId: 'w3' }, 'ObjectNotFound');
    await expectRejected({ type: 'addReplica', id: 'o', nodeId: 'w9' }, 'NodeUnknown');
  });

  it('addReplica stops at the replica bound', async () => {
    for (let i = 4; i <= 9; i++) await setup(registerCmd(`w${i}`));
    for (let i = 3; i <= 8; i++) await setup({ type: 'addReplica', id: 'o', nodeId: `w${i}` });
    expect((await sm.getObject('o'))?.replicas).toHaveLength(8);
    await expectRejected({ type: 'addReplica', id: 'o', nodeId: 'w9' }, 'TooManyReplicas');
  });

  it('removeReplica drops one replica but never the last', async () => {
    const result = await applyOne(sm, log, { type: 'removeReplica', id: 'o', nodeId: 'w1' });
    expect(result).toMatchObject({ ok: true, object: { replicas: ['w2'] } });
    expect((await sm.objectsOnNode('w1')).items).toEqual([]);
    expect((await sm.stats()).nodes).toEqual({ w2: { objects: 1, bytes: 10 } });
    await expectRejected({ type: 'removeReplica', id: 'o', nodeId: 'w1' }, 'ReplicaNotFound');
    await expectRejected({ type: 'removeReplica', id: 'o', nodeId: 'w2' }, 'LastReplica');
    await expectRejected({ type: 'removeReplica', id: 'nope', nodeId: 'w2' }, 'ObjectNotFound');
  });

  it('replaceReplica moves a replica in place, index and counters included, in one entry', async () => {
    const result = await applyOne(sm, log, { type: 'replaceReplica', id: 'o', add: 'w3', remove: 'w1' });
    expect(result).toMatchObject({ ok: true, object: { replicas: ['w3', 'w2'] } });
    expect((await sm.objectsOnNode('w1')).items).toEqual([]);
    expect((await sm.objectsOnNode('w3')).items).toEqual(['o']);
    expect((await sm.stats()).nodes).toEqual({
      w2: { objects: 1, bytes: 10 },
      w3: { objects: 1, bytes: 10 },
    });
    await expectRejected({ type: 'replaceReplica', id: 'o', add: 'w1', remove: 'w1x' }, 'ReplicaNotFound');
    await expectRejected({ type: 'replaceReplica', id: 'o', add: 'w2', remove: 'w3' }, 'ReplicaExists');
    await expectRejected({ type: 'replaceReplica', id: 'o', add: 'w9', remove: 'w3' }, 'NodeUnknown');
    await expectRejected({ type: 'replaceReplica', id: 'x', add: 'w1', remove: 'w3' }, 'ObjectNotFound');
  });
});

describe('replica changes decided on an object that has changed since', () => {
  const seen = { sha256: SHA_A, createdAt: 2000 };
  beforeEach(() =>
    setup(
      registerCmd('w1'),
      registerCmd('w2'),
      registerCmd('w3'),
      registerCmd('w4'),
      recordCmd('o', ['w1', 'w2'], 10),
      // The id is deleted and uploaded again, once with other bytes and once with the same ones.
      { type: 'deleteObject', id: 'o' },
      recordCmd('o', ['w2', 'w3'], 10, SHA_B),
      recordCmd('same', ['w1', 'w2'], 10),
      { type: 'deleteObject', id: 'same' },
      { ...recordCmd('same', ['w2', 'w3'], 10), createdAt: 5000 },
    ),
  );

  it('refuses every kind as ObjectChanged, and applies it when the object is the one it expects', async () => {
    for (const id of ['o', 'same']) {
      await expectRejected({ type: 'addReplica', id, nodeId: 'w4', expected: seen }, 'ObjectChanged');
      await expectRejected({ type: 'removeReplica', id, nodeId: 'w2', expected: seen }, 'ObjectChanged');
      await expectRejected(
        { type: 'replaceReplica', id, add: 'w1', remove: 'w3', expected: seen },
        'ObjectChanged',
      );
    }
    const now = { sha256: SHA_B, createdAt: 2000 };
    expect(
      await applyOne(sm, log, { type: 'replaceReplica', id: 'o', add: 'w1', remove: 'w3', expected: now }),
    ).toMatchObject({
      ok: true,
      object: { replicas: ['w2', 'w1'] },
    });
  });

  it('refuses a change planned on other copies than the record lists, whatever their order', async () => {
    // `same` is on w2 and w3; the change was planned when it was on w1 too.
    const planned = { sha256: SHA_A, createdAt: 5000, replicas: ['w1', 'w2', 'w3'] };
    await expectRejected(
      { type: 'removeReplica', id: 'same', nodeId: 'w2', expected: planned },
      'ObjectChanged',
    );
    await expectRejected(
      { type: 'replaceReplica', id: 'same', add: 'w4', remove: 'w2', expected: planned },
      'ObjectChanged',
    );
    await expectRejected(
      { type: 'addReplica', id: 'same', nodeId: 'w4', expected: planned },
      'ObjectChanged',
    );
    const current = { ...planned, replicas: ['w3', 'w2'] };
    expect(
      await applyOne(sm, log, { type: 'addReplica', id: 'same', nodeId: 'w4', expected: current }),
    ).toMatchObject({ ok: true, object: { replicas: ['w2', 'w3', 'w4'] } });
    // An entry logged before `expected` carried the copies applies as it did then.
    const unlisted = { sha256: SHA_A, createdAt: 5000 };
    expect(
      await applyOne(sm, log, { type: 'removeReplica', id: 'same', nodeId: 'w4', expected: unlisted }),
    ).toMatchObject({ ok: true, object: { replicas: ['w2', 'w3'] } });
  });

  it('gives a copy to no node that is down or drained, but applies an entry logged before the check as it was', async () => {
    const now = { sha256: SHA_B, createdAt: 2000 };
    for (const state of ['down', 'drained'] as const) {
      await setup({ type: 'markNodeState', nodeId: 'w4', state, at: 3000 });
      await expectRejected({ type: 'addReplica', id: 'o', nodeId: 'w4', expected: now }, 'NodeLeaving');
      await expectRejected(
        { type: 'replaceReplica', id: 'o', add: 'w4', remove: 'w3', expected: now },
        'NodeLeaving',
      );
    }
    // An entry without `expected` was proposed before this check existed: it applies as it did then.
    expect(await applyOne(sm, log, { type: 'addReplica', id: 'o', nodeId: 'w4' })).toMatchObject({
      ok: true,
    });
    await setup({ type: 'removeReplica', id: 'o', nodeId: 'w4' });
    // A draining node may still gain a copy (a rejoin re-adopting it); the drain moves it on.
    await setup({ type: 'markNodeState', nodeId: 'w4', state: 'draining', at: 3000 });
    expect(
      await applyOne(sm, log, { type: 'addReplica', id: 'o', nodeId: 'w4', expected: now }),
    ).toMatchObject({
      ok: true,
    });
    // Taking a copy away from such a node is what repair is for.
    await setup({ type: 'markNodeState', nodeId: 'w3', state: 'down', at: 3000 });
    await setup({ type: 'markNodeState', nodeId: 'w1', state: 'up', at: 3000 });
    expect(
      await applyOne(sm, log, { type: 'replaceReplica', id: 'o', add: 'w1', remove: 'w3', expected: now }),
    ).toMatchObject({ ok: true });
  });
});

describe('replicaChanges', () => {
  const before: Command[] = [
    registerCmd('w1'),
    registerCmd('w2'),
    registerCmd('w3'),
    registerCmd('w4'),
    recordCmd('a', ['w1', 'w2'], 10),
    recordCmd('b', ['w1', 'w3'], 20),
  ];
  beforeEach(() => setup(...before));

  const changes: ReplicaChange[] = [
    { type: 'replaceReplica', id: 'a', add: 'w4', remove: 'w1' },
    { type: 'replaceReplica', id: 'b', add: 'w4', remove: 'w1' },
    // Meets the state the first change left: w1 no longer holds a.
    { type: 'removeReplica', id: 'a', nodeId: 'w1' },
    { type: 'addReplica', id: 'a', nodeId: 'w3' },
    { type: 'removeReplica', id: 'a', nodeId: 'w3' },
    { type: 'addReplica', id: 'gone', nodeId: 'w3' },
  ];

  it('applies each change in order, seeing the ones before it, with one result per change', async () => {
    const result = await applyOne(sm, log, { type: 'replicaChanges', changes });
    expect(result).toEqual({
      ok: true,
      results: [
        { ok: true, object: expect.objectContaining({ id: 'a', replicas: ['w4', 'w2'] }) },
        { ok: true, object: expect.objectContaining({ id: 'b', replicas: ['w4', 'w3'] }) },
        { ok: false, code: 'ReplicaNotFound', message: expect.any(String) },
        { ok: true, object: expect.objectContaining({ id: 'a', replicas: ['w4', 'w2', 'w3'] }) },
        { ok: true, object: expect.objectContaining({ id: 'a', replicas: ['w4', 'w2'] }) },
        { ok: false, code: 'ObjectNotFound', message: expect.any(String) },
      ],
    });
    expect(await sm.stats()).toEqual({
      appliedIndex: log.lastIndex,
      objects: 2,
      bytes: 30,
      nodes: { w2: { objects: 1, bytes: 10 }, w3: { objects: 1, bytes: 20 }, w4: { objects: 2, bytes: 30 } },
    });
    expect((await sm.objectsOnNode('w1')).items).toEqual([]);
    expect((await sm.objectsOnNode('w4')).items).toEqual(['a', 'b']);
  });

  it('leaves the tables exactly as the same changes in entries of their own would', async () => {
    await applyOne(sm, log, { type: 'replicaChanges', changes });
    const separate = await fx.machine();
    const separateLog = new EntryLog();
    for (const c of [...before, ...changes]) {
      await applyOne(separate, separateLog, c);
    }
    expect((await separate.tableDigest()).sha256).toBe((await sm.tableDigest()).sha256);
  });

  it('refuses an empty list or a change of another kind before it reaches the log', () => {
    expect(parseCommand({ type: 'replicaChanges', changes: [] }).ok).toBe(false);
    expect(parseCommand({ type: 'replicaChanges', changes: [{ type: 'deleteObject', id: 'a' }] }).ok).toBe(
      false,
    );
  });
});

describe('markNodeState', () => {
  it('records the state and when it changed, and returns the previous one', async () => {
    await setup(registerCmd('w1', 1000));
    const result = await applyOne(sm, log, {
      type: 'markNodeState',
      nodeId: 'w1',
      state: 'suspect',
      at: 4000,
    });
    expect(result).toMatchObject({ ok: true, previous: 'up', node: { state: 'suspect', stateSince: 4000 } });
    // The same state again is not a change: stateSince keeps the start of the suspicion.
    const again = await applyOne(sm, log, {
      type: 'markNodeState',
      nodeId: 'w1',
      state: 'suspect',
      at: 5000,
    });
    expect(again).toMatchObject({ ok: true, previous: 'suspect', node: { stateSince: 4000 } });
    await applyOne(sm, log, { type: 'markNodeState', nodeId: 'w1', state: 'drained', at: 6000 });
    expect(await sm.getNode('w1')).toMatchObject({ state: 'drained', stateSince: 6000, lastSeen: 1000 });
    await expectRejected({ type: 'markNodeState', nodeId: 'w2', state: 'down', at: 1 }, 'NodeUnknown');
  });
});

describe('removeWorker', () => {
  const remove = (nodeId: string, at = 9000): Command => ({ type: 'removeWorker', nodeId, at });
  const drained = (nodeId: string): Command => ({
    type: 'markNodeState',
    nodeId,
    state: 'drained',
    at: 5000,
  });

  it('removes only a drained worker that no record names a copy on', async () => {
    await setup(registerCmd('w1'), registerCmd('w2'), registerCmd('w3'), recordCmd('a', ['w1', 'w2']));
    await expectRejected(remove('w1'), 'NodeNotDrained');
    await setup({ type: 'markNodeState', nodeId: 'w1', state: 'draining', at: 4000 });
    await expectRejected(remove('w1'), 'NodeNotDrained');
    // Drained in the table while a record still names its copy (an upload placed before the drain).
    await setup(drained('w1'));
    await expectRejected(remove('w1'), 'NodeHoldsCopies');

    await setup({ type: 'replaceReplica', id: 'a', add: 'w3', remove: 'w1' });
    const before = await sm.getNode('w1');
    expect(await applyOne(sm, log, remove('w1'))).toEqual({ ok: true, node: before });
    expect(await sm.getNode('w1')).toBeNull();
    expect((await sm.listNodes()).map((n) => n.nodeId)).toEqual(['w2', 'w3']);
    expect(await sm.getRemovedNode('w1')).toEqual({ url: before!.url, zone: before!.zone, removedAt: 9000 });
    expect((await sm.stats()).nodes).toEqual({
      w2: { objects: 1, bytes: 100 },
      w3: { objects: 1, bytes: 100 },
    });
    // Gone: removing it again, or an id never registered, is NodeUnknown.
    await expectRejected(remove('w1'), 'NodeUnknown');
    await expectRejected(remove('w9'), 'NodeUnknown');
  });

  it('sees a copy recorded earlier in the same apply batch', async () => {
    await setup(registerCmd('w1'), registerCmd('w2'), drained('w1'));
    // recordObject checks registration only: an upload placed on w1 before its drain can land now.
    const results = await sm.apply([log.command(recordCmd('a', ['w1', 'w2'])), log.command(remove('w1'))]);
    expect(results.map((r) => r.result)).toEqual([
      expect.objectContaining({ ok: true, created: true }),
      { ok: false, code: 'NodeHoldsCopies', message: expect.any(String) },
    ]);
    expect(await sm.getNode('w1')).not.toBeNull();
  });

  it('never lets the removed id register again, and keeps that through snapshots', async () => {
    await setup(registerCmd('w1'), registerCmd('w2'), drained('w1'), remove('w1'));
    await expectRejected(registerCmd('w1', 10_000), 'NodeRemoved');
    expect(await sm.getNode('w1')).toBeNull();
    // Grouped with other commands, the registration is refused as alone; a removal is never grouped.
    const batch = await applyOne(sm, log, {
      type: 'commandBatch',
      commands: [registerCmd('w1', 11_000), registerCmd('w4', 11_000), remove('w2')],
    });
    expect(batch).toEqual({
      ok: true,
      results: [
        { ok: false, code: 'NodeRemoved', message: expect.any(String) },
        expect.objectContaining({ ok: true, created: true }),
        { ok: false, code: 'InvalidCommand', message: 'a removeWorker command cannot be grouped' },
      ],
    });
    const restored = await fx.expectReplicasAgree(sm, log.entries);
    expect(await restored.getRemovedNode('w1')).toMatchObject({ removedAt: 9000 });
    expect((await restored.listNodes()).map((n) => n.nodeId)).toEqual(['w2', 'w4']);
    const again = await restored.apply([
      {
        term: 1,
        index: restored.appliedIndex() + 1,
        type: 'normal',
        data: JSON.stringify(registerCmd('w1')),
      },
    ]);
    expect(again[0]!.result).toMatchObject({ ok: false, code: 'NodeRemoved' });
  });
});

describe('entries', () => {
  it('returns one result per command entry, with its index and request id', async () => {
    const entries = [
      log.empty(),
      log.command({ ...registerCmd('w1'), requestId: 'req-a' }),
      log.confChange(),
      log.command({ type: 'deleteObject', id: 'nope' }),
      log.empty(),
    ];
    const results = await sm.apply(entries);
    expect(results).toEqual([
      { index: 2, requestId: 'req-a', result: expect.objectContaining({ ok: true, created: true }) },
      { index: 4, requestId: null, result: expect.objectContaining({ ok: false, code: 'ObjectNotFound' }) },
    ]);
    // Entries that carry no command still advance the applied index.
    expect(sm.appliedIndex()).toBe(5);
    expect((await sm.tableDigest()).appliedIndex).toBe(5);
  });

  it('turns an entry that fails validation into an InvalidCommand no-op', async () => {
    await setup(registerCmd('w1'));
    const before = await sm.tableDigest();
    const results = await sm.apply([
      log.raw('{"type":"deleteObject","id":"../x","requestId":"r1"}'),
      log.raw('not json at all'),
    ]);
    expect(results).toEqual([
      {
        index: 2,
        requestId: 'r1',
        result: { ok: false, code: 'InvalidCommand', message: expect.any(String) },
      },
      {
        index: 3,
        requestId: null,
        result: { ok: false, code: 'InvalidCommand', message: expect.any(String) },
      },
    ]);
    expect(await sm.tableDigest()).toEqual({ appliedIndex: 3, sha256: before.sha256 });
  });

  it('refuses entries out of order rather than skipping or repeating one', async () => {
    const first = log.command(registerCmd('w1'));
    const second = log.command(registerCmd('w2'));
    const third = log.command(registerCmd('w3'));
    await expect(sm.apply([second])).rejects.toThrow(/out of order/);
    await sm.apply([first]);
    await expect(sm.apply([first])).rejects.toThrow(/out of order/);
    await expect(sm.apply([second, second])).rejects.toThrow(/out of order/);
    // One call is one batch: the repeat refused it whole, the first `second` included.
    expect(sm.appliedIndex()).toBe(1);
    expect((await sm.listNodes()).map((n) => n.nodeId)).toEqual(['w1']);
    await sm.apply([second, third]);
    expect((await sm.listNodes()).map((n) => n.nodeId)).toEqual(['w1', 'w2', 'w3']);
  });
});
