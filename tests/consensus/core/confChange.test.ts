// The membership rules of confChange.ts, apart from Raft: which changes are valid against a
// membership, which proposals may carry one, how one applies, and that replaying a stretch of log
// twice changes nothing more.

import { describe, expect, test } from 'vitest';
import {
  applyChangeToSets,
  confChangeValid,
  parseConfChange,
  refuseConfChanges,
  replayConfChanges,
} from '../../../src/consensus/core/index.ts';
import type { ConfChange, Entry } from '../../../src/consensus/types.ts';

const entryOf = (index: number, cc: ConfChange | string): Entry => ({
  index,
  term: 1,
  type: typeof cc === 'string' ? 'normal' : 'confChange',
  data: typeof cc === 'string' ? cc : JSON.stringify(cc),
});

describe('conf changes', () => {
  test('parse only the three kinds of change', () => {
    expect(parseConfChange('{"type":"promote","nodeId":"d"}')).toEqual({ type: 'promote', nodeId: 'd' });
    expect(parseConfChange('{"type":"addVoter","nodeId":"d"}')).toBeUndefined();
    expect(parseConfChange('{"type":"remove"}')).toBeUndefined();
    expect(parseConfChange('not json')).toBeUndefined();
  });

  test('are valid only against a membership they change, and never remove the last voter', () => {
    const voters = new Set(['a', 'b']);
    const learners = new Set(['l']);
    expect(confChangeValid(voters, learners, { type: 'addLearner', nodeId: 'x' })).toBe(true);
    expect(confChangeValid(voters, learners, { type: 'addLearner', nodeId: 'a' })).toBe(false);
    expect(confChangeValid(voters, learners, { type: 'addLearner', nodeId: 'l' })).toBe(false);
    expect(confChangeValid(voters, learners, { type: 'promote', nodeId: 'l' })).toBe(true);
    expect(confChangeValid(voters, learners, { type: 'promote', nodeId: 'a' })).toBe(false);
    expect(confChangeValid(voters, learners, { type: 'remove', nodeId: 'l' })).toBe(true);
    expect(confChangeValid(voters, learners, { type: 'remove', nodeId: 'x' })).toBe(false);
    expect(confChangeValid(new Set(['a']), learners, { type: 'remove', nodeId: 'a' })).toBe(false);
  });

  test('apply to the sets, and a replay of the same entries twice lands where one does', () => {
    const voters = new Set(['a']);
    const learners = new Set<string>();
    applyChangeToSets(voters, learners, { type: 'addLearner', nodeId: 'b' });
    applyChangeToSets(voters, learners, { type: 'promote', nodeId: 'b' });
    expect([...voters].sort()).toEqual(['a', 'b']);
    expect([...learners]).toEqual([]);

    const log = [
      entryOf(2, { type: 'addLearner', nodeId: 'c' }),
      entryOf(3, 'a command'),
      entryOf(4, { type: 'promote', nodeId: 'c' }),
      entryOf(5, { type: 'remove', nodeId: 'a' }),
    ];
    const once = replayConfChanges({ voters: ['a', 'b'], learners: [] }, log);
    expect({ voters: once.voters.sort(), learners: once.learners }).toEqual({
      voters: ['b', 'c'],
      learners: [],
    });
    const twice = replayConfChanges(once, log);
    expect(twice.voters.sort()).toEqual(['b', 'c']);
  });

  test('a proposal may carry one valid change, and only while no other may be pending', () => {
    const voters = new Set(['a', 'b']);
    const learners = new Set<string>();
    const add = entryOf(5, { type: 'addLearner', nodeId: 'c' });
    let asked = 0;
    const idle = () => {
      asked++;
      return false;
    };
    expect(refuseConfChanges([entryOf(4, 'x')], voters, learners, idle)).toBeNull();
    expect(asked).toBe(0);
    expect(refuseConfChanges([entryOf(4, 'x'), add], voters, learners, idle)).toBeNull();
    expect(refuseConfChanges([add], voters, learners, () => true)).toBe('ConfChangeInProgress');
    const promote = entryOf(6, { type: 'promote', nodeId: 'c' });
    expect(refuseConfChanges([add, promote], voters, learners, idle)).toBe('ConfChangeInProgress');
    const removeLast = entryOf(5, { type: 'remove', nodeId: 'a' });
    expect(refuseConfChanges([removeLast], new Set(['a']), learners, idle)).toBe('ProposalDropped');
    const garbled = { index: 5, term: 1, type: 'confChange' as const, data: '{' };
    expect(refuseConfChanges([garbled], voters, learners, idle)).toBe('ProposalDropped');
  });
});
