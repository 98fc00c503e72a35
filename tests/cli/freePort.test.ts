// freePort hands a child its port before the child listens, so the port lies open in between: a
// second call in the same process must not hand it out again (two managers of one drill once got
// the same port, and the drill waited for a leader until it gave up).

import { describe, expect, it } from 'vitest';
import { freePort } from '../../src/cli/localProcess.ts';

describe('freePort', () => {
  it('never hands out the same port twice in one process, though none of them is listened on', async () => {
    // Drawn at random from some 22,000 ports, 1,000 draws repeat one with near certainty.
    const ports: number[] = [];
    for (let i = 0; i < 1_000; i++) ports.push(await freePort());
    expect(new Set(ports).size).toBe(ports.length);
    for (const port of ports) {
      expect(port).toBeGreaterThan(0);
      expect(port).toBeLessThan(65_536);
    }
  }, 60_000);
});
