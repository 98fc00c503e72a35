// Term 0 means "local request, no term to compare" (etcd's convention). Only the requests a node
// forwards (MsgProp, MsgReadIndex, MsgTransferLeader) legitimately travel without a term. Any other
// message with term 0 comes from a faulty peer or transport and would skip the term check: a
// term-less heartbeat could make a follower commit (and apply) entries no leader has committed.

import { describe, expect, test } from 'vitest';
import { bootstrapSnapshot, MemoryStorage, RaftCore } from '../../../src/consensus/core/index.ts';
import type { Entry } from '../../../src/consensus/types.ts';
import { seededRandom } from './network.ts';

function entry(index: number, term: number): Entry {
  return { index, term, type: 'normal', data: `t${term}i${index}` };
}

function follower(): RaftCore {
  const storage = new MemoryStorage(bootstrapSnapshot(['a', 'b', 'c']));
  storage.append([2, 3, 4, 5].map((i) => entry(i, 2)));
  storage.setHardState({ term: 2, vote: null, commit: 1 });
  return new RaftCore({ id: 'b', storage, electionTick: 10, heartbeatTick: 1, random: seededRandom(5) });
}

describe('a peer message without a term', () => {
  test('cannot advance the commit index (MsgHeartbeat, MsgApp)', () => {
    const b = follower();
    b.step({ type: 'MsgHeartbeat', from: 'x', to: 'b', term: 0, commit: 5 });
    b.step({ type: 'MsgApp', from: 'x', to: 'b', term: 0, index: 5, logTerm: 2, commit: 5, entries: [] });
    expect(b.status()).toMatchObject({ commit: 1, leader: null });
  });

  test('cannot start an election (MsgTimeoutNow) or install a snapshot (MsgSnap)', () => {
    const b = follower();
    b.step({ type: 'MsgTimeoutNow', from: 'x', to: 'b', term: 0 });
    b.step({
      type: 'MsgSnap',
      from: 'x',
      to: 'b',
      term: 0,
      snapshot: { metadata: { index: 9, term: 2, confState: { voters: ['x'], learners: [] } }, data: '' },
    });
    expect(b.status()).toMatchObject({ term: 2, role: 'follower', commit: 1, lastIndex: 5 });
  });
});
