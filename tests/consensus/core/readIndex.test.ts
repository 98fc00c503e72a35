// ReadIndex (thesis 6.4, etcd ReadOnlySafe).

import { describe, expect, test } from 'vitest';
import { Network } from './network.ts';

describe('ReadIndex', () => {
  test('the leader answers after a heartbeat round confirms its leadership, at its commit index', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    n.propose('a', 'x');
    const commit = n.core('a').status().commit;
    n.core('a').readIndex('r1');
    const hbs = n.drain('a').filter((m) => m.type === 'MsgHeartbeat');
    expect(hbs.map((m) => [m.to, m.context])).toEqual([
      ['b', 'r1'],
      ['c', 'r1'],
    ]);
    expect(n.node('a').readStates).toEqual([]);
    n.core('b').step(hbs[0]!);
    for (const m of n.drain('b')) n.core('a').step(m);
    n.drain('a');
    expect(n.node('a').readStates).toEqual([{ index: commit, context: 'r1' }]);
  });

  test('a leader cut off from the majority never answers', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    n.isolate('a');
    n.core('a').readIndex('r1');
    n.tick('a', 5);
    expect(n.node('a').readStates).toEqual([]);
  });

  test('a read on a follower is forwarded and the ReadState comes back to the follower', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    n.propose('a', 'x');
    n.core('c').readIndex('from-c');
    n.stabilize();
    expect(n.node('c').readStates).toEqual([{ index: n.core('a').status().commit, context: 'from-c' }]);
    expect(n.node('a').readStates).toEqual([]);
  });

  test('a new leader holds reads until it has committed an entry of its own term', () => {
    const n = new Network(['a', 'b', 'c'], { preVote: false });
    const a = n.core('a');
    a.campaign();
    // a becomes leader on b's vote but has not yet heard any append acks.
    for (const m of n.drain('a')) if (m.to === 'b') n.core('b').step(m);
    for (const m of n.drain('b')) a.step(m);
    expect(a.status().role).toBe('leader');
    expect(a.status().commit).toBeLessThan(a.status().lastIndex);
    a.readIndex('early');
    const out = n.drain('a');
    expect(out.some((m) => m.type === 'MsgHeartbeat' && m.context === 'early')).toBe(false);
    // Once the no-op commits, the read proceeds.
    n.queue.push(...out);
    n.stabilize();
    expect(n.node('a').readStates.map((r) => r.context)).toEqual(['early']);
    expect(n.node('a').readStates[0]!.index).toBe(a.status().commit);
  });

  test('a single-voter cluster answers at once', () => {
    const n = new Network(['a']);
    n.campaign('a');
    n.core('a').readIndex('solo');
    n.stabilize();
    expect(n.node('a').readStates).toEqual([{ index: n.core('a').status().commit, context: 'solo' }]);
  });

  test('a follower that knows no leader drops the read', () => {
    const n = new Network(['a', 'b', 'c']);
    n.core('b').readIndex('lost');
    n.stabilize();
    expect(n.node('b').readStates).toEqual([]);
    expect(n.trace).toEqual([]);
  });
});
