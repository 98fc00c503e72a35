// How long since a node heard its leader (RaftNode.leaderSilenceMs), which a manager reads to send
// clients only to a live leader (src/manager/leaderWait.ts): three in-process nodes over real HTTP.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { liveLeaderOf } from '../../src/manager/leaderWait.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  closeAll,
  type InProcessManager,
  kvCluster,
  stableLeader,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

let root: string;
let managers: InProcessManager<KvStateMachine>[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'leader-silence-'));
  managers = await startCluster(['n1', 'n2', 'n3'], kvCluster(root, 'test-secret-0123456789abcdef'));
});

afterAll(async () => {
  await closeAll(managers);
  await rm(root, { recursive: true, force: true });
});

it('is 0 on the leader, short on a follower, and unknown from a lost path to the leader until it is heard again', async () => {
  const leader = await stableLeader(managers);
  const follower = managers.find((m) => m !== leader)!;
  expect(leader.node.leaderSilenceMs()).toBe(0);
  // Heartbeats come every tick: a follower's silence stays well under an election timeout.
  await until('a follower that heard its leader lately', () => {
    const silence = follower.node.leaderSilenceMs();
    return silence !== null && silence < 500;
  });

  // Another peer's path says nothing about the leader.
  const other = managers.find((m) => m !== leader && m !== follower)!;
  follower.node.notePeerLost(other.id);
  expect(follower.node.leaderSilenceMs()).not.toBeNull();
  follower.node.notePeerLost(leader.id);
  expect(follower.node.leaderSilenceMs()).toBeNull();
  await until('the leader heard again', () => follower.node.leaderSilenceMs() !== null);
  expect(follower.node.leaderInfo()?.id).toBe(leader.id);
});

it('counts its leader alive by the same silence past which it refuses reads (leaderQuietMs)', async () => {
  const leader = await stableLeader(managers);
  const follower = managers.find((m) => m !== leader)!;
  const quiet = follower.node.leaderQuietMs;
  // kvCluster's 20 ms tick, one-tick heartbeats, 10-tick elections: four heartbeats, under half an election.
  expect(quiet).toBe(80);
  const live = await until('the leader live by that measure', () => liveLeaderOf(follower.node, quiet));
  expect(live).toEqual({ self: false, id: leader.id, url: leader.url });
  follower.node.notePeerLost(leader.id);
  const read = follower.node.readIndex();
  expect(liveLeaderOf(follower.node, quiet)).toBeNull();
  await expect(read).rejects.toThrow();
});
