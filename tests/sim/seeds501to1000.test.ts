import { describe, expect, it } from 'vitest';
import { failingSeeds } from './seedRange.ts';

// Seeds 1-500 live in seeds1to500.test.ts so vitest runs the two halves in parallel.
describe('Raft simulation, seeds 501-1000', () => {
  for (let from = 501; from <= 1000; from += 125) {
    it(`keeps every safety and liveness invariant for seeds ${from}-${from + 124}`, () => {
      expect(failingSeeds(from, 125)).toEqual([]);
    });
  }
});
