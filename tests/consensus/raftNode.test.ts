// The Raft node driver with real parts: three (then four) in-process nodes, each with its own
// LevelDB log and state machine in a temp folder, talking over real HTTP on 127.0.0.1.

import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pRetry, { AbortError } from 'p-retry';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RaftError } from '../../src/consensus/raftNode.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  type ClusterSetup,
  closeAll,
  InProcessManager,
  kvCluster,
  memberUrls,
  proposePut,
  stableLeader,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

type Member = InProcessManager<KvStateMachine>;

let root: string;
let setup: ClusterSetup<KvStateMachine>;
const members = new Map<string, Member>();

/**
 * A linearizable read, retried as a client would when it is refused with NotLeader:
 * a follower that has not heard its leader for 4 heartbeats (80 ms at this tick) refuses reads, and
 * a loaded machine can starve a process that long. A read that is served must see every write
 * acknowledged before it.
 */
function linearizableRead(f: Member): Promise<void> {
  return pRetry(
    async () => {
      try {
        await f.node.readIndex();
      } catch (err) {
        if (err instanceof RaftError && err.code === 'NotLeader') throw err;
        throw new AbortError(err as Error);
      }
    },
    { retries: 50, minTimeout: 20, maxTimeout: 100, maxRetryTime: 10_000 },
  );
}

function running(): Member[] {
  return [...members.values()].filter((m) => m.running);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'raftnode-'));
  setup = kvCluster(root, 'test-secret-0123456789abcdef');
  for (const m of await startCluster(['n1', 'n2', 'n3'], setup)) members.set(m.id, m);
});

afterAll(async () => {
  await closeAll([...members.values()]);
  await rm(root, { recursive: true, force: true });
});

describe('RaftNode over HTTP and LevelDB', () => {
  it('elects one leader that every node follows', async () => {
    const leader = await stableLeader(running());
    expect(leader.node.status().confState.voters.sort()).toEqual(['n1', 'n2', 'n3']);
  });

  it('commits a proposal on every node and answers the proposer with the apply result', async () => {
    const leader = await stableLeader(running());
    const result = (await proposePut(leader.node, 'alpha', 'one')) as { key: string; index: number };
    expect(result.key).toBe('alpha');
    await until('every node applied the put', () =>
      running().every((m) => m.sm.get('alpha') === 'one' && m.sm.appliedIndex() >= result.index),
    );
    // The followers' answers to its appends and heartbeats reached the leader inside its own requests.
    expect(leader.repliesReceived).toBeGreaterThan(0);
  });

  it('refuses a proposal on a follower with NotLeader naming the leader', async () => {
    const leader = await stableLeader(running());
    const follower = running().find((m) => m !== leader)!;
    const err = await proposePut(follower.node, 'beta', 'x').catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RaftError);
    expect((err as RaftError).code).toBe('NotLeader');
    expect((err as RaftError).leader).toEqual({ id: leader.id, url: leader.url });
  });

  it('refuses a proposal that is not well-formed UTF-16, which the wire could not carry unchanged', async () => {
    const leader = await stableLeader(running());
    const requestId = randomUUID();
    // A lone surrogate: UTF-8 on the wire would turn it into U+FFFD on the followers only.
    const data = `{"op":"put","key":"lone","value":"x\ud800","requestId":"${requestId}"}`;
    const err = await leader.node.propose(data, requestId).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(RaftError);
    expect((err as RaftError).code).toBe('InvalidProposal');
    expect(running().every((m) => m.sm.get('lone') === undefined)).toBe(true);
  });

  it('serves read-your-writes from a follower through ReadIndex', async () => {
    const leader = await stableLeader(running());
    const followers = running().filter((m) => m !== leader);
    for (let i = 0; i < 20; i++) {
      await proposePut(leader.node, 'counter', String(i));
      const f = followers[i % followers.length]!;
      await linearizableRead(f);
      expect(f.sm.get('counter')).toBe(String(i));
    }
  });

  it('batches many concurrent proposals and applies them all, in one order everywhere', async () => {
    const leader = await stableLeader(running());
    const results = await Promise.all(
      Array.from(
        { length: 200 },
        (_, i) => proposePut(leader.node, `k${i}`, `v${i}`) as Promise<{ index: number }>,
      ),
    );
    const indexes = new Set(results.map((r) => r.index));
    expect(indexes.size).toBe(200);
    const last = Math.max(...indexes);
    await until('all nodes applied the batch', () => running().every((m) => m.sm.appliedIndex() >= last));
    for (const m of running()) for (let i = 0; i < 200; i++) expect(m.sm.get(`k${i}`)).toBe(`v${i}`);
  });

  it('transfers leadership to a chosen follower', async () => {
    const leader = await stableLeader(running());
    const target = running().find((m) => m !== leader)!;
    await leader.node.transferLeadership(target.id);
    const now = await stableLeader(running());
    expect(now.id).toBe(target.id);
    await proposePut(now.node, 'after-transfer', 'yes');
  });

  it('adds a fourth member as a learner and promotes it once caught up', async () => {
    const leader = await stableLeader(running());
    const founders = memberUrls(['n1', 'n2', 'n3'].map((id) => members.get(id)!));
    const n4 = await InProcessManager.listen('n4', setup);
    members.set(n4.id, n4);
    await n4.start(null, founders);
    expect(n4.node.status().confState.voters).toEqual([]);
    await leader.node.addMember('n4', n4.url);
    const status = leader.node.status();
    expect(status.confState.voters.sort()).toEqual(['n1', 'n2', 'n3', 'n4']);
    expect(status.confState.learners).toEqual([]);
    await until('n4 holds the data written before it joined', () => n4.sm.get('k199') === 'v199');
    await proposePut(leader.node, 'with-four', '4');
    await linearizableRead(n4);
    expect(n4.sm.get('with-four')).toBe('4');
    expect(n4.node.status().members.n1).toBe(members.get('n1')!.url);
  });

  it('removes a member and keeps committing without it', async () => {
    const leader = await stableLeader(running());
    const victim = running().find((m) => m !== leader && m.id !== 'n4')!;
    await leader.node.removeMember(victim.id);
    expect(leader.node.status().confState.voters).not.toContain(victim.id);
    await victim.stop();
    const now = await stableLeader(running());
    await proposePut(now.node, 'after-remove', 'ok');
    for (const m of running()) {
      await linearizableRead(m);
      expect(m.sm.get('after-remove')).toBe('ok');
    }
  });

  it('restarts a node from its LevelDB without applying anything twice', async () => {
    const leader = await stableLeader(running());
    const follower = running().find((m) => m !== leader)!;
    const appliedBefore = follower.sm.appliedIndex();
    await follower.stop();
    await proposePut(leader.node, 'while-down', 'missed');
    await follower.start(null);
    expect(follower.sm.appliedIndex()).toBeGreaterThanOrEqual(appliedBefore);
    await until('the restarted node hears from the leader', () => follower.node.leaderInfo());
    await linearizableRead(follower);
    expect(follower.sm.get('while-down')).toBe('missed');
    expect(follower.sm.get('k0')).toBe('v0');
  });
});
