// Pre-vote (thesis 9.6) and check-quorum (thesis 6.2), on by default.

import { describe, expect, test } from 'vitest';
import { Network } from './network.ts';

function elected(opts = {}): Network {
  const n = new Network(['a', 'b', 'c'], opts);
  n.campaign('a');
  expect(n.leaders()).toEqual(['a']);
  return n;
}

describe('pre-vote', () => {
  test('a partitioned node does not inflate its term, and rejoins without deposing the leader', () => {
    const n = elected();
    const term = n.core('a').status().term;
    n.isolate('c');
    n.tick('c', 100);
    expect(n.core('c').status()).toMatchObject({ role: 'preCandidate', term });
    n.heal();
    n.tickAll(5);
    expect(n.leaders()).toEqual(['a']);
    expect(n.core('a').status().term).toBe(term);
    expect(n.core('c').status()).toMatchObject({ role: 'follower', leader: 'a', term });
  });

  test('without pre-vote the same partition bumps the term and disrupts the leader', () => {
    const n = elected({ preVote: false, checkQuorum: false });
    const term = n.core('a').status().term;
    n.isolate('c');
    n.tick('c', 100);
    expect(n.core('c').status().term).toBeGreaterThan(term + 1);
    n.heal();
    n.tickAll(30);
    expect(n.core('a').status().term).toBeGreaterThan(term);
  });

  test('a pre-candidate that wins a majority of pre-votes campaigns for real with term+1', () => {
    const n = new Network(['a', 'b', 'c']);
    const a = n.core('a');
    a.campaign();
    expect(a.status()).toMatchObject({ role: 'preCandidate', term: 1 });
    const preVotes = n.drain('a').filter((m) => m.type === 'MsgPreVote');
    expect(preVotes.map((m) => m.term)).toEqual([2, 2]);
    // Followers answer a pre-vote without changing their own term or vote.
    n.core('b').step(preVotes.find((m) => m.to === 'b')!);
    expect(n.core('b').status()).toMatchObject({ term: 1, vote: null });
    const [resp] = n.drain('b');
    expect(resp).toMatchObject({ type: 'MsgPreVoteResp', term: 2 });
    expect(resp!.reject).toBeFalsy();
    a.step(resp!);
    expect(a.status()).toMatchObject({ role: 'candidate', term: 2, vote: 'a' });
  });

  test('a pre-vote is refused to a candidate whose log is behind', () => {
    const n = elected({ electionTick: 10 });
    n.cutLink('a', 'c');
    n.propose('a', 'x');
    n.isolate('a');
    // Let b's lease on a expire so that only the log comparison can refuse c.
    for (let i = 0; i < 10; i++) n.core('b').tick();
    n.drain('b');
    n.trace.length = 0;
    n.core('c').campaign();
    n.stabilize();
    const resp = n.trace.find((m) => m.type === 'MsgPreVoteResp' && m.from === 'b');
    expect(resp?.reject).toBe(true);
    expect(n.core('c').status().role).not.toBe('leader');
  });
});

describe('check-quorum', () => {
  test('a leader that hears from no majority for an election timeout steps down', () => {
    const n = elected({ electionTick: 10 });
    n.isolate('a');
    n.tick('a', 9);
    expect(n.core('a').status().role).toBe('leader');
    n.tick('a', 11);
    expect(n.core('a').status()).toMatchObject({ role: 'follower', leader: null });
  });

  test('a leader that hears from a majority keeps leading', () => {
    const n = elected();
    n.cutLink('a', 'c');
    n.tickAll(100);
    expect(n.core('a').status().role).toBe('leader');
  });

  test('without check-quorum an isolated leader keeps believing it leads', () => {
    const n = elected({ checkQuorum: false });
    n.isolate('a');
    n.tick('a', 100);
    expect(n.core('a').status().role).toBe('leader');
  });

  test('a follower that heard from its leader ignores (pre)votes within the election timeout', () => {
    const n = elected({ electionTick: 10 });
    const term = n.core('a').status().term;
    const b = n.core('b');
    for (const type of ['MsgVote', 'MsgPreVote'] as const) {
      b.step({ type, from: 'c', to: 'b', term: term + 1, index: 100, logTerm: term });
      expect(n.drain('b')).toEqual([]);
      expect(b.status().term).toBe(term);
    }
    // After an election timeout of silence from the leader, the same vote is granted.
    n.isolate('b');
    n.isolate('a');
    for (let i = 0; i < 10; i++) b.tick();
    b.step({ type: 'MsgVote', from: 'c', to: 'b', term: term + 1, index: 100, logTerm: term });
    expect(n.drain('b').find((m) => m.type === 'MsgVoteResp')?.reject).toBeFalsy();
    expect(b.status()).toMatchObject({ term: term + 1, vote: 'c' });
  });

  test('a learner never campaigns and is never sent vote requests', () => {
    const n = new Network(['a', 'b']);
    n.campaign('a');
    n.addNode('l');
    n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'l' });
    n.stabilize();
    n.tick('a');
    n.isolate('a');
    n.trace.length = 0;
    n.tickAll(100);
    expect(n.core('l').status().role).toBe('follower');
    expect(n.trace.filter((m) => (m.type === 'MsgVote' || m.type === 'MsgPreVote') && m.to === 'l')).toEqual(
      [],
    );
  });
});
