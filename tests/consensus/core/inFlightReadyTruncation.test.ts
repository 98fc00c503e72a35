// Ready/advance bookkeeping when input arrives between ready() and advance(): entries handed out
// in a Ready and replaced (a new leader truncates them) before advance() must not be marked
// stable by that advance, while the prefix that still matches is; the replacement is handed out
// in the next Ready, with its ack, so what
// the host persisted in the end is the new leader's log (etcd log_unstable.go stableTo).

import { describe, expect, test } from 'vitest';
import { bootstrapSnapshot, MemoryStorage, RaftCore } from '../../../src/consensus/core/index.ts';
import type { Entry, Ready } from '../../../src/consensus/types.ts';
import { seededRandom } from './network.ts';

function entry(index: number, term: number): Entry {
  return { index, term, type: 'normal', data: `t${term}i${index}` };
}

function persist(storage: MemoryStorage, rd: Ready): void {
  if (rd.snapshot) storage.applySnapshot(rd.snapshot);
  storage.append(rd.entries);
  if (rd.hardState) storage.setHardState(rd.hardState);
}

describe('entries replaced while their Ready is in flight', () => {
  test('are handed out again and the persisted log ends up as the new leader sent it', () => {
    const storage = new MemoryStorage(bootstrapSnapshot(['a', 'b', 'c']));
    const b = new RaftCore({ id: 'b', storage, electionTick: 10, heartbeatTick: 1, random: seededRandom(1) });
    b.step({
      type: 'MsgApp',
      from: 'a',
      to: 'b',
      term: 2,
      index: 1,
      logTerm: 1,
      commit: 1,
      entries: [2, 3, 4].map((i) => entry(i, 2)),
    });
    const first = b.ready();
    expect(first.entries.map((e) => e.index)).toEqual([2, 3, 4]);

    // Before the host advances, leader c of term 3 replaces entries 3 and 4.
    b.step({
      type: 'MsgApp',
      from: 'c',
      to: 'b',
      term: 3,
      index: 2,
      logTerm: 2,
      commit: 1,
      entries: [entry(3, 3)],
    });
    persist(storage, first);
    b.advance();

    expect(b.hasReady()).toBe(true);
    const second = b.ready();
    // Entry 2 still matches what the first Ready wrote, so it is stable and not handed out again
    // (a rewrite of it could reach below a commit index already on disk); 3 is the replacement.
    expect(second.entries).toEqual([entry(3, 3)]);
    expect(second.hardState?.term).toBe(3);
    expect(second.messages).toContainEqual(
      expect.objectContaining({ type: 'MsgAppResp', to: 'c', index: 3 }),
    );
    persist(storage, second);
    b.advance();

    expect(storage.lastIndex()).toBe(3);
    expect(storage.term(3)).toBe(3);
    expect(b.status().lastIndex).toBe(3);
    expect(b.hasReady()).toBe(false);
  });
});
