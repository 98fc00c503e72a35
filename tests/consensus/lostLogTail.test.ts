// A Raft log that lost its tail (LevelDB drops a damaged tail when it opens) while the state
// machine kept what it applied from it: the node refuses to start, naming the loss and the way
// back, instead of acknowledging again entries it no longer holds. Real LevelDB on a temp folder.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { entryKey, LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode } from '../../src/consensus/raftNode.ts';
import { openKv, proposePut, SOLE_MEMBERS } from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'lost-log-tail-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const noTransport = { send: () => {}, setPeer: () => {}, removePeer: () => {} };

it('refuses to start when the state machine applied entries the log no longer holds', async () => {
  const store = await LevelLogStore.open(join(root, 'raft'));
  const sm = await openKv(root);
  const node = await RaftNode.start({
    id: 'm1',
    tickMs: 10,
    store,
    stateMachine: sm,
    transport: noTransport,
    initialMembers: SOLE_MEMBERS,
  });
  await until('it leads', () => node.isLeader());
  for (const k of ['a', 'b', 'c']) await proposePut(node, k, 'v');
  const last = node.status().lastIndex;
  await node.stop();
  await store.close();
  await sm.close();

  // The tail gone, and the commit index as a lazily synced hard state may have left it.
  const db = new ClassicLevel<Buffer, string>(join(root, 'raft'), {
    keyEncoding: 'buffer',
    valueEncoding: 'utf8',
  });
  const hardState = JSON.parse((await db.get(Buffer.from('h'))) ?? '{}') as {
    term: number;
    vote: string;
    commit: number;
  };
  await db.batch([
    { type: 'del', key: entryKey(last) },
    { type: 'del', key: entryKey(last - 1) },
    { type: 'put', key: Buffer.from('h'), value: JSON.stringify({ ...hardState, commit: last - 2 }) },
  ]);
  await db.close();

  const reopened = await LevelLogStore.open(join(root, 'raft'));
  const again = await openKv(root);
  try {
    expect(again.appliedIndex()).toBe(last);
    await expect(
      RaftNode.start({
        id: 'm1',
        tickMs: 10,
        store: reopened,
        stateMachine: again,
        transport: noTransport,
        initialMembers: SOLE_MEMBERS,
      }),
    ).rejects.toThrow(`the Raft log ends at index ${last - 2}, but the state machine applied up to ${last}`);
  } finally {
    await reopened.close();
    await again.close();
  }
});
