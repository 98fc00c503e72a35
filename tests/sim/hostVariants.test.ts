import { describe, expect, it } from 'vitest';
import type { ViolationKind } from './checker.ts';
import { runHostSeed } from './hostScenario.ts';
import type { HostVariant } from './hostVariants.ts';

// Each planted driver bug must be caught, by the check that names what it breaks, within a
// bounded number of host seeds.
const SEED_BUDGET = 30;

async function firstCatch(variant: HostVariant, kind: ViolationKind, reason: RegExp): Promise<string | null> {
  for (let seed = 1; seed <= SEED_BUDGET; seed++) {
    const { violation } = await runHostSeed({ seed, variant });
    if (violation?.kind === kind && reason.test(violation.message))
      return `seed ${seed}: ${violation.message}`;
  }
  return null;
}

describe('the host simulation catches deliberately broken drivers', () => {
  it('a driver that sends a Ready (votes, append acks) before its write is synced', async () => {
    expect(
      await firstCatch(
        'sendBeforePersist',
        'durable-ack',
        /(acknowledged index|granted its vote) .* but its disk/,
      ),
    ).not.toBeNull();
  }, 120_000);

  it('a driver that defers a vote-only hard state like a commit-only one', async () => {
    expect(
      await firstCatch('voteNotSynced', 'durable-ack', /granted its vote .* disk holds term \d+, vote none/),
    ).not.toBeNull();
  }, 120_000);

  it('a driver that applies again, after a restart, what the durable state machine holds', async () => {
    expect(
      await firstCatch('reapplyAfterRestart', 'state-machine-safety', /was handed entry \d+ to apply after/),
    ).not.toBeNull();
  }, 120_000);

  it('a state machine that answers syncApplied before its write is durable (the log compacted without a file)', async () => {
    expect(
      await firstCatch(
        'syncAppliedEarly',
        'state-machine-safety',
        /compacted its log at \d+ without a file while its state machine had made only \d+ durable/,
      ),
    ).not.toBeNull();
  }, 120_000);

  it('a leader answering ReadIndex on a lease, without a heartbeat quorum (paused and skewed nodes)', async () => {
    expect(await firstCatch('leaseRead', 'linearizability', /served read/)).not.toBeNull();
  }, 300_000);
});
