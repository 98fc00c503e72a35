// The batch proposer in front of a real Raft driver that loses its leadership: three in-process
// managers over real HTTP on 127.0.0.1, the leader cut off with one commandBatch entry in flight and
// more commands queued behind it. No caller may be told its command was applied: each gets an error.

import { mkdtemp, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode } from '../../src/consensus/raftNode.ts';
import { HttpTransport } from '../../src/consensus/transport/httpTransport.ts';
import { raftRoutes } from '../../src/consensus/transport/raftRoutes.ts';
import { BatchProposer } from '../../src/metadata/batchProposer.ts';
import { MAX_BATCH_COMMANDS } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from './metadataFixture.ts';

const SECRET = 'metadata-test-secret-0123456789';
const TICK_MS = 20;

interface Manager {
  id: string;
  url: string;
  server: ServerType;
  node: RaftNode;
  sm: MetadataStateMachine;
  store: LevelLogStore;
  transport: HttpTransport;
}

let root: string;
const managers: Manager[] = [];
/** Messages from and to this manager are dropped on arrival: it is cut off from the others. */
let isolated: string | null = null;

async function listen(id: string): Promise<Manager> {
  const m = { id } as Manager;
  const app = raftRoutes({
    secret: SECRET,
    selfId: id,
    onMessage: (msg) => {
      if (isolated !== null && (id === isolated || msg.from === isolated)) return;
      m.node?.receive(msg);
    },
  });
  await new Promise<void>((resolve) => {
    m.server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => {
      m.url = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
  return m;
}

async function start(m: Manager, initialMembers: Record<string, string>): Promise<void> {
  m.store = await LevelLogStore.open(join(root, m.id, 'raft'));
  m.sm = await MetadataStateMachine.open(join(root, m.id, 'metadata'));
  m.transport = new HttpTransport({
    id: m.id,
    secret: SECRET,
    onUnreachable: (peer) => m.node?.reportUnreachable(peer),
    onSnapshotStatus: (peer, ok) => m.node?.reportSnapshot(peer, ok),
  });
  m.node = await RaftNode.start({
    id: m.id,
    store: m.store,
    stateMachine: m.sm,
    transport: m.transport,
    initialMembers,
    tickMs: TICK_MS,
  });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-batch-leader-loss-'));
  managers.push(...(await Promise.all(['m1', 'm2', 'm3'].map(listen))));
  const initial = Object.fromEntries(managers.map((m) => [m.id, m.url]));
  await Promise.all(managers.map((m) => start(m, initial)));
});

afterAll(async () => {
  isolated = null;
  for (const m of managers) {
    await m.node?.stop();
    await m.transport?.close();
    await m.store?.close();
    await m.sm?.close();
    await new Promise((r) => {
      m.server.close(r);
      (m.server as Server).closeAllConnections();
    });
  }
  await rm(root, { recursive: true, force: true });
});

it('fails every caller of the entry in flight and of those queued, none told applied', async () => {
  const old = await until('a leader', () => managers.find((m) => m.node.isLeader()) ?? null, 30_000);
  await proposeCommand(old.node, registerCmd('w1'));
  await proposeCommand(old.node, registerCmd('w2'));
  const batcher = new BatchProposer(old.node);

  isolated = old.id;
  // One full entry goes out at once; the rest wait behind it.
  const n = MAX_BATCH_COMMANDS + 60;
  const calls = Array.from({ length: n }, (_, i) =>
    proposeCommand(batcher, recordCmd(`lost${i}`, ['w1', 'w2'])).then(
      (result) => ({ ok: true as const, result }),
      (err: unknown) => ({ ok: false as const, err }),
    ),
  );
  const others = managers.filter((m) => m !== old);
  const next = await until('a new leader', () => others.find((m) => m.node.isLeader()) ?? null, 30_000);
  isolated = null;
  await until('the old leader stepped down', () => !old.node.isLeader(), 30_000);

  const outcomes = await Promise.all(calls);
  const applied = outcomes.filter((o) => o.ok);
  expect(applied).toEqual([]);
  for (const o of outcomes) expect(o).toMatchObject({ ok: false, err: { name: 'RaftError' } });
  // The entry never reached a majority: the new leader's log overwrote it everywhere.
  await until(
    'every manager applied the new leader commit',
    () => managers.every((m) => m.node.status().applied >= next.node.status().commit),
    30_000,
  );
  for (const m of managers) expect(await m.sm.getObject('lost0')).toBeNull();
}, 90_000);
