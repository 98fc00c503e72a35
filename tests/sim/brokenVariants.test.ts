import { describe, expect, it } from 'vitest';
import type { ViolationKind } from './checker.ts';
import type { CoreVariant } from './coreAdapter.ts';
import { type RunResult, runSeed } from './scenario.ts';
import type { HostOrder } from './simNode.ts';

// The checker is only worth something if it catches real bugs. Each case plants one in the core
// or the host and requires the simulator to report it within a bounded number of seeds.
const SEED_BUDGET = 300;

const SAFETY: ViolationKind[] = [
  'election-safety',
  'log-matching',
  'leader-completeness',
  'state-machine-safety',
];

/** The first seed whose run breaks one of `kinds` (a broken core may also just stall a run). */
function firstViolation(
  coreVariant: CoreVariant,
  hostOrder: HostOrder,
  kinds: ViolationKind[] = SAFETY,
): RunResult | undefined {
  for (let seed = 1; seed <= SEED_BUDGET; seed++) {
    const result = runSeed({ seed, coreVariant, hostOrder });
    if (result.violation && kinds.includes(result.violation.kind)) return result;
  }
  return undefined;
}

describe('the simulator catches deliberately broken Raft', () => {
  it('(a) a leader committing an entry of a previous term by counting replicas (paper 5.4.2, figure 8)', () => {
    const found = firstViolation('commitPreviousTermByCounting', 'persistThenSend');
    expect(found, `no safety violation in ${SEED_BUDGET} seeds`).toBeDefined();
  });

  it('(b) a host that sends a Ready before persisting it (a vote or an ack lost in a crash)', () => {
    const found = firstViolation('correct', 'sendThenPersist');
    expect(found, `no safety violation in ${SEED_BUDGET} seeds`).toBeDefined();
  });

  it('(c) a follower truncating entries it already matched on a stale AppendEntries', () => {
    const found = firstViolation('truncateMatchedEntries', 'persistThenSend');
    expect(found, `no safety violation in ${SEED_BUDGET} seeds`).toBeDefined();
  });

  it('(d) a leader answering ReadIndex without confirming it still leads (stale reads)', () => {
    const found = firstViolation('readIndexWithoutQuorum', 'persistThenSend', ['linearizability']);
    expect(found, `no stale read caught in ${SEED_BUDGET} seeds`).toBeDefined();
  });

  it('the same seeds with the correct core and host report nothing', () => {
    for (let seed = 1; seed <= 20; seed++) expect(runSeed({ seed }).violation).toBeNull();
  });
});
