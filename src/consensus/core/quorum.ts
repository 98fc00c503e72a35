// Majority arithmetic over one voter set (etcd quorum/majority.go). Membership changes are
// single-server, so there is never a joint configuration to consider.

import type { Index, NodeId } from '../types.ts';

export type VoteResult = 'won' | 'lost' | 'pending';

export function majority(voterCount: number): number {
  return Math.floor(voterCount / 2) + 1;
}

/**
 * The largest index acknowledged by a majority of `voters`. Voters without an entry in
 * `matchOf` count as 0. An empty voter set commits everything (+Infinity), as in etcd, so that
 * callers treat "no voters" as "no constraint" rather than "nothing committed".
 */
export function committedIndex(voters: Iterable<NodeId>, matchOf: (id: NodeId) => Index | undefined): Index {
  const matches: Index[] = [];
  for (const id of voters) matches.push(matchOf(id) ?? 0);
  if (matches.length === 0) return Number.POSITIVE_INFINITY;
  matches.sort((a, b) => b - a);
  return matches[majority(matches.length) - 1]!;
}

/** Whether `votes` (granted / rejected per voter) already decide an election among `voters`. */
export function voteResult(voters: Iterable<NodeId>, votes: ReadonlyMap<NodeId, boolean>): VoteResult {
  let granted = 0;
  let missing = 0;
  let total = 0;
  for (const id of voters) {
    total++;
    const v = votes.get(id);
    if (v === undefined) missing++;
    else if (v) granted++;
  }
  if (total === 0) return 'won';
  const q = majority(total);
  if (granted >= q) return 'won';
  if (granted + missing >= q) return 'pending';
  return 'lost';
}
