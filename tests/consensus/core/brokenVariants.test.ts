// The simulator builds deliberately broken cores to prove its checkers catch them. These tests
// pin the extension points it relies on: a Raft subclass injected through RaftCore's factory,
// overriding the commit rule, and a RaftLog subclass changing the truncation point.

import { describe, expect, test } from 'vitest';
import type { CoreStorage, RaftConfig } from '../../../src/consensus/api.ts';
import { committedIndex, Raft, RaftLog } from '../../../src/consensus/core/index.ts';
import type { Entry } from '../../../src/consensus/types.ts';
import { Network, storageWithLog } from './network.ts';

/** Commits whatever a majority holds, whatever its term: the bug Raft 5.4.2 / Figure 8 forbids. */
class CommitAnyTermRaft extends Raft {
  protected override maybeCommit(): boolean {
    const mci = committedIndex(this.voters, (id) => this.prs.get(id)?.match);
    if (!Number.isFinite(mci) || mci <= this.raftLog.committed) return false;
    this.raftLog.commitTo(mci);
    return true;
  }
}

/** Truncates from the first new entry even when it already matches (Figure 2 step 3 done wrong). */
class TruncatingLog extends RaftLog {
  override findConflict(ents: Entry[]): number {
    return ents[0]?.index ?? 0;
  }
}

class TruncatingRaft extends Raft {
  protected override createLog(storage: CoreStorage): RaftLog {
    return new TruncatingLog(storage);
  }
}

describe('broken variants for the simulator', () => {
  test('overriding maybeCommit lets a leader commit an earlier-term entry by counting', () => {
    const ids = ['a', 'b', 'c'];
    for (const [factory, expected] of [
      [undefined, 0],
      [(c: RaftConfig) => new CommitAnyTermRaft(c), 2],
    ] as const) {
      const n = new Network(ids, {
        preVote: false,
        storage: (id) => storageWithLog(ids, id === 'a' ? [1, 2] : [1]),
        ...(factory ? { factory } : {}),
      });
      const a = n.core('a');
      a.campaign();
      a.step({ type: 'MsgVoteResp', from: 'b', to: 'a', term: a.status().term });
      n.drain('a');
      a.step({ type: 'MsgAppResp', from: 'b', to: 'a', term: a.status().term, index: 2 });
      expect(a.status().commit).toBe(expected);
    }
  });

  test('overriding findConflict makes a stale append cut off entries the follower had acknowledged', () => {
    const ids = ['a', 'b'];
    const stale = {
      type: 'MsgApp' as const,
      from: 'a',
      to: 'b',
      term: 1,
      index: 1,
      logTerm: 1,
      entries: [{ term: 1, index: 2, type: 'normal' as const, data: 'e2' }],
      commit: 0,
    };
    const lastIndexAfter = (factory?: (c: RaftConfig) => Raft) => {
      const n = new Network(ids, {
        storage: (id) => (id === 'b' ? storageWithLog(ids, [1, 1, 1, 1]) : undefined),
        ...(factory ? { factory } : {}),
      });
      n.core('b').step(stale);
      n.drain('b');
      return n.node('b').storage.lastIndex();
    };
    expect(lastIndexAfter()).toBe(4);
    expect(lastIndexAfter((c) => new TruncatingRaft(c))).toBe(2);
  });
});
