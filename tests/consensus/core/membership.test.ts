// Single-server membership change: learners, promotion, removal; the change takes effect when the
// host applies the entry (applyConfChange), as in etcd.

import { describe, expect, test } from 'vitest';
import { Network } from './network.ts';

function elected(ids = ['a', 'b', 'c']): Network {
  const n = new Network(ids, { preVote: false });
  n.campaign('a');
  expect(n.leaders()).toEqual(['a']);
  return n;
}

describe('membership', () => {
  test('add a learner, catch it up, promote it: the full replace-a-manager sequence', () => {
    const n = elected();
    for (let i = 0; i < 5; i++) n.propose('a', `x${i}`);
    n.addNode('d');
    expect(
      n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd', context: 'http://d' }),
    ).toBeNull();
    n.stabilize();
    n.tick('a');
    expect(n.core('a').status().progress?.d).toMatchObject({
      isLearner: true,
      match: n.core('a').status().lastIndex,
    });
    expect(n.core('a').proposeConfChange({ type: 'promote', nodeId: 'd' })).toBeNull();
    n.stabilize();
    expect(n.core('a').proposeConfChange({ type: 'remove', nodeId: 'c' })).toBeNull();
    n.stabilize();
    for (const id of ['a', 'b', 'd']) {
      expect(n.core(id).status().confState).toEqual({ voters: ['a', 'b', 'd'], learners: [] });
    }
    expect(n.core('a').status().progress?.c).toBeUndefined();
    // The new voter counts: a and d commit without b.
    n.isolate('b');
    n.propose('a', 'y');
    expect(n.node('d').applied).toEqual(['x0', 'x1', 'x2', 'x3', 'x4', 'y']);
  });

  test('a conf change entry is readable by the host, context included', () => {
    const n = elected();
    n.addNode('d');
    n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd', context: 'http://d:1' });
    const rd = n.handleReady('a')!;
    const [e] = rd.entries;
    expect(e!.type).toBe('confChange');
    expect(JSON.parse(e!.data)).toEqual({ type: 'addLearner', nodeId: 'd', context: 'http://d:1' });
  });

  test('a follower forwards a conf change to the leader', () => {
    const n = elected();
    n.addNode('d');
    expect(n.core('b').proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBeNull();
    n.stabilize();
    expect(n.core('a').status().confState.learners).toEqual(['d']);
  });

  test('applying a removal shrinks the quorum at once, committing what the smaller majority holds', () => {
    const n = elected(['a', 'b', 'c', 'd']);
    const a = n.core('a');
    // Deliver by hand: c and b ack the removal, then only b acks the next entry.
    n.cutLink('a', 'd');
    expect(a.proposeConfChange({ type: 'remove', nodeId: 'd' })).toBeNull();
    const removeIndex = a.status().lastIndex;
    const term = a.status().term;
    n.drain('a');
    a.step({ type: 'MsgAppResp', from: 'b', to: 'a', term, index: removeIndex });
    a.step({ type: 'MsgAppResp', from: 'c', to: 'a', term, index: removeIndex });
    expect(a.status().commit).toBe(removeIndex);
    expect(a.propose('x')).toBeNull();
    a.step({ type: 'MsgAppResp', from: 'b', to: 'a', term, index: removeIndex + 1 });
    expect(a.status().commit).toBe(removeIndex);
    // The host applies the removal: a and b are now a majority of {a, b, c}.
    while (n.handleReady('a')) {
      // persist and apply everything ready
    }
    expect(a.status().confState.voters).toEqual(['a', 'b', 'c']);
    expect(a.status().commit).toBe(removeIndex + 1);
  });

  test('a restarted node recovers conf changes applied after its snapshot from the log', () => {
    const n = elected();
    n.addNode('d');
    n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd' });
    n.stabilize();
    n.tick('a');
    n.core('a').proposeConfChange({ type: 'promote', nodeId: 'd' });
    n.stabilize();
    const restarted = n.restart('b');
    expect(restarted.core.status().confState).toEqual({ voters: ['a', 'b', 'c', 'd'], learners: [] });
    // Already-applied entries are not handed out again.
    expect(restarted.core.ready().committedEntries).toEqual([]);
  });

  test('a node with no membership (a joiner not yet added) never campaigns', () => {
    const n = elected();
    n.addNode('z');
    n.isolate('z');
    n.tick('z', 100);
    expect(n.core('z').status()).toMatchObject({ role: 'follower', term: 0 });
  });

  test('applyConfChange is idempotent and ignores impossible changes', () => {
    const n = elected();
    const a = n.core('a');
    expect(a.applyConfChange({ type: 'promote', nodeId: 'nobody' })).toEqual({
      voters: ['a', 'b', 'c'],
      learners: [],
    });
    expect(a.applyConfChange({ type: 'addLearner', nodeId: 'b' })).toEqual({
      voters: ['a', 'b', 'c'],
      learners: [],
    });
    expect(a.applyConfChange({ type: 'remove', nodeId: 'nobody' })).toEqual({
      voters: ['a', 'b', 'c'],
      learners: [],
    });
    expect(a.applyConfChange({ type: 'addLearner', nodeId: 'l' })).toEqual({
      voters: ['a', 'b', 'c'],
      learners: ['l'],
    });
    expect(a.applyConfChange({ type: 'addLearner', nodeId: 'l' })).toEqual({
      voters: ['a', 'b', 'c'],
      learners: ['l'],
    });
  });

  test('a removed follower stops receiving appends and heartbeats', () => {
    const n = elected();
    n.core('a').proposeConfChange({ type: 'remove', nodeId: 'c' });
    n.stabilize();
    n.trace.length = 0;
    n.propose('a', 'x');
    n.tickAll(5);
    expect(n.trace.filter((m) => m.to === 'c' && m.from === 'a')).toEqual([]);
    expect(n.node('b').applied).toEqual(['x']);
  });

  test('a leader that applies its own removal steps down, and the others go on without it', () => {
    const n = elected();
    const a = n.core('a');
    expect(a.proposeConfChange({ type: 'remove', nodeId: 'a' })).toBeNull();
    const removal = a.status().lastIndex;
    n.stabilize();
    expect(a.status().role).toBe('follower');
    for (const id of ['b', 'c']) {
      expect(n.core(id).status().commit).toBeGreaterThanOrEqual(removal);
      expect(n.core(id).status().confState).toEqual({ voters: ['b', 'c'], learners: [] });
    }
    n.tickAll(30);
    expect(n.leaders()).toHaveLength(1);
    expect(n.leaders()).not.toContain('a');
  });

  test('removing the node leadership is being transferred to abandons the transfer', () => {
    const n = elected();
    const a = n.core('a');
    n.isolate('c');
    n.propose('a', 'x');
    expect(a.proposeConfChange({ type: 'remove', nodeId: 'c' })).toBeNull();
    // c lags (isolated), so the transfer waits for it to catch up.
    a.transferLeadership('c');
    n.stabilize();
    expect(a.status().confState.voters).toEqual(['a', 'b']);
    expect(a.status().leadTransferee).toBeNull();
    expect(a.propose('y')).toBeNull();
  });
});
