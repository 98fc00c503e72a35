// The two log rules a review found no test pinning (each planted bug survived the suite):
// a follower commits no further than the last entry the MsgApp vouched for (etcd
// TestLogMaybeAppend), and advance() marks entries stable only when the entry at that index still
// has the term that was persisted (etcd TestUnstableStableTo).

import { describe, expect, test } from 'vitest';
import { MemoryStorage, RaftLog } from '../../../src/consensus/core/index.ts';
import { Unstable } from '../../../src/consensus/core/unstable.ts';
import type { Entry } from '../../../src/consensus/types.ts';
import { entry, maybeAppendRuleBreaks, stableToRuleBreaks } from './logRules.ts';

/** A log holding 1@1 2@2 3@3 as unstable entries, committed to 1. */
function logOfThree(): RaftLog {
  const log = new RaftLog(new MemoryStorage());
  log.append([entry(1, 1), entry(2, 2), entry(3, 3)]);
  log.commitTo(1);
  return log;
}

describe('RaftLog.maybeAppend commits no further than the last new entry', () => {
  test.each([
    // [index, logTerm, leader commit, entries, expected lastNew, expected commit]
    { index: 3, logTerm: 3, commit: 4, ents: [], lastNew: 3, committed: 3 },
    { index: 1, logTerm: 1, commit: 3, ents: [], lastNew: 1, committed: 1 },
    { index: 2, logTerm: 2, commit: 3, ents: [], lastNew: 2, committed: 2 },
    { index: 1, logTerm: 1, commit: 3, ents: [entry(2, 2)], lastNew: 2, committed: 2 },
    { index: 2, logTerm: 2, commit: 4, ents: [entry(3, 3), entry(4, 3)], lastNew: 4, committed: 4 },
    { index: 3, logTerm: 3, commit: 2, ents: [entry(4, 4)], lastNew: 4, committed: 2 },
  ])('MsgApp($index, $logTerm, commit $commit, $ents.length entries) commits to $committed', (c) => {
    const log = logOfThree();
    expect(log.maybeAppend(c.index, c.logTerm, c.commit, c.ents)).toBe(c.lastNew);
    expect(log.committed).toBe(c.committed);
  });

  test('a matching prefix does not let the leader commit the stale tail behind it', () => {
    expect(maybeAppendRuleBreaks((s) => new RaftLog(s))).toEqual([]);
  });

  test('a mismatch at (index, logTerm) appends and commits nothing', () => {
    const log = logOfThree();
    expect(log.maybeAppend(3, 2, 3, [entry(4, 4)])).toBeUndefined();
    expect(log.committed).toBe(1);
    expect(log.lastIndex()).toBe(3);
  });
});

describe('Unstable.stableTo checks the term', () => {
  test('keeps both rules', () => {
    expect(stableToRuleBreaks((offset) => new Unstable(offset))).toEqual([]);
  });

  function unstableWith(offset: number, ents: Entry[]): Unstable {
    const u = new Unstable(offset);
    u.entries = ents;
    return u;
  }

  test('marks the entries up to a persisted (index, term) stable', () => {
    const u = unstableWith(5, [entry(5, 1), entry(6, 1)]);
    u.stableTo(5, 1);
    expect(u.offset).toBe(6);
    expect(u.entries).toEqual([entry(6, 1)]);
  });

  test('leaves an entry that was replaced by a newer term after its Ready was taken', () => {
    // The host persisted 5@1; meanwhile a new leader's MsgApp replaced it with 5@2.
    const u = unstableWith(5, [entry(5, 2)]);
    u.stableTo(5, 1);
    expect(u.offset).toBe(5);
    expect(u.entries).toEqual([entry(5, 2)]);
  });

  test('ignores an index below the offset or beyond the last entry', () => {
    const u = unstableWith(5, [entry(5, 1)]);
    u.stableTo(4, 1);
    u.stableTo(6, 1);
    expect(u.offset).toBe(5);
    expect(u.entries).toHaveLength(1);
  });
});
