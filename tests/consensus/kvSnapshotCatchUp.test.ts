// A manager joining a KV cluster whose log was compacted catches up from a snapshot file that its
// leader wrote with KvStateMachine.snapshotChunks (streamed from a LevelDB snapshot while writes go
// on) and that the joiner restores whole. Real LevelDB in temp folders and real HTTP on 127.0.0.1,
// managers in this process.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  type ClusterSetup,
  closeAll,
  type InProcessManager,
  joinCaughtUp,
  kvCluster,
  memberUrls,
  proposePut,
  runningLeader,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

const PUTS = 3_000;
const SNAPSHOT_THRESHOLD = 400;

let root: string;
let setup: ClusterSetup<KvStateMachine>;
let founders: Record<string, string>;
const managers: InProcessManager<KvStateMachine>[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-kv-catchup-'));
  const base = kvCluster(root, 'kv-snapshot-catch-up-secret-0123456789');
  setup = {
    ...base,
    node: { ...base.node, snapshotThreshold: SNAPSHOT_THRESHOLD },
    // Files, so the leader streams its state (snapshotChunks) and sends it in pieces.
    snapshotPieceBytes: 64 * 1024,
  };
  managers.push(...(await startCluster(['m1', 'm2', 'm3'], setup)));
  founders = memberUrls(managers);
});

afterAll(async () => {
  await closeAll(managers);
  await rm(root, { recursive: true, force: true });
});

describe('a manager joining a KV cluster', () => {
  it('catches up from a streamed snapshot file, and ends with the same map', async () => {
    const value = (i: number) => `v${i}-"${'x'.repeat(200)}"\n`;
    for (let at = 0; at < PUTS; at += 100) {
      const leader = await runningLeader(managers);
      // Keys rewritten as the run goes on: a snapshot must hold each one's value at its index.
      await Promise.all(
        Array.from({ length: 100 }, (_, i) => proposePut(leader.node, `k${(at + i) % 1_000}`, value(at + i))),
      );
    }
    const before = await runningLeader(managers);
    await until('the leader compacted its log', () => before.node.status().snapshotIndex > PUTS / 2, 60_000);

    const joiner = await joinCaughtUp(managers, setup, founders, before);

    expect(joiner.node.status().snapshotIndex).toBeGreaterThan(PUTS / 2);
    expect(joiner.snapshotPieces).toBeGreaterThan(1);
    expect(joiner.sm.size()).toBe(1_000);
    for (let k = 0; k < 1_000; k++) expect(joiner.sm.get(`k${k}`)).toBe(before.sm.get(`k${k}`));
    expect(joiner.sm.get('k999')).toBe(value(PUTS - 1));
  }, 300_000);
});
