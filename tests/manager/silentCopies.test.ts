// Copies in flight to a worker that goes silent: WorkerLiveness aborts them at the suspect timeout
// so uploads place them elsewhere (replicateUpload.test.ts drives a whole upload through this).

import { describe, expect, it } from 'vitest';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';

function setup() {
  const clock = { now: 1_000_000 };
  const liveness = new WorkerLiveness({ suspectAfterMs: 3_000, now: () => clock.now });
  const hear = (...ids: string[]) => {
    for (const nodeId of ids)
      liveness.heard({ nodeId, diskUsed: 0, diskFree: 1, objectCount: 0, lastSeen: clock.now });
  };
  return { clock, liveness, hear };
}

describe('copies in flight to a silent worker', () => {
  it('are aborted once their worker is silent past the suspect timeout, and only theirs', () => {
    const { clock, liveness, hear } = setup();
    hear('w1', 'w2');
    const toW1 = [liveness.sendingTo('w1'), liveness.sendingTo('w1')];
    const toW2 = liveness.sendingTo('w2');
    clock.now += 3_000;
    hear('w2');
    expect(liveness.abandonSilentCopies()).toEqual([]);
    clock.now += 1;
    expect(liveness.abandonSilentCopies()).toEqual(['w1']);
    for (const copy of toW1) expect((copy.signal.reason as Error).message).toMatch(/w1 silent for 3001 ms/);
    expect(toW2.signal.aborted).toBe(false);
    // Aborted once: nothing is left to abandon on w1, and a copy that ended is not tracked.
    expect(liveness.abandonSilentCopies()).toEqual([]);
    for (const copy of toW1) copy.end();
    toW2.end();
    clock.now += 10_000;
    hear('w1');
    expect(liveness.abandonSilentCopies()).toEqual([]);
  });

  it('are kept while no worker at all was heard lately (then the manager itself stalled)', () => {
    const { clock, liveness, hear } = setup();
    hear('w1', 'w2');
    const copy = liveness.sendingTo('w1');
    clock.now += 5_000;
    expect(liveness.abandonSilentCopies()).toEqual([]);
    expect(copy.signal.aborted).toBe(false);
    hear('w2');
    expect(liveness.abandonSilentCopies()).toEqual(['w1']);
    expect(copy.signal.aborted).toBe(true);
  });
});
