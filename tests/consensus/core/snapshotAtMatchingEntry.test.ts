// Raft section 7: a follower that receives a snapshot whose last entry it already holds keeps its
// log after that entry and only advances its commit index (etcd raft.go restore, matchTerm case);
// a snapshot whose last entry conflicts replaces the whole log and the membership.

import { describe, expect, test } from 'vitest';
import { bootstrapSnapshot, MemoryStorage, RaftCore } from '../../../src/consensus/core/index.ts';
import type { Entry, Snapshot } from '../../../src/consensus/types.ts';
import { seededRandom } from './network.ts';

function entry(index: number, term: number): Entry {
  return { index, term, type: 'normal', data: `t${term}i${index}` };
}

function follower(): { core: RaftCore; storage: MemoryStorage } {
  const storage = new MemoryStorage(bootstrapSnapshot(['a', 'b', 'c']));
  storage.append([2, 3, 4, 5].map((i) => entry(i, 2)));
  storage.setHardState({ term: 2, vote: null, commit: 1 });
  const core = new RaftCore({
    id: 'b',
    storage,
    electionTick: 10,
    heartbeatTick: 1,
    random: seededRandom(3),
  });
  return { core, storage };
}

function snap(index: number, term: number, voters = ['a', 'b', 'c']): Snapshot {
  return { metadata: { index, term, confState: { voters, learners: [] } }, data: 'state' };
}

describe('a snapshot received by a follower', () => {
  test('that matches an entry it holds only fast-forwards the commit and keeps the entries after it', () => {
    const { core } = follower();
    core.step({ type: 'MsgSnap', from: 'a', to: 'b', term: 2, snapshot: snap(3, 2) });
    const rd = core.ready();
    expect(rd.snapshot).toBeUndefined();
    expect(rd.hardState?.commit).toBe(3);
    expect(rd.committedEntries.map((e) => e.index)).toEqual([2, 3]);
    expect(rd.messages).toContainEqual(expect.objectContaining({ type: 'MsgAppResp', to: 'a', index: 3 }));
    core.advance();
    expect(core.status()).toMatchObject({ lastIndex: 5, commit: 3 });
  });

  test('that conflicts with its log replaces the log and adopts the snapshot membership', () => {
    const { core, storage } = follower();
    core.step({ type: 'MsgSnap', from: 'a', to: 'b', term: 3, snapshot: snap(4, 3, ['a', 'b', 'c', 'd']) });
    const rd = core.ready();
    expect(rd.snapshot?.metadata.index).toBe(4);
    expect(rd.committedEntries).toEqual([]);
    expect(rd.hardState?.commit).toBe(4);
    storage.applySnapshot(rd.snapshot!);
    storage.setHardState(rd.hardState!);
    core.advance();
    expect(core.status()).toMatchObject({
      lastIndex: 4,
      commit: 4,
      applied: 4,
      confState: { voters: ['a', 'b', 'c', 'd'], learners: [] },
    });
  });
});
