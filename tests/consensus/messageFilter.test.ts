// What messageFilter lets through to the Raft core, case by case, including the honest messages
// that membership changes and elections produce and must keep reaching it.

import { describe, expect, it } from 'vitest';
import { MAX_TERM_JUMP, type NodeView, refusal } from '../../src/consensus/transport/messageFilter.ts';
import type { Message } from '../../src/consensus/types.ts';

const follower: NodeView = { id: 'n2', term: 7, leader: 'n1', members: new Set(['n1', 'n2', 'n3']) };

function msg(type: Message['type'], from: string, term: number): Message {
  return { type, from, to: 'n2', term };
}

describe('refusal', () => {
  it('drops a non-member, a removed member and our own id', () => {
    expect(refusal(msg('MsgApp', 'm9', 8), follower)).toBe('not_member');
    expect(refusal(msg('MsgHeartbeatResp', 'n4', 7), follower)).toBe('not_member');
    expect(refusal(msg('MsgVote', 'n2', 8), follower)).toBe('self');
  });

  it('lets a node that knows no members yet (being added) hear its leader', () => {
    const joining: NodeView = { id: 'n4', term: 0, leader: null, members: new Set() };
    expect(refusal({ ...msg('MsgSnap', 'n1', 7), to: 'n4' }, joining)).toBeNull();
  });

  it('lets a member that missed membership changes, with no leader, hear the leader elected since', () => {
    const stale: NodeView = { ...follower, leader: null };
    expect(refusal(msg('MsgApp', 'n5', 9), stale)).toBeNull();
    expect(refusal(msg('MsgSnap', 'n5', 7), stale)).toBeNull();
    expect(refusal(msg('MsgApp', 'n5', 6), stale)).toBe('not_member');
    expect(refusal(msg('MsgVote', 'n5', 9), stale)).toBe('not_member');
    expect(refusal(msg('MsgApp', 'n5', 9), follower)).toBe('not_member');
    const following: NodeView = { ...follower, term: 9, leader: 'n5' };
    expect(refusal(msg('MsgApp', 'n5', 9), following)).toBeNull();
    expect(refusal(msg('MsgReadIndexResp', 'n5', 9), following)).toBeNull();
  });

  it('lets the leader hear a learner it has added', () => {
    const leader: NodeView = { id: 'n1', term: 7, leader: 'n1', members: new Set(['n1', 'n2', 'n3', 'n4']) };
    expect(refusal({ ...msg('MsgAppResp', 'n4', 7), to: 'n1' }, leader)).toBeNull();
  });

  it('drops a term more than MAX_TERM_JUMP ahead, and takes one at the bound', () => {
    expect(refusal(msg('MsgHeartbeat', 'n3', 7 + MAX_TERM_JUMP + 1), follower)).toBe('term_jump');
    expect(refusal(msg('MsgPreVote', 'n3', 7 + MAX_TERM_JUMP), follower)).toBeNull();
  });

  it('takes MsgTimeoutNow only from our leader in our term', () => {
    expect(refusal(msg('MsgTimeoutNow', 'n1', 7), follower)).toBeNull();
    expect(refusal(msg('MsgTimeoutNow', 'n3', 7), follower)).toBe('not_leader');
    expect(refusal(msg('MsgTimeoutNow', 'n1', 8), follower)).toBe('not_leader');
    expect(refusal(msg('MsgTimeoutNow', 'n1', 7), { ...follower, leader: null })).toBe('not_leader');
  });

  it("drops another member's append in our term, but takes a new leader's in a higher one", () => {
    expect(refusal(msg('MsgApp', 'n3', 7), follower)).toBe('not_leader');
    expect(refusal(msg('MsgHeartbeat', 'n3', 7), follower)).toBe('not_leader');
    expect(refusal(msg('MsgApp', 'n3', 8), follower)).toBeNull();
    expect(refusal(msg('MsgApp', 'n3', 7), { ...follower, leader: null })).toBeNull();
    expect(refusal(msg('MsgVote', 'n3', 8), follower)).toBeNull();
  });
});
