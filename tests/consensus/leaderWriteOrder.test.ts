// The leader's appends leave before its own synced write starts, that write runs while the
// followers write theirs, and the leader counts itself toward a commit only once it is durable
// (docs/consensus.md "The host loop"; Raft thesis 10.2.1). Three in-process nodes over real HTTP on
// real LevelDB logs; the leader's write is held open by a gate around its store.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, expect, it, vi } from 'vitest';
import type { RaftLogStore } from '../../src/consensus/api.ts';
import { entryKey, LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode } from '../../src/consensus/raftNode.ts';
import { HttpTransport } from '../../src/consensus/transport/httpTransport.ts';
import type { Message } from '../../src/consensus/types.ts';
import type { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import {
  closeAll,
  type InProcessManager,
  kvCluster,
  openKv,
  proposePut,
  SOLE_MEMBERS,
  stableLeader,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';

let root: string;
let managers: InProcessManager<KvStateMachine>[] = [];
/** A manager's saves complete only once its gate opens (the write itself starts at once). */
const gates = new Map<string, Promise<void>>();

/** The real store, its save held until the gate of its manager opens. */
function holdable(id: string, store: LevelLogStore): RaftLogStore {
  return {
    load: () => store.load(),
    save: (update) => {
      const written = store.save(update);
      const gate = gates.get(id);
      return gate === undefined ? written : written.then(() => gate);
    },
    compact: (snapshot) => store.compact(snapshot),
    close: () => store.close(),
  };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'leader-write-'));
  const setup = { ...kvCluster(root, 'test-secret-0123456789abcdef'), wrapStore: holdable };
  managers = await startCluster(['n1', 'n2', 'n3'], setup);
});

afterAll(async () => {
  await closeAll(managers);
  await rm(root, { recursive: true, force: true });
});

it('sends its appends before its write starts, and commits only once its own write is durable', async () => {
  const leader = await stableLeader(managers);
  await proposePut(leader.node, 'warm', 'up');
  // With one follower stopped, the other's answer and the leader's own write make the quorum.
  const [follower, stopped] = managers.filter((m) => m !== leader);
  await stopped!.stop();
  await proposePut(leader.node, 'replicating', 'yes');

  const batches = vi.spyOn(ClassicLevel.prototype, 'batch');
  const sends = vi.spyOn(HttpTransport.prototype, 'send');
  let open!: () => void;
  gates.set(leader.id, new Promise<void>((resolve) => (open = resolve)));
  try {
    const before = leader.node.status().lastIndex;
    let settled = false;
    const put = proposePut(leader.node, 'held', 'v').finally(() => (settled = true));
    const index = before + 1;
    // The append went out while the leader's write was held: the follower has it on disk.
    await until('the follower holds the entry', () => follower!.store.lastIndex() >= index, 10_000);
    // Time for the follower's answer to reach the leader, which must still not count itself.
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect(settled).toBe(false);
    expect(leader.node.status().commit).toBeLessThan(index);
    expect(follower!.node.status().commit).toBeLessThan(index);
    expect(leader.sm.get('held')).toBeUndefined();

    const leaderLog = join(leader.dir, 'raft');
    const key = entryKey(index);
    // batch() is overloaded; the log store calls the form that takes its operations.
    const batchCalls = batches.mock.calls as unknown as [{ key: Buffer }[]][];
    const written = batchCalls.findIndex(
      ([ops], k) =>
        (batches.mock.contexts[k] as ClassicLevel<Buffer, string>).location === leaderLog &&
        ops.some((op) => key.equals(op.key)),
    );
    const sent = sends.mock.calls.findIndex(([messages]) =>
      messages.some((m: Message) => m.type === 'MsgApp' && m.entries?.some((e) => e.index === index)),
    );
    expect(written).toBeGreaterThanOrEqual(0);
    expect(sent).toBeGreaterThanOrEqual(0);
    expect(sends.mock.invocationCallOrder[sent]!).toBeLessThan(batches.mock.invocationCallOrder[written]!);

    open();
    await put;
    expect(leader.node.status().commit).toBeGreaterThanOrEqual(index);
    expect(leader.sm.get('held')).toBe('v');
  } finally {
    gates.delete(leader.id);
    open();
    batches.mockRestore();
    sends.mockRestore();
  }
});

it('a single voter commits only once its own write is durable', async () => {
  const dir = join(root, 'sole');
  const store = await LevelLogStore.open(join(dir, 'raft'));
  const sm = await openKv(dir);
  const node = await RaftNode.start({
    id: 'm1',
    tickMs: 10,
    store: holdable('m1', store),
    stateMachine: sm,
    transport: { send: () => {}, setPeer: () => {}, removePeer: () => {} },
    initialMembers: SOLE_MEMBERS,
  });
  let open!: () => void;
  try {
    await until('it leads', () => node.isLeader());
    await proposePut(node, 'warm', 'up');
    gates.set('m1', new Promise<void>((resolve) => (open = resolve)));
    const index = node.status().lastIndex + 1;
    let settled = false;
    const put = proposePut(node, 'held', 'v').finally(() => (settled = true));
    // The real store has written the entry; only the write's completion is held.
    await until('the entry on disk', () => store.lastIndex() >= index, 10_000);
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(settled).toBe(false);
    expect(node.status().commit).toBeLessThan(index);
    expect(sm.get('held')).toBeUndefined();
    open();
    await put;
    expect(node.status().commit).toBeGreaterThanOrEqual(index);
    expect(sm.get('held')).toBe('v');
  } finally {
    gates.delete('m1');
    open?.();
    await node.stop();
    await store.close();
    await sm.close();
  }
});
