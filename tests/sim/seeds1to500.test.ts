import { describe, expect, it } from 'vitest';
import { failingSeeds } from './seedRange.ts';

// Seeds 501-1000 live in seeds501to1000.test.ts so vitest runs the two halves in parallel.
describe('Raft simulation, seeds 1-500', () => {
  for (let from = 1; from <= 500; from += 125) {
    it(`keeps every safety and liveness invariant for seeds ${from}-${from + 124}`, () => {
      expect(failingSeeds(from, 125)).toEqual([]);
    });
  }
});
