// A new manager joins a three-manager cluster whose log was compacted long ago: it can only catch
// up from a snapshot, which reaches it as a file streamed in many pieces on its own route, is
// checked, installed into a fresh generation, and leaves its tables byte for byte the leader's.
// Real LevelDB in temp folders and real HTTP on 127.0.0.1, managers in this process.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode } from '../../src/consensus/raftNode.ts';
import { SnapshotFolder } from '../../src/consensus/snapshotFiles.ts';
import { HttpTransport } from '../../src/consensus/transport/httpTransport.ts';
import { raftRoutes } from '../../src/consensus/transport/raftRoutes.ts';
import { snapshotRoutes } from '../../src/consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../../src/consensus/transport/snapshotSender.ts';
import type { Command } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from './metadataFixture.ts';

const SECRET = 'snapshot-catch-up-secret-0123456789';
const RECORDS = 6_000;
const SNAPSHOT_THRESHOLD = 500;
/** Small pieces, so the snapshot (about 2 MB) takes dozens of them. */
const PIECE_BYTES = 64 * 1024;

interface Manager {
  id: string;
  dir: string;
  url: string;
  server: ServerType;
  node: RaftNode | null;
  sm: MetadataStateMachine | null;
  store: LevelLogStore | null;
  transport: HttpTransport | null;
  sender: SnapshotSender | null;
  /** One folder for the routes and the node, as in a manager process. */
  folder: SnapshotFolder;
  pieces: number;
}

let root: string;
let founders: Record<string, string>;
const managers: Manager[] = [];

async function listen(id: string): Promise<Manager> {
  const m: Manager = {
    id,
    dir: join(root, id),
    url: '',
    server: null!,
    node: null,
    sm: null,
    store: null,
    transport: null,
    sender: null,
    folder: await SnapshotFolder.open(join(root, id, 'snapshots')),
    pieces: 0,
  };
  const { folder } = m;
  const app = raftRoutes({ secret: SECRET, selfId: id, onMessage: (msg) => m.node?.receive(msg) });
  app.use('/raft/snapshot', async (c, next) => {
    if (c.req.method === 'PUT') m.pieces += 1;
    await next();
  });
  app.route(
    '/',
    snapshotRoutes({ secret: SECRET, selfId: id, folder, onMessage: (msg) => m.node?.receive(msg) ?? false }),
  );
  await new Promise<void>((resolve) => {
    m.server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => {
      m.url = `http://127.0.0.1:${info.port}`;
      resolve();
    });
  });
  return m;
}

async function start(m: Manager, initialMembers: Record<string, string> | null): Promise<void> {
  const { folder } = m;
  m.store = await LevelLogStore.open(join(m.dir, 'raft'));
  m.sm = await MetadataStateMachine.open(join(m.dir, 'metadata'));
  const sender = new SnapshotSender({
    id: m.id,
    folder,
    secret: SECRET,
    pieceBytes: PIECE_BYTES,
    onSnapshotStatus: (peer, ok) => m.node?.reportSnapshot(peer, ok),
  });
  m.sender = sender;
  m.transport = new HttpTransport({
    id: m.id,
    secret: SECRET,
    onUnreachable: (peer) => m.node?.reportUnreachable(peer),
    onSnapshotStatus: (peer, ok) => m.node?.reportSnapshot(peer, ok),
    sendSnapshot: (msg, url) => sender.send(msg, url),
  });
  m.node = await RaftNode.start({
    id: m.id,
    store: m.store,
    stateMachine: m.sm,
    transport: m.transport,
    initialMembers,
    contactPeers: founders,
    tickMs: 50,
    snapshotThreshold: SNAPSHOT_THRESHOLD,
    snapshotFolder: folder,
  });
}

async function stop(m: Manager): Promise<void> {
  await m.node?.stop();
  m.sender?.close();
  await m.transport?.close();
  await m.store?.close();
  await m.sm?.close();
  m.node = null;
}

const leader = () => until('a leader', () => managers.find((m) => m.node?.isLeader()) ?? null, 30_000);

/** Proposes on the current leader, again on the next one if leadership moved meanwhile (a loaded machine). */
async function propose(command: Command): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await proposeCommand((await leader()).node!, command);
      return;
    } catch (err) {
      if (attempt === 20) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * Math.min(attempt + 1, 10)));
    }
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-snap-catchup-'));
  managers.push(...(await Promise.all(['m1', 'm2', 'm3'].map(listen))));
  founders = Object.fromEntries(managers.map((m) => [m.id, m.url]));
  await Promise.all(managers.map((m) => start(m, founders)));
});

afterAll(async () => {
  for (const m of managers) {
    await stop(m);
    // A peer's Raft stream is a request in progress, which close() waits for (as managerProcess does).
    await new Promise<void>((resolve) => {
      m.server.close(() => resolve());
      (m.server as Server).closeAllConnections();
    });
  }
  await rm(root, { recursive: true, force: true });
});

describe('a manager joining a cluster with a large table', () => {
  it('catches up from a snapshot file sent in many pieces, and ends with the same tables', async () => {
    await propose(registerCmd('w1', 1000, 'zA'));
    await propose(registerCmd('w2', 1000, 'zB'));
    for (let at = 0; at < RECORDS; at += 200) {
      await Promise.all(
        Array.from({ length: 200 }, (_, i) =>
          propose(recordCmd(`img-${String(at + i).padStart(6, '0')}`, ['w1', 'w2'], at + i)),
        ),
      );
    }
    const before = await leader();
    await until(
      'the leader compacted its log',
      () => before.node!.status().snapshotIndex > RECORDS / 2,
      60_000,
    );

    const joiner = await listen('m4');
    managers.push(joiner);
    await start(joiner, null);
    await before.node!.addMember('m4', joiner.url);
    const target = before.node!.status().commit;
    await until('the new manager caught up', () => joiner.sm!.appliedIndex() >= target, 120_000);

    expect(joiner.node!.status().snapshotIndex).toBeGreaterThan(RECORDS / 2);
    expect(joiner.pieces).toBeGreaterThan(10);
    const digests = await until(
      'every manager at the same applied index',
      async () => {
        const all = await Promise.all(managers.map((m) => m.sm!.tableDigest()));
        return all.every((d) => d.appliedIndex === all[0]!.appliedIndex) ? all : null;
      },
      60_000,
    );
    expect(new Set(digests.map((d) => d.sha256)).size).toBe(1);
    expect(await joiner.sm!.getObject('img-000000')).not.toBeNull();
    // Once the received snapshot is recorded, the joiner keeps one file and no partial one.
    const files = await readdir(join(joiner.dir, 'snapshots'));
    expect(files.filter((n) => n.endsWith('.part'))).toEqual([]);
    expect(files.filter((n) => n.endsWith('.snap')).length).toBeGreaterThanOrEqual(1);
  }, 300_000);
});
