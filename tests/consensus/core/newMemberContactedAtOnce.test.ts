// Liveness: when the leader applies a conf change that adds a member, it starts replicating to it
// at once (etcd switchToConfig probes every new progress), rather than leaving the new member idle
// until the next heartbeat round happens to reveal that it is behind.

import { describe, expect, test } from 'vitest';
import { Network } from './network.ts';

describe('a newly added member', () => {
  test('is sent the log (here a snapshot) as soon as the leader applies the change, before any tick', () => {
    const n = new Network(['a', 'b', 'c'], { preVote: false });
    n.campaign('a');
    n.propose('a', 'x');
    n.addNode('d');
    expect(n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBeNull();
    n.stabilize();
    // No tick has happened since the change was proposed: only the reaction to applying it.
    const toD = n.trace.filter((m) => m.from === 'a' && m.to === 'd');
    expect(toD.map((m) => m.type)).toContain('MsgSnap');
    expect(n.node('d').applied).toEqual(['x']);
    expect(n.core('a').status().progress?.d?.match).toBe(n.core('a').status().lastIndex);
  });
});
