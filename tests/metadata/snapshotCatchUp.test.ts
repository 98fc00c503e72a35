// A new manager joins a three-manager cluster whose log was compacted long ago: it can only catch
// up from a snapshot, which reaches it as a file streamed in many pieces on its own route, is
// checked, installed into a fresh generation, and leaves its tables byte for byte the leader's.
// Real LevelDB in temp folders and real HTTP on 127.0.0.1, managers in this process.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Command } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import {
  agreedDigests,
  type ClusterSetup,
  closeAll,
  InProcessManager,
  joinCaughtUp,
  memberUrls,
  openMetadata,
  proposeOnLeader,
  runningLeader,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from './metadataFixture.ts';

const RECORDS = 6_000;
const SNAPSHOT_THRESHOLD = 500;

let root: string;
let setup: ClusterSetup<MetadataStateMachine>;
let founders: Record<string, string>;
const managers: InProcessManager<MetadataStateMachine>[] = [];

const leader = () => runningLeader(managers);
const propose = (command: Command) => proposeOnLeader(managers, command);

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-snap-catchup-'));
  setup = {
    secret: 'snapshot-catch-up-secret-0123456789',
    root,
    openStateMachine: openMetadata,
    node: { tickMs: 50, snapshotThreshold: SNAPSHOT_THRESHOLD },
    // Small pieces, so the snapshot (about 2 MB) takes dozens of them.
    snapshotPieceBytes: 64 * 1024,
  };
  managers.push(...(await Promise.all(['m1', 'm2', 'm3'].map((id) => InProcessManager.listen(id, setup)))));
  founders = memberUrls(managers);
  await Promise.all(managers.map((m) => m.start(founders, founders)));
});

afterAll(async () => {
  await closeAll(managers);
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
      () => before.node.status().snapshotIndex > RECORDS / 2,
      60_000,
    );

    const joiner = await joinCaughtUp(managers, setup, founders, before);

    expect(joiner.node.status().snapshotIndex).toBeGreaterThan(RECORDS / 2);
    expect(joiner.snapshotPieces).toBeGreaterThan(10);
    const digests = await agreedDigests(managers);
    expect(new Set(digests.map((d) => d.sha256)).size).toBe(1);
    expect(await joiner.sm.getObject('img-000000')).not.toBeNull();
    // Once the received snapshot is recorded, the joiner keeps one file and no partial one.
    const files = await readdir(join(joiner.dir, 'snapshots'));
    expect(files.filter((n) => n.endsWith('.part'))).toEqual([]);
    expect(files.filter((n) => n.endsWith('.snap')).length).toBeGreaterThanOrEqual(1);
  }, 300_000);
});
