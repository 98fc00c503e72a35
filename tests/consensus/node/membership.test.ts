// The driver's membership: URLs and transport peers follow applied conf changes, addMember's
// arguments are checked against the members, and the leader promotes only caught-up learners.

import { pino } from 'pino';
import { describe, expect, test } from 'vitest';
import { Membership, type PeerDirectory } from '../../../src/consensus/node/membership.ts';
import type { ConfChange, NodeId, ProgressStatus, Status } from '../../../src/consensus/types.ts';

/** The transport's peer table, as the transport would hold it. */
class PeerTable implements PeerDirectory {
  readonly urls = new Map<NodeId, string>();
  setPeer(id: NodeId, url: string): void {
    this.urls.set(id, url);
  }
  removePeer(id: NodeId): void {
    this.urls.delete(id);
  }
}

function setup(promoteGap = 10) {
  const peers = new PeerTable();
  peers.setPeer('b', 'http://b:1');
  const members = new Membership(
    'a',
    new Map([
      ['a', 'http://a:1'],
      ['b', 'http://b:1'],
    ]),
    { voters: ['a', 'b'], learners: [] },
    peers,
    pino({ level: 'silent' }),
    promoteGap,
  );
  return { peers, members };
}

function leaderStatus(lastIndex: number, progress: Record<NodeId, Partial<ProgressStatus>>): Status {
  const full: Record<NodeId, ProgressStatus> = {};
  for (const [id, p] of Object.entries(progress)) {
    full[id] = { match: 0, next: 1, state: 'probe', isLearner: false, recentActive: true, ...p };
  }
  return {
    id: 'a',
    term: 2,
    vote: 'a',
    commit: lastIndex,
    applied: lastIndex,
    lastIndex,
    firstIndex: 1,
    snapshotIndex: 0,
    role: 'leader',
    leader: 'a',
    confState: { voters: ['a', 'b'], learners: ['c'] },
    leadTransferee: null,
    progress: full,
  };
}

describe('Membership', () => {
  test('an added learner gets its URL and a peer; a removed member loses both, and self is no peer', () => {
    const { peers, members } = setup();
    members.applied({ type: 'addLearner', nodeId: 'c', context: 'http://c:1' }, 5, {
      voters: ['a', 'b'],
      learners: ['c'],
    });
    expect(members.urlOf('c')).toBe('http://c:1');
    expect(peers.urls.get('c')).toBe('http://c:1');
    expect(members.isLearner('c') && members.isMember('c') && !members.isVoter('c')).toBe(true);
    members.applied({ type: 'remove', nodeId: 'b' }, 6, { voters: ['a'], learners: ['c'] });
    members.applied({ type: 'remove', nodeId: 'a' }, 7, { voters: [], learners: ['c'] });
    expect(members.urlOf('b')).toBeNull();
    expect([...peers.urls.keys()]).toEqual(['c']);
    expect(members.isMember('a')).toBe(false);
  });

  test('addMember is a no-op for a voter at the same URL, and refused for a bad or different URL', () => {
    const { members } = setup();
    expect(members.alreadyVoter('b', 'http://b:1')).toBe(true);
    expect(members.alreadyVoter('c', 'http://c:1')).toBe(false);
    expect(() => members.alreadyVoter('b', 'http://elsewhere:1')).toThrow(/already a member/);
    expect(() => members.alreadyVoter('c', 'http://c:1/path')).toThrow(/bad member URL/);
  });

  test('promotes a learner only once it replicates within the gap, and not again right away', () => {
    const { members } = setup(10);
    members.applied({ type: 'addLearner', nodeId: 'c', context: 'http://c:1' }, 5, {
      voters: ['a', 'b'],
      learners: ['c'],
    });
    const proposed: ConfChange[] = [];
    const propose = (cc: ConfChange) => {
      proposed.push(cc);
      return null;
    };
    members.promoteCaughtUp(leaderStatus(100, { c: { state: 'probe', match: 95 } }), 0, propose);
    members.promoteCaughtUp(leaderStatus(100, { c: { state: 'replicate', match: 89 } }), 0, propose);
    expect(proposed).toEqual([]);
    members.promoteCaughtUp(leaderStatus(100, { c: { state: 'replicate', match: 90 } }), 0, propose);
    members.promoteCaughtUp(leaderStatus(100, { c: { state: 'replicate', match: 90 } }), 1_999, propose);
    expect(proposed).toEqual([{ type: 'promote', nodeId: 'c' }]);
    members.promoteCaughtUp(leaderStatus(100, { c: { state: 'replicate', match: 90 } }), 2_000, propose);
    expect(proposed).toHaveLength(2);
  });
});
