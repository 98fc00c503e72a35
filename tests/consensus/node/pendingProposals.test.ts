// Proposals waiting for their entries: each is answered once, by its result, a refusal, a timeout or
// a stop; the bound on waiting proposals refuses more at once. Time is virtual (tests/sim).

import { describe, expect, test } from 'vitest';
import { type DropReason, PendingProposals } from '../../../src/consensus/node/pendingProposals.ts';
import { RaftError } from '../../../src/consensus/node/raftError.ts';
import { NodeClock, VirtualTime } from '../../sim/virtualTime.ts';

function setup(max = 10) {
  const time = new VirtualTime();
  const dropped: DropReason[] = [];
  const proposals = new PendingProposals({
    clock: new NodeClock(time, 1),
    timeoutMs: 1_000,
    max,
    onDropped: (reason) => dropped.push(reason),
  });
  return { time, dropped, proposals };
}

const settled = (p: Promise<unknown>) =>
  p.then(
    (value) => ({ value }),
    (err: RaftError) => ({ code: err.code }),
  );

describe('PendingProposals', () => {
  test('answers a proposal with the result of its applied entry, and only that proposal', async () => {
    const { proposals } = setup();
    const a = proposals.track('a');
    const b = settled(proposals.track('b'));
    proposals.applied([
      { index: 5, requestId: 'a', result: 'done' },
      { index: 6, requestId: null, result: 'ignored' },
      { index: 7, requestId: 'unknown', result: 'ignored' },
    ]);
    expect(await a).toBe('done');
    expect(proposals.size).toBe(1);
    proposals.failAll(new RaftError('Stopped', 'stopped'));
    expect(await b).toEqual({ code: 'Stopped' });
    expect(proposals.size).toBe(0);
  });

  test('refuses a duplicate request id while the first waits, and a proposal beyond the bound', () => {
    const { proposals, dropped } = setup(2);
    void proposals.track('a').catch(() => {});
    expect(proposals.admit('a')?.code).toBe('DuplicateRequest');
    expect(proposals.admit('b')).toBeNull();
    void proposals.track('b').catch(() => {});
    expect(proposals.admit('c')?.code).toBe('ProposalDropped');
    expect(dropped).toEqual(['queue_full']);
  });

  test('times out a proposal never applied, and ignores its result if it comes later', async () => {
    const { time, proposals, dropped } = setup();
    const a = settled(proposals.track('a'));
    time.advanceTo(999);
    expect(proposals.size).toBe(1);
    time.advanceTo(1_000);
    expect(await a).toEqual({ code: 'Timeout' });
    proposals.applied([{ index: 9, requestId: 'a', result: 'late' }]);
    expect(dropped).toEqual(['timeout']);
  });

  test('a proposal the core refused is answered with the refusal and counted', async () => {
    const { proposals, dropped } = setup();
    const a = settled(proposals.track('a'));
    proposals.refused('a', new RaftError('TransferInProgress', 'transfer'));
    expect(await a).toEqual({ code: 'TransferInProgress' });
    expect(dropped).toEqual(['refused']);
    expect(proposals.size).toBe(0);
  });
});
