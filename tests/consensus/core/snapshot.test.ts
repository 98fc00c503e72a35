// Snapshot catch-up: compaction on the leader, MsgSnap, reportSnapshot, restore on the follower.

import { describe, expect, test } from 'vitest';
import type { Message } from '../../../src/consensus/types.ts';
import { Network } from './network.ts';

function laggingFollower(): Network {
  const n = new Network(['a', 'b', 'c']);
  n.campaign('a');
  n.isolate('c');
  for (let i = 0; i < 20; i++) n.propose('a', `x${i}`);
  n.compact('a');
  return n;
}

/** Like Network.stabilize, but MsgSnap stay in flight: returned, not delivered. */
function stabilizeHoldingSnapshots(n: Network): Message[] {
  const held: Message[] = [];
  for (let i = 0; i < 1000; i++) {
    let busy = false;
    for (const id of n.nodes.keys()) if (n.handleReady(id)) busy = true;
    const batch = n.queue;
    n.queue = [];
    for (const m of batch) {
      if (m.type === 'MsgSnap') held.push(m);
      else n.deliver(m);
    }
    if (!busy && batch.length === 0) return held;
  }
  throw new Error('did not stabilize');
}

describe('snapshot catch-up', () => {
  test('the leader moves a follower needing compacted entries to snapshot state and waits', () => {
    const n = laggingFollower();
    n.heal();
    n.core('a').tick();
    const [snap] = stabilizeHoldingSnapshots(n);
    expect(snap).toMatchObject({ type: 'MsgSnap', to: 'c' });
    expect(snap!.snapshot!.metadata.index).toBe(n.node('a').storage.snapshot().metadata.index);
    expect(n.core('a').status().progress?.c?.state).toBe('snapshot');
    // Nothing more is sent to c while the snapshot is in flight, heartbeats aside.
    n.trace.length = 0;
    n.core('a').propose('more');
    n.core('a').tick();
    stabilizeHoldingSnapshots(n);
    expect(n.trace.filter((m) => m.to === 'c' && (m.type === 'MsgApp' || m.type === 'MsgSnap'))).toEqual([]);
    n.core('a').reportSnapshot('c', false);
    expect(n.core('a').status().progress?.c?.state).toBe('probe');
  });

  test('after a failed snapshot the leader retries on a later heartbeat and the follower catches up', () => {
    const n = laggingFollower();
    n.heal();
    let dropped = 0;
    n.filter = (m) => {
      if (m.type === 'MsgSnap' && dropped === 0) {
        dropped++;
        return false;
      }
      return true;
    };
    n.tick('a');
    expect(dropped).toBe(1);
    expect(n.node('c').applied).toEqual([]);
    n.tick('a', 3);
    expect(n.node('c').applied).toEqual(n.node('a').applied);
    expect(n.core('a').status().progress?.c?.match).toBe(n.core('a').status().lastIndex);
  });

  test('the Ready carrying a snapshot carries no committed entries; entries after it follow', () => {
    const n = laggingFollower();
    n.propose('a', 'tail');
    n.heal();
    n.core('a').tick();
    const [snap] = stabilizeHoldingSnapshots(n);
    n.core('c').step(snap!);
    const rd = n.handleReady('c')!;
    expect(rd.snapshot?.metadata.index).toBe(snap!.snapshot!.metadata.index);
    expect(rd.committedEntries).toEqual([]);
    expect(rd.hardState?.commit).toBe(snap!.snapshot!.metadata.index);
    n.stabilize();
    n.tick('a');
    expect(n.node('c').applied.at(-1)).toBe('tail');
  });

  test('a snapshot advanced as not yet applied holds back the entries after it, not a campaign', () => {
    const n = laggingFollower();
    n.propose('a', 'tail');
    n.heal();
    n.core('a').tick();
    const [snap] = stabilizeHoldingSnapshots(n);
    const c = n.node('c');
    const appliedBefore = c.appliedIndex;
    c.core.step(snap!);
    // The host persists and mirrors the snapshot, then installs it on its own (raftNode.ts).
    const rd = c.core.ready();
    c.storage.applySnapshot(rd.snapshot!);
    if (rd.hardState) c.storage.setHardState(rd.hardState);
    n.queue.push(...rd.messagesBeforePersist, ...rd.messages);
    c.core.advance({ snapshotApplied: false });
    n.stabilize();
    // The log after the snapshot arrived and is committed, but nothing after it is handed out.
    expect(c.core.status()).toMatchObject({
      lastIndex: n.core('a').status().lastIndex,
      commit: n.core('a').status().commit,
    });
    expect(c.appliedIndex).toBe(appliedBefore);
    expect(c.core.hasReady()).toBe(false);
    // A leadership transfer to it works (it campaigns), and as the leader it hands out nothing
    // after the snapshot either.
    n.core('a').transferLeadership('c');
    n.stabilize();
    expect(c.core.status().role).toBe('leader');
    expect(c.appliedIndex).toBe(appliedBefore);

    // An index past the snapshot would skip entries never handed out.
    expect(() => c.core.snapshotApplied(snap!.snapshot!.metadata.index + 5)).toThrow(
      /past the log's snapshot/,
    );
    c.applied = JSON.parse(snap!.snapshot!.data) as string[];
    c.appliedIndex = snap!.snapshot!.metadata.index;
    c.core.snapshotApplied(snap!.snapshot!.metadata.index);
    n.stabilize();
    expect(c.applied).toContain('tail');
    expect(c.appliedIndex).toBe(c.core.status().commit);
  });

  test('a follower restarted after installing a snapshot resumes from it', () => {
    const n = laggingFollower();
    n.heal();
    n.tick('a');
    const before = n.node('c').applied.slice();
    const restarted = n.restart('c');
    expect(restarted.core.status()).toMatchObject({
      firstIndex: n.node('c').storage.firstIndex(),
      commit: n.node('a').core.status().commit,
    });
    n.propose('a', 'more');
    expect(n.node('c').applied).toEqual([...before, 'more']);
  });

  test('a stale snapshot (at or below the follower commit) is ignored', () => {
    const n = laggingFollower();
    n.heal();
    n.tick('a');
    const old = n.node('a').storage.snapshot();
    n.propose('a', 'later');
    const commit = n.core('c').status().commit;
    n.core('c').step({ type: 'MsgSnap', from: 'a', to: 'c', term: n.core('a').status().term, snapshot: old });
    const rd = n.handleReady('c')!;
    expect(rd.snapshot).toBeUndefined();
    expect(rd.messages[0]).toMatchObject({ type: 'MsgAppResp', index: commit });
  });
});
