// ReadIndex batching: reads that arrive before the loop hands a request to the core share it; a
// batch is released only once the leader confirmed an index and this node applied up to it.

import { describe, expect, test } from 'vitest';
import { RaftError } from '../../../src/consensus/node/raftError.ts';
import { ReadIndexBatcher } from '../../../src/consensus/node/readIndexBatcher.ts';
import { NodeClock, VirtualTime } from '../../sim/virtualTime.ts';

function setup() {
  const time = new VirtualTime();
  /** The driver's inbox: inputs wait here until the loop runs them (`runInputs`). */
  let inbox: (() => void)[] = [];
  const requested: string[] = [];
  let draws = 0;
  const reads = new ReadIndexBatcher({
    clock: new NodeClock(time, 1),
    random: () => draws++,
    timeoutMs: 1_000,
    input: (fn) => inbox.push(fn),
    requestReadIndex: (ctx) => requested.push(ctx),
  });
  const runInputs = () => {
    const batch = inbox;
    inbox = [];
    for (const fn of batch) fn();
  };
  return { time, reads, requested, runInputs };
}

/** A read's outcome as it stands: 'pending', 'resolved' or the error code it was rejected with. */
function watch(p: Promise<void>): () => Promise<string> {
  let outcome = 'pending';
  p.then(
    () => {
      outcome = 'resolved';
    },
    (err: RaftError) => {
      outcome = err.code;
    },
  );
  // Let the microtasks that settle it run first.
  return () => new Promise((r) => setImmediate(() => r(outcome)));
}

describe('ReadIndexBatcher', () => {
  test('reads queued before the request reaches the core share it; later ones get a new one', async () => {
    const { reads, requested, runInputs } = setup();
    const first = [watch(reads.wait()), watch(reads.wait())];
    runInputs();
    const later = watch(reads.wait());
    runInputs();
    expect(requested).toHaveLength(2);
    expect(requested[0]).not.toBe(requested[1]);
    reads.confirmed([{ index: 10, context: requested[0]! }]);
    reads.release(10);
    expect(await Promise.all(first.map((read) => read()))).toEqual(['resolved', 'resolved']);
    expect(await later()).toBe('pending');
  });

  test('contexts differ between batches and between incarnations drawing different bits', () => {
    const contexts = (firstDraw: number) => {
      let draw = firstDraw;
      const requested: string[] = [];
      const reads = new ReadIndexBatcher({
        clock: new NodeClock(new VirtualTime(), 1),
        random: () => draw++,
        timeoutMs: 1_000,
        input: (fn) => fn(),
        requestReadIndex: (ctx) => requested.push(ctx),
      });
      for (const read of [reads.wait(), reads.wait()]) read.catch(() => {});
      reads.failAll(new RaftError('Stopped', 'test over'));
      return requested;
    };
    const before = contexts(0);
    const after = contexts(7);
    expect(new Set(before).size).toBe(2);
    expect(after.some((ctx) => before.includes(ctx))).toBe(false);
  });

  test('a confirmed read waits until this node has applied up to the confirmed index', async () => {
    const { reads, requested, runInputs } = setup();
    const read = watch(reads.wait());
    runInputs();
    reads.release(100);
    expect(await read()).toBe('pending');
    reads.confirmed([{ index: 7, context: requested[0]! }]);
    reads.release(6);
    expect(await read()).toBe('pending');
    reads.release(7);
    expect(await read()).toBe('resolved');
  });

  test('a read never confirmed times out, whether or not its request reached the core', async () => {
    const { time, reads, runInputs } = setup();
    const submitted = watch(reads.wait());
    runInputs();
    time.advanceTo(500);
    const unsubmitted = watch(reads.wait());
    time.advanceTo(1_000);
    expect(await submitted()).toBe('Timeout');
    expect(await unsubmitted()).toBe('pending');
    time.advanceTo(1_500);
    expect(await unsubmitted()).toBe('Timeout');
  });

  test('a stop fails every waiting read', async () => {
    const { reads, runInputs } = setup();
    const submitted = watch(reads.wait());
    runInputs();
    const unsubmitted = watch(reads.wait());
    reads.failAll(new RaftError('Stopped', 'stopped'));
    expect([await submitted(), await unsubmitted()]).toEqual(['Stopped', 'Stopped']);
  });
});
