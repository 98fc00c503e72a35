// The Raft series of a manager's /metrics, on one real node (LevelDB log and state machine in a
// temp folder): the figures follow the node, and a proposal refused for a full queue is counted.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { RaftError } from '../../src/consensus/raftNode.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  compactionFailures,
  openKv,
  proposePut,
  refuseNextCompaction,
  type SoleManager,
  startSoleManager,
  stopSoleManager,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

let root: string;
let manager: SoleManager<KvStateMachine> | undefined;
const registry = new Registry();

async function sample(name: string): Promise<number | undefined> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  return metric?.values[0]?.value;
}

async function dropped(reason: string): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find(
    (m) => m.name === 'imgvault_raft_proposals_dropped_total',
  );
  return metric?.values.find((v) => v.labels.reason === reason)?.value ?? 0;
}

const put = (key: string) => proposePut(manager!.node, key, 'v');

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'raft-metrics-'));
  manager = await startSoleManager(root, {
    openStateMachine: openKv,
    node: {
      tickMs: 20,
      maxPendingProposals: 1,
      metrics: registry,
      onFatal: (err) => {
        throw err;
      },
    },
  });
  const { node } = manager;
  await until('a single voter to elect itself', () => node.isLeader(), 10_000);
});

afterAll(async () => {
  if (manager) await stopSoleManager(manager);
  await rm(root, { recursive: true, force: true });
});

it('reports the term, leadership, and commit, applied and last index as the node moves', async () => {
  await put('a');
  expect(await sample('imgvault_raft_is_leader')).toBe(1);
  expect(await sample('imgvault_raft_term')).toBeGreaterThanOrEqual(1);
  expect(await sample('imgvault_raft_leader_changes_total')).toBeGreaterThanOrEqual(1);
  const applied = (await sample('imgvault_raft_applied_index')) ?? 0;
  expect(applied).toBeGreaterThanOrEqual(1);
  expect(await sample('imgvault_raft_commit_index')).toBeGreaterThanOrEqual(applied);
  expect(await sample('imgvault_raft_last_index')).toBeGreaterThanOrEqual(applied);
  expect(await sample('imgvault_raft_proposals_pending')).toBe(0);
});

it('counts every Ready that wrote entries, with the entries it wrote', async () => {
  const writes = async () => {
    const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === 'imgvault_raft_ready_entries');
    const value = (suffix: string) =>
      metric?.values.find(
        (v) => (v as { metricName?: string }).metricName === `imgvault_raft_ready_entries${suffix}`,
      )?.value ?? 0;
    return { count: value('_count'), sum: value('_sum') };
  };
  const before = await writes();
  await put('b');
  const after = await writes();
  expect(after.count - before.count).toBe(1);
  expect(after.sum - before.sum).toBe(1);
});

it('counts a proposal refused because the pending queue is full, and not the one it let through', async () => {
  const before = await dropped('queue_full');
  const first = put('b');
  const second = put('c');
  await expect(second).rejects.toSatisfy((err) => err instanceof RaftError && err.code === 'ProposalDropped');
  await first;
  expect(await dropped('queue_full')).toBe(before + 1);
  expect(await dropped('refused')).toBe(0);
  expect(await dropped('timeout')).toBe(0);
});

it('counts a compaction that failed, and compacts at a later try', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'raft-metrics-compaction-'));
  const own = new Registry();
  const failing = await startSoleManager(dir, {
    openStateMachine: openKv,
    node: { tickMs: 20, snapshotThreshold: 5, metrics: own },
  });
  try {
    const { node, store } = failing;
    await until('a single voter to elect itself', () => node.isLeader(), 10_000);
    const startedAt = node.status().snapshotIndex;
    refuseNextCompaction(store);
    const failures = () => compactionFailures(own, 'snapshot');
    for (let i = 0; i < 6; i++) await proposePut(node, `k${i}`, 'v');
    await until('the failure counted', async () => (await failures()) === 1, 10_000);
    expect(node.status().snapshotIndex).toBe(startedAt);
    for (let i = 6; i < 14; i++) await proposePut(node, `k${i}`, 'v');
    await until('a later compaction', () => node.status().snapshotIndex > startedAt, 10_000);
    expect(await failures()).toBe(1);
  } finally {
    await stopSoleManager(failing);
    await rm(dir, { recursive: true, force: true });
  }
});
