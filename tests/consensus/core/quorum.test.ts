import { describe, expect, test } from 'vitest';
import { committedIndex, majority, voteResult } from '../../../src/consensus/core/index.ts';

describe('majority arithmetic', () => {
  test('a majority is more than half', () => {
    expect([1, 2, 3, 4, 5, 6, 7].map(majority)).toEqual([1, 2, 2, 3, 3, 4, 4]);
  });

  test('the committed index is the highest index a majority has acknowledged', () => {
    const cases: { matches: Record<string, number>; want: number }[] = [
      { matches: { a: 5 }, want: 5 },
      { matches: { a: 5, b: 3 }, want: 3 },
      { matches: { a: 5, b: 3, c: 1 }, want: 3 },
      { matches: { a: 5, b: 5, c: 1 }, want: 5 },
      { matches: { a: 9, b: 7, c: 2, d: 1 }, want: 2 },
      { matches: { a: 9, b: 7, c: 6, d: 1, e: 0 }, want: 6 },
    ];
    for (const c of cases) {
      expect(committedIndex(Object.keys(c.matches), (id) => c.matches[id])).toBe(c.want);
    }
  });

  test('voters without progress count as 0, and an empty voter set constrains nothing', () => {
    expect(committedIndex(['a', 'b', 'c'], (id) => (id === 'a' ? 4 : undefined))).toBe(0);
    expect(committedIndex([], () => 0)).toBe(Number.POSITIVE_INFINITY);
  });

  test('an election is won by a majority of grants and lost once a majority is out of reach', () => {
    const voters = ['a', 'b', 'c', 'd', 'e'];
    const votes = (granted: string[], rejected: string[]) =>
      new Map<string, boolean>([
        ...granted.map((g) => [g, true] as const),
        ...rejected.map((r) => [r, false] as const),
      ]);
    expect(voteResult(voters, votes(['a', 'b', 'c'], []))).toBe('won');
    expect(voteResult(voters, votes(['a', 'b'], ['c', 'd']))).toBe('pending');
    expect(voteResult(voters, votes(['a'], ['b', 'c', 'd']))).toBe('lost');
    // Votes from non-voters (learners, removed nodes) never count.
    expect(voteResult(['a', 'b', 'c'], votes(['a', 'x', 'y'], []))).toBe('pending');
  });
});
