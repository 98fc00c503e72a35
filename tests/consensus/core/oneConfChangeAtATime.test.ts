// Single-server membership changes are safe only one at a time (Raft thesis 4.1): a leader must
// never have two conf changes in flight, whichever way the proposals reach it. A forwarded MsgProp
// can carry several entries, so the rule must hold within one batch too (etcd raft.go stepLeader
// counts the batch's own conf changes as pending).

import { describe, expect, test } from 'vitest';
import type { ConfChange, Entry } from '../../../src/consensus/types.ts';
import { Network } from './network.ts';

function ccEntry(cc: ConfChange): Entry {
  return { term: 0, index: 0, type: 'confChange', data: JSON.stringify(cc) };
}

describe('one conf change at a time', () => {
  test('a batch holding two conf changes is refused, so the last voter can never be removed', () => {
    const n = new Network(['a', 'b'], { preVote: false });
    n.campaign('a');
    expect(n.leaders()).toEqual(['a']);
    const term = n.core('a').status().term;
    const lastBefore = n.core('a').status().lastIndex;
    // Each change alone is valid (two voters, remove one); together they empty the cluster.
    n.core('a').step({
      type: 'MsgProp',
      from: 'b',
      to: 'a',
      term: 0,
      entries: [ccEntry({ type: 'remove', nodeId: 'b' }), ccEntry({ type: 'remove', nodeId: 'a' })],
    });
    n.stabilize();
    n.tickAll(30);
    const a = n.core('a').status();
    expect(a.confState.voters.length).toBeGreaterThan(0);
    const log = n.node('a').storage.entries(lastBefore + 1, a.lastIndex + 1, Number.POSITIVE_INFINITY);
    expect(log.filter((e) => e.type === 'confChange' && e.term === term).length).toBeLessThanOrEqual(1);
  });

  test('the direct API refuses a second change while the first is unapplied', () => {
    const n = new Network(['a', 'b', 'c'], { preVote: false });
    n.campaign('a');
    n.addNode('d');
    n.addNode('e');
    const a = n.core('a');
    expect(a.proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBeNull();
    expect(a.proposeConfChange({ type: 'addLearner', nodeId: 'e' })).toBe('ConfChangeInProgress');
    n.stabilize();
    expect(a.proposeConfChange({ type: 'addLearner', nodeId: 'e' })).toBeNull();
  });
});
