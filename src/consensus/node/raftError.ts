// The errors the node driver reports. Every failure is one code, so the HTTP layer maps a code to
// one status (docs/api.md's error table is checked against RaftErrorCode).

import type { ProposeError } from '../api.ts';
import type { NodeId } from '../types.ts';

export type RaftErrorCode =
  | 'NotLeader'
  | 'ProposalDropped'
  | 'ConfChangeInProgress'
  | 'TransferInProgress'
  | 'Timeout'
  | 'Stopped'
  | 'DuplicateRequest'
  | 'InvalidMember'
  | 'InvalidProposal';

export class RaftError extends Error {
  constructor(
    readonly code: RaftErrorCode,
    message: string,
    /** Set on NotLeader: the leader this node knows of, if any, for a redirect. */
    readonly leader: { id: NodeId; url: string | null } | null = null,
  ) {
    super(message);
    this.name = 'RaftError';
  }
}

const PROPOSE_ERROR_MESSAGES: Record<Exclude<ProposeError, 'NotLeader'>, string> = {
  ProposalDropped: 'the proposal was dropped (leader busy or changing)',
  ConfChangeInProgress: 'another membership change is still in progress',
  TransferInProgress: 'a leadership transfer is in progress',
};

/** The error for a leader the core knows of (or not): it carries the leader for a redirect. */
export function notLeaderError(leader: { id: NodeId; url: string | null } | null): RaftError {
  return new RaftError(
    'NotLeader',
    leader ? `not the leader; the leader is ${leader.id}` : 'not the leader, and no leader is known',
    leader,
  );
}

/** The error for a proposal the core refused; `leader` feeds a NotLeader's redirect. */
export function proposeRefusal(
  err: ProposeError,
  leader: () => { id: NodeId; url: string | null } | null,
): RaftError {
  if (err === 'NotLeader') return notLeaderError(leader());
  return new RaftError(err, PROPOSE_ERROR_MESSAGES[err]);
}

export const stoppedError = (): RaftError => new RaftError('Stopped', 'raft node is stopped');
