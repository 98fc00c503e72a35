import { describe, expect, it } from 'vitest';
import { maybeAppendRuleBreaks, stableToRuleBreaks } from '../consensus/core/logRules.ts';
import type { ViolationKind } from './checker.ts';
import { CarelessUnstable, type CoreVariant, OvercommittingRaftLog } from './coreAdapter.ts';
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
  singleVoter = false,
): RunResult | undefined {
  for (let seed = 1; seed <= SEED_BUDGET; seed++) {
    const result = runSeed({ seed, coreVariant, hostOrder, singleVoter });
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
    const found = firstViolation('correct', 'sendThenPersist', ['durable-ack']);
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

  // (e) and (f) need a stale tail behind a matching prefix, or a replacement landing exactly while
  // its predecessor is being written: the leader's exact probing makes both too rare for random
  // seeds, so the rule itself is checked on the planted class (etcd tests them the same way).
  it('(e) a follower committing beyond the last entry the MsgApp vouched for (etcd TestLogMaybeAppend)', () => {
    expect(maybeAppendRuleBreaks((s) => new OvercommittingRaftLog(s))).toEqual([
      'committed 3 past the last new entry 2',
    ]);
  });

  it('(f) advance() marking entries stable by index alone, when they were replaced meanwhile', () => {
    expect(stableToRuleBreaks((offset) => new CarelessUnstable(offset))).toEqual([
      'stableTo(5, 1) dropped 5@2, which was never persisted',
    ]);
  });

  it('(g) a leader counting its own entries before they are durable, its appends sent while it writes them', () => {
    const found = firstViolation('leaderCountsUnsyncedEntries', 'persistThenSend', SAFETY, true);
    expect(found, `no safety violation in ${SEED_BUDGET} single-voter seeds`).toBeDefined();
  });

  it('the same seeds with the correct core and host report nothing', () => {
    for (let seed = 1; seed <= 20; seed++) expect(runSeed({ seed }).violation).toBeNull();
  });

  it('a single voter with learners, the correct core and host, reports nothing', () => {
    for (let seed = 1; seed <= 40; seed++) expect(runSeed({ seed, singleVoter: true }).violation).toBeNull();
  });
});
