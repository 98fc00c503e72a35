// Leadership transfer (thesis 3.10): MsgTransferLeader, catch-up, MsgTimeoutNow.

import { describe, expect, test } from 'vitest';
import { Network } from './network.ts';

function elected(): Network {
  const n = new Network(['a', 'b', 'c'], { electionTick: 10 });
  n.campaign('a');
  return n;
}

describe('leadership transfer', () => {
  test('an up-to-date transferee is told to campaign at once and wins despite pre-vote and leases', () => {
    const n = elected();
    const term = n.core('a').status().term;
    n.core('a').transferLeadership('b');
    n.stabilize();
    expect(n.leaders()).toEqual(['b']);
    expect(n.core('b').status().term).toBe(term + 1);
    const votes = n.trace.filter((m) => m.type === 'MsgVote' && m.from === 'b');
    expect(votes.length).toBe(2);
    for (const m of votes) expect(m.context).toBe('transfer');
    expect(n.trace.some((m) => m.type === 'MsgPreVote' && m.from === 'b')).toBe(false);
  });

  test('a lagging transferee is caught up first, and proposals are refused meanwhile', () => {
    const n = elected();
    n.cutLink('a', 'c');
    for (let i = 0; i < 3; i++) n.propose('a', `x${i}`);
    n.core('a').transferLeadership('c');
    n.stabilize();
    expect(n.core('a').status().leadTransferee).toBe('c');
    expect(n.core('a').propose('y')).toBe('TransferInProgress');
    n.heal();
    n.tick('a');
    expect(n.leaders()).toEqual(['c']);
    expect(n.node('c').applied).toEqual(['x0', 'x1', 'x2']);
  });

  test('a transfer that does not complete within an election timeout is abandoned', () => {
    const n = elected();
    n.isolate('c');
    n.core('a').transferLeadership('c');
    n.stabilize();
    expect(n.core('a').status().leadTransferee).toBe('c');
    n.tick('a', 10);
    expect(n.core('a').status()).toMatchObject({ role: 'leader', leadTransferee: null });
    expect(n.propose('a', 'after')).toBeNull();
  });

  test('a follower forwards a transfer request to the leader', () => {
    const n = elected();
    n.core('b').transferLeadership('c');
    n.stabilize();
    expect(n.leaders()).toEqual(['c']);
  });

  test('transfers to a learner, a non-member or the leader itself are ignored', () => {
    const n = elected();
    n.addNode('l');
    n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'l' });
    n.stabilize();
    for (const to of ['l', 'zz', 'a']) {
      n.core('a').transferLeadership(to);
      n.stabilize();
      expect(n.core('a').status()).toMatchObject({ role: 'leader', leadTransferee: null });
    }
  });
});
