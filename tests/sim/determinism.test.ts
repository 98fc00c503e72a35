import { describe, expect, it } from 'vitest';
import { runSeed } from './scenario.ts';

describe('simulation determinism', () => {
  it('replays a seed identically: same trace hash, same outcome, same statistics', () => {
    for (const seed of [7, 4242]) {
      const first = runSeed({ seed });
      const second = runSeed({ seed });
      expect(second.traceHash).toBe(first.traceHash);
      expect(second.stats).toEqual(first.stats);
      expect(second.violation).toEqual(first.violation);
    }
  });

  it('the verbose trace is the same run as the quiet one', () => {
    const quiet = runSeed({ seed: 11 });
    const verbose = runSeed({ seed: 11, verbose: true });
    expect(verbose.traceHash).toBe(quiet.traceHash);
    expect(verbose.stats).toEqual(quiet.stats);
    expect(verbose.trace.length).toBeGreaterThan(100);
  });

  it('different seeds give different runs', () => {
    const hashes = new Set([1, 2, 3, 4, 5].map((seed) => runSeed({ seed }).traceHash));
    expect(hashes.size).toBe(5);
  });
});
