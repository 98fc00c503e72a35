// A manager's snapshots as files: the driver writes the state machine's snapshot into its snapshot
// folder and records only a descriptor (member map, index, term, size, sha256) in the Raft log; it
// keeps one file once a newer one is recorded; after an unclean stop it rebuilds the tables from
// that file and the log. A log written before snapshot files (inline form) still starts.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { afterEach, describe, expect, it } from 'vitest';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode, type RaftTransport } from '../../src/consensus/raftNode.ts';
import { SnapshotFolder, snapshotFileName } from '../../src/consensus/snapshotFiles.ts';
import { describeSnapshot, snapshotFileOf, unwrapSnapshot } from '../../src/consensus/snapshots.ts';
import { RAFT_MESSAGES_PATH, raftRoutes } from '../../src/consensus/transport/raftRoutes.ts';
import type { Message } from '../../src/consensus/types.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import {
  CLEAN_STOP_MARKER,
  openMetadata,
  type SoleManager,
  startSoleManager,
  stopSoleManager,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from '../metadata/metadataFixture.ts';

const SECRET = 'snapshot-files-secret-0123456789';
const THRESHOLD = 20;
const noPeers: RaftTransport = { send: () => {}, setPeer: () => {}, removePeer: () => {} };

let root: string | null = null;
let running: SoleManager | null = null;

afterEach(async () => {
  if (running) await stop(running);
  if (root) await rm(root, { recursive: true, force: true });
  root = null;
});

async function start(dir: string, snapshotFiles = true): Promise<SoleManager> {
  const m = await startSoleManager(dir, {
    openStateMachine: openMetadata,
    node: { snapshotThreshold: THRESHOLD },
    snapshotFiles,
  });
  running = m;
  await until('leadership', () => m.node.isLeader());
  return m;
}

async function stop(m: SoleManager): Promise<void> {
  running = null;
  await stopSoleManager(m);
}

async function records(m: SoleManager, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++)
    await proposeCommand(m.node, recordCmd(`img-${i}`, ['w1', 'w2'], i));
}

describe('snapshots as files', () => {
  it('records a small descriptor in the log, keeps only the newest file, and rebuilds from it', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapfiles-'));
    const m = await start(root);
    await proposeCommand(m.node, registerCmd('w1', 1000, 'zA'));
    await proposeCommand(m.node, registerCmd('w2', 1000, 'zB'));
    await records(m, 0, 3 * THRESHOLD);
    await until('two snapshots taken', () => m.node.status().snapshotIndex > 2 * THRESHOLD);
    const digest = await m.sm.tableDigest();
    await stop(m);

    const store = await LevelLogStore.open(join(root, 'raft'));
    const { snapshot } = await store.load();
    await store.close();
    const file = snapshotFileOf(snapshot!.data);
    expect(file).not.toBeNull();
    expect(snapshot!.data.length).toBeLessThan(600);
    expect(file!.index).toBe(snapshot!.metadata.index);
    expect(file!.term).toBe(snapshot!.metadata.term);
    expect(unwrapSnapshot(snapshot!.data).members).toEqual({ m1: 'http://127.0.0.1:1' });
    // None older than the recorded one is left (one newer, cut short by the stop, may be).
    const names = (await readdir(join(root, 'snapshots'))).filter((n) => n.endsWith('.snap'));
    expect(names.map((n) => Number.parseInt(n.slice(0, 16), 16)).every((i) => i >= file!.index)).toBe(true);
    expect(names).toContain(snapshotFileName(file!));

    // An unclean stop: the tables are emptied and rebuilt from the file and the log after it.
    await rm(join(root, 'metadata', CLEAN_STOP_MARKER));
    const again = await start(root);
    await until('the tables rebuilt', () => again.sm.appliedIndex() >= digest.appliedIndex);
    expect((await again.sm.tableDigest()).sha256).toBe(digest.sha256);
  });

  it('starts from a log whose snapshot is inline (written before snapshot files), then writes files', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapfiles-'));
    const old = await start(root, false);
    await proposeCommand(old.node, registerCmd('w1', 1000, 'zA'));
    await proposeCommand(old.node, registerCmd('w2', 1000, 'zB'));
    await records(old, 0, 2 * THRESHOLD);
    await until('an inline snapshot', () => old.node.status().snapshotIndex > THRESHOLD);
    const digest = await old.sm.tableDigest();
    await stop(old);
    await rm(join(root, 'metadata', CLEAN_STOP_MARKER));

    const m = await start(root);
    await until('the tables rebuilt', () => m.sm.appliedIndex() >= digest.appliedIndex);
    expect((await m.sm.tableDigest()).sha256).toBe(digest.sha256);
    const inlineAt = m.node.status().snapshotIndex;
    await records(m, 1000, 2 * THRESHOLD);
    await until('a snapshot file', () => m.node.status().snapshotIndex > inlineAt);
    // Stopped first: a snapshot still being written is then recorded or removed, not half-way.
    await stop(m);
    expect((await readdir(join(root, 'snapshots'))).filter((n) => n.endsWith('.snap'))).toHaveLength(1);
  });

  it('takes a snapshot at once when the recorded snapshot file is missing at start', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapfiles-'));
    const m = await start(root);
    await proposeCommand(m.node, registerCmd('w1', 1000, 'zA'));
    await records(m, 0, THRESHOLD + 2);
    await until('a snapshot file', () => m.node.status().snapshotIndex > THRESHOLD);
    const taken = m.node.status().snapshotIndex;
    await stop(m);
    const dir = join(root, 'snapshots');
    for (const name of await readdir(dir)) await rm(join(dir, name));

    // A clean stop: the tables need no restore, so the node starts; as leader it could send no
    // follower a snapshot until it takes a new one, which it does at the next entry.
    const again = await start(root);
    await until('a new snapshot', () => again.node.status().snapshotIndex > taken, 30_000);
    const names = (await readdir(dir)).filter((n) => n.endsWith('.snap'));
    expect(names).toHaveLength(1);
  });

  it('refuses at the node a MsgSnap over /raft/messages whose file it does not hold', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapfiles-'));
    // A source of real snapshot bytes: a one-manager cluster's tables.
    const source = await start(join(root, 'source'));
    await proposeCommand(source.node, registerCmd('w1', 1000, 'zA'));
    await records(source, 0, 5);
    const at = source.sm.appliedIndex();

    // m2, a follower of a cluster {m1, m2} whose m1 is not running, behind the real message route.
    const store = await LevelLogStore.open(join(root, 'm2', 'raft'));
    const sm = await MetadataStateMachine.open(join(root, 'm2', 'metadata'));
    const folder = await SnapshotFolder.open(join(root, 'm2', 'snapshots'));
    const node = await RaftNode.start({
      id: 'm2',
      store,
      stateMachine: sm,
      transport: noPeers,
      initialMembers: { m1: 'http://127.0.0.1:1', m2: 'http://127.0.0.1:2' },
      tickMs: 10,
      snapshotFolder: folder,
    });
    const app = raftRoutes({ secret: SECRET, selfId: 'm2', onMessage: (msg) => node.receive(msg) });
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
    try {
      await new Promise((resolve) => server.once('listening', resolve));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}${RAFT_MESSAGES_PATH}`;
      // The file's descriptor, computed from the bytes but not put in m2's folder.
      const elsewhere = await SnapshotFolder.open(join(root, 'elsewhere'));
      const file = await elsewhere.write(at, 1, source.sm.snapshotChunks());
      const msg: Message = {
        type: 'MsgSnap',
        from: 'm1',
        to: 'm2',
        term: 9,
        snapshot: {
          metadata: { index: at, term: 1, confState: { voters: ['m1', 'm2'], learners: [] } },
          data: describeSnapshot(
            new Map([
              ['m1', 'http://127.0.0.1:1'],
              ['m2', 'http://127.0.0.1:2'],
            ]),
            file,
          ),
        },
      };
      const post = () =>
        fetch(url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', [CLUSTER_SECRET_HEADER]: SECRET },
          body: JSON.stringify({ messages: [msg] }),
        });
      const refused = await post();
      expect(refused.status).toBe(403);
      expect(((await refused.json()) as { error: { code: string } }).error.code).toBe('RefusedMessage');
      // The core never saw it: no term taken from it, nothing recorded.
      expect(node.status().term).toBeLessThan(9);
      expect(node.status().snapshotIndex).toBeLessThan(at);

      // With the file in place the same message goes through and is installed.
      await folder.write(at, 1, elsewhere.read(file));
      expect((await post()).status).toBe(204);
      // Installed off the Ready loop: the snapshot is held first, applied once its install ends.
      await until(
        'the snapshot installed',
        () => node.status().snapshotIndex === at && node.status().applied >= at,
        30_000,
      );
      expect((await sm.tableDigest()).sha256).toBe((await source.sm.tableDigest()).sha256);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await node.stop();
      await store.close();
      await sm.close();
    }
  });
});
