// Runs a range of seeds for the test suite and formats failures the way the CLI does, so a red
// test names the exact command that replays it.

import { runSeed } from './scenario.ts';

export function failingSeeds(from: number, count: number): string[] {
  const failures: string[] = [];
  for (let seed = from; seed < from + count; seed++) {
    const { violation } = runSeed({ seed });
    if (violation) {
      failures.push(
        `seed ${seed}: ${violation.kind} at tick ${violation.tick}: ${violation.message}\n  replay: npm run sim -- --seeds 1 --from ${seed} --verbose`,
      );
    }
  }
  return failures;
}
