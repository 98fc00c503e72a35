import { describe, expect, it } from 'vitest';
import { runHostSeed } from './hostScenario.ts';

// The real RaftNode driver under faults; every fifth seed runs over the real LevelLogStore, and
// half compact their log the managers' way, without a snapshot file (hostScenario.ts).
const SEEDS = 40;

async function failingHostSeeds(from: number, count: number): Promise<string[]> {
  const failures: string[] = [];
  for (let seed = from; seed < from + count; seed++) {
    const { violation } = await runHostSeed({ seed });
    if (violation) {
      failures.push(
        `host seed ${seed}: ${violation.kind} at tick ${violation.tick}: ${violation.message}\n  replay: npm run sim -- --seeds 0 --host-seeds 1 --from ${seed} --verbose`,
      );
    }
  }
  return failures;
}

describe('host simulation: the real RaftNode on every manager', () => {
  for (let from = 1; from <= SEEDS; from += 20) {
    it(`keeps every invariant and the write history linearizable for seeds ${from}-${from + 19}`, async () => {
      expect(await failingHostSeeds(from, 20)).toEqual([]);
    }, 300_000);
  }

  it('replays a seed identically, over memory disks and over LevelDB, with each snapshot mode', async () => {
    // 3: files on memory disks; 5: inline on LevelDB; 10: lazy on LevelDB.
    for (const seed of [3, 5, 10]) {
      const first = await runHostSeed({ seed });
      const second = await runHostSeed({ seed });
      expect(second.traceHash).toBe(first.traceHash);
      expect(second.stats).toEqual(first.stats);
    }
  }, 120_000);
});
