// Checks a peer's message against what this node knows before it reaches the Raft core. The
// cluster secret proves only that the sender holds the secret, not that it is the member it names
// or that it speaks for the cluster; these checks refuse what no honest member can send. Dropping a
// message is always safe in Raft (the network may lose any message); a refused honest one is only a
// delay, resent once the sender and this node agree again.

import type { Message, NodeId, Term } from '../types.ts';

/**
 * How far above our term a peer's term may be. Terms grow by one per election (and a pre-vote
 * asks for one more), so an honest cluster needs over a million elections, weeks of nothing but
 * failed ones, to move this far past a member that still holds its log; a forged term beyond it
 * would otherwise depose the leader and, near the largest safe integer, leave no next term.
 */
export const MAX_TERM_JUMP = 2 ** 20;

/** Sent only by the leader of the message's term to its followers. */
const FROM_LEADER: ReadonlySet<Message['type']> = new Set(['MsgApp', 'MsgHeartbeat', 'MsgSnap']);

export interface NodeView {
  id: NodeId;
  term: Term;
  /** The leader as this node last saw it, or null. */
  leader: NodeId | null;
  /** Every member, learners included; empty while a joining node has not heard of its cluster. */
  members: ReadonlySet<NodeId> | ReadonlyMap<NodeId, unknown>;
}

export type Refusal = 'not_member' | 'term_jump' | 'not_leader' | 'self';

/** Why `msg` must not reach the core, or null when it may. */
export function refusal(msg: Message, view: NodeView): Refusal | null {
  if (msg.from === view.id) return 'self';
  // A node being added starts knowing no members: it must hear its leader before it knows who that is.
  if (view.members.size > 0 && !view.members.has(msg.from) && !mayBeUnknownLeader(msg, view)) {
    return 'not_member';
  }
  if (msg.term > view.term + MAX_TERM_JUMP) return 'term_jump';
  if (msg.type === 'MsgTimeoutNow') {
    return msg.term === view.term && msg.from === view.leader ? null : 'not_leader';
  }
  // In one term only one member leads: another one's append in our term, while we know the leader, is forged.
  if (
    FROM_LEADER.has(msg.type) &&
    msg.term === view.term &&
    view.leader !== null &&
    msg.from !== view.leader
  ) {
    return 'not_leader';
  }
  return null;
}

/**
 * A member that was down or cut off while the membership changed may not know the leader elected
 * since: it must hear that leader's appends to learn the changes at all. It takes them only while
 * it has no leader itself (a follower of a live leader, and the leader, never do), and not in an
 * older term; then, all of that leader's messages, until the changes make it a member.
 */
function mayBeUnknownLeader(msg: Message, view: NodeView): boolean {
  if (msg.from === view.leader) return true;
  return view.leader === null && FROM_LEADER.has(msg.type) && msg.term >= view.term;
}
