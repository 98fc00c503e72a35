// A leader's commit notices (src/consensus/node/commitNotices.ts), with real parts: three
// in-process nodes on LevelDB in temp folders, over real HTTP on 127.0.0.1. One proposal after
// another, as a client at concurrency 1 makes them: held, each notice is carried by the next
// proposal's append, so a follower gets one append per commit instead of two; the last commit
// reaches the followers all the same. A follower's linearizable read is answered together with the
// notice it waits for, however long notices are held.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Message } from '../../src/consensus/types.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  closeAll,
  type InProcessManager,
  kvCluster,
  proposePut,
  stableLeader,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

const PUTS = 40;
let managers: InProcessManager<KvStateMachine>[] = [];
let root = '';

afterEach(async () => {
  await closeAll(managers);
  managers = [];
  if (root) await rm(root, { recursive: true, force: true });
});

/** Puts one after another on the leader; returns the appends without entries the followers got meanwhile. */
async function noticesDuringPuts(holdMs: number): Promise<number> {
  root = await mkdtemp(join(tmpdir(), 'commit-notices-'));
  const setup = kvCluster(root, 'test-secret-0123456789abcdef');
  let counting = false;
  let notices = 0;
  setup.node = { ...setup.node, commitNoticeHoldMs: holdMs };
  managers = await startCluster(['n1', 'n2', 'n3'], setup);
  // Counted where every path delivers (a peer's stream, or the answer to our own).
  for (const m of managers) {
    const node = m.node;
    const receive = node.receive.bind(node);
    node.receive = (msg: Message) => {
      if (counting && msg.type === 'MsgApp' && (msg.entries?.length ?? 0) === 0) notices++;
      return receive(msg);
    };
  }
  const leader = await stableLeader(managers);
  await proposePut(leader.node, 'warm', 'up');
  await until('every follower applied the warm-up put', () =>
    managers.every((m) => m.sm.get('warm') === 'up'),
  );
  counting = true;
  for (let i = 0; i < PUTS; i++) await proposePut(leader.node, `k${i}`, `v${i}`);
  counting = false;
  // The last commit has no next append: a held notice, or a heartbeat, still brings it.
  await until('every follower applied the last put', () =>
    managers.every((m) => m.sm.get(`k${PUTS - 1}`) === `v${PUTS - 1}`),
  );
  return notices;
}

/** A held notice's follower reads: the empty appends it got between its read's start and end. */
async function noticesDuringFollowerRead(): Promise<{ notices: number; value: string | undefined }> {
  root = await mkdtemp(join(tmpdir(), 'commit-notices-'));
  const setup = kvCluster(root, 'test-secret-0123456789abcdef');
  setup.node = { ...setup.node, commitNoticeHoldMs: 60_000 };
  managers = await startCluster(['n1', 'n2', 'n3'], setup);
  const leader = await stableLeader(managers);
  const follower = managers.find((m) => m !== leader)!;
  let counting = false;
  let notices = 0;
  const receive = follower.node.receive.bind(follower.node);
  follower.node.receive = (msg: Message) => {
    if (counting && msg.type === 'MsgApp' && (msg.entries?.length ?? 0) === 0) notices++;
    return receive(msg);
  };
  // The put's commit notices are held (no append follows): heartbeats alone would bring the commit.
  await proposePut(leader.node, 'k', 'v');
  counting = true;
  await follower.node.readIndex();
  counting = false;
  return { notices, value: follower.sm.get('k') };
}

describe('commit notices', () => {
  it('go to each follower with every commit when not held', async () => {
    // Two followers, a notice each per commit (a notice can only merge with an append that overtakes it).
    expect(await noticesDuringPuts(0)).toBeGreaterThanOrEqual(PUTS);
  });

  it('ride on the next append when held, and the last commit still reaches every follower', async () => {
    // Held far longer than the puts take: a notice is sent only when no append carried it.
    expect(await noticesDuringPuts(60_000)).toBeLessThan(PUTS / 4);
  });

  it('held, go out with the answer to a follower read index', async () => {
    const { notices, value } = await noticesDuringFollowerRead();
    expect(value).toBe('v');
    expect(notices).toBeGreaterThanOrEqual(1);
  });
});
