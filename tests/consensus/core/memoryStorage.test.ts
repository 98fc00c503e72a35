import { describe, expect, test } from 'vitest';
import {
  bootstrapSnapshot,
  MemoryStorage,
  SnapshotOutOfDateError,
  StorageCompactedError,
} from '../../../src/consensus/core/index.ts';
import type { Entry } from '../../../src/consensus/types.ts';

function ents(from: number, terms: number[], data = 'd'): Entry[] {
  return terms.map((term, i) => ({ term, index: from + i, type: 'normal', data }));
}

function storage(terms: number[]): MemoryStorage {
  const s = new MemoryStorage();
  s.append(ents(1, terms));
  return s;
}

describe('MemoryStorage', () => {
  test('an empty storage has first index 1 and last index 0, and knows the term of index 0', () => {
    const s = new MemoryStorage();
    expect([s.firstIndex(), s.lastIndex(), s.term(0)]).toEqual([1, 0, 0]);
    expect(s.initialState()).toEqual({
      hardState: { term: 0, vote: null, commit: 0 },
      confState: { voters: [], learners: [] },
    });
  });

  test('the bootstrap snapshot starts the log after index 1 with the founding voters', () => {
    const s = new MemoryStorage(bootstrapSnapshot(['a', 'b']));
    expect([s.firstIndex(), s.lastIndex(), s.term(1)]).toEqual([2, 1, 1]);
    expect(s.initialState().confState).toEqual({ voters: ['a', 'b'], learners: [] });
    expect(s.initialState().hardState).toEqual({ term: 1, vote: null, commit: 1 });
  });

  test('append extends, replaces a conflicting suffix, and skips what is compacted', () => {
    const s = storage([1, 1, 2]);
    s.append(ents(4, [2, 2]));
    expect(s.entries(1, 6, Infinity).map((e) => e.term)).toEqual([1, 1, 2, 2, 2]);
    s.append(ents(3, [3]));
    expect(s.lastIndex()).toBe(3);
    expect(s.term(3)).toBe(3);
    expect(() => s.append(ents(5, [3]))).toThrow(/missing/);
    s.createSnapshot(2, { voters: ['a'], learners: [] }, 'snap');
    s.compact(2);
    s.append(ents(1, [1, 1, 3, 4]));
    expect([s.firstIndex(), s.lastIndex(), s.term(4)]).toEqual([3, 4, 4]);
  });

  test('entries read before an append that replaces a suffix keep what they held', () => {
    // append changes the log in place: what entries() handed out must be a copy, not a view.
    const s = storage([1, 1, 1, 1]);
    const before = s.entries(2, 5, Infinity);
    s.append(ents(3, [2]));
    s.append(ents(4, [2, 2]));
    expect(before.map((e) => [e.index, e.term])).toEqual([
      [2, 1],
      [3, 1],
      [4, 1],
    ]);
    expect(s.entries(1, 6, Infinity).map((e) => e.term)).toEqual([1, 1, 2, 2, 2]);
  });

  test('entries are limited by size but at least one is returned', () => {
    const s = new MemoryStorage();
    s.append(ents(1, [1, 1, 1, 1], 'xxxxxxxxxx'));
    expect(s.entries(1, 5, 25)).toHaveLength(2);
    expect(s.entries(1, 5, 1)).toHaveLength(1);
    expect(s.entries(1, 5, Infinity)).toHaveLength(4);
  });

  test('compaction drops entries but keeps the term of the last compacted one', () => {
    const s = storage([1, 2, 3, 4]);
    s.createSnapshot(3, { voters: ['a'], learners: [] }, 'state');
    s.compact(3);
    expect([s.firstIndex(), s.lastIndex(), s.term(3), s.term(4)]).toEqual([4, 4, 3, 4]);
    expect(() => s.entries(3, 5, Infinity)).toThrow(StorageCompactedError);
    expect(() => s.term(2)).toThrow(StorageCompactedError);
    expect(s.snapshot().metadata).toEqual({ index: 3, term: 3, confState: { voters: ['a'], learners: [] } });
  });

  test('compaction may not pass the latest snapshot, and snapshots only move forward', () => {
    const s = storage([1, 1, 1]);
    expect(() => s.compact(2)).toThrow(/beyond the latest snapshot/);
    s.createSnapshot(2, { voters: [], learners: [] }, '');
    expect(() => s.createSnapshot(2, { voters: [], learners: [] }, '')).toThrow(SnapshotOutOfDateError);
    expect(() => s.createSnapshot(9, { voters: [], learners: [] }, '')).toThrow(/beyond last index/);
  });

  test('applying a received snapshot replaces the whole log', () => {
    const s = storage([1, 1, 1]);
    s.applySnapshot({
      metadata: { index: 10, term: 4, confState: { voters: ['x'], learners: ['y'] } },
      data: 'd',
    });
    expect([s.firstIndex(), s.lastIndex(), s.term(10)]).toEqual([11, 10, 4]);
    expect(s.initialState().confState).toEqual({ voters: ['x'], learners: ['y'] });
    expect(() =>
      s.applySnapshot({ metadata: { index: 5, term: 4, confState: { voters: [], learners: [] } }, data: '' }),
    ).toThrow(SnapshotOutOfDateError);
  });
});
