// Membership changes as pure functions of the member sets (etcd keeps them apart in confchange/):
// parsing a conf-change entry, checking a proposed change against the current membership, applying
// one to the sets, and replaying the changes of a stretch of log. Raft (raft.ts) owns when they
// happen: a change is validated when proposed and takes effect when the host applies its entry.

import type { ConfChange, ConfState, Entry, NodeId } from '../types.ts';

/** The change a `confChange` entry carries, or undefined when its data is not one. */
export function parseConfChange(data: string): ConfChange | undefined {
  try {
    const v = JSON.parse(data) as Partial<ConfChange> | null;
    if (v === null || typeof v !== 'object' || typeof v.nodeId !== 'string') return undefined;
    if (v.type !== 'addLearner' && v.type !== 'promote' && v.type !== 'remove') return undefined;
    return v as ConfChange;
  } catch {
    return undefined;
  }
}

/** Whether `cc` makes sense against this membership (etcd drops an invalid change the same way). */
export function confChangeValid(voters: Set<NodeId>, learners: Set<NodeId>, cc: ConfChange): boolean {
  switch (cc.type) {
    case 'addLearner':
      return !voters.has(cc.nodeId) && !learners.has(cc.nodeId);
    case 'promote':
      return learners.has(cc.nodeId);
    case 'remove':
      // Removing the last voter would leave a cluster that can never elect a leader.
      if (voters.has(cc.nodeId)) return voters.size > 1;
      return learners.has(cc.nodeId);
  }
}

/** Applies `cc` to the sets in place; applying the same change twice does no harm. */
export function applyChangeToSets(voters: Set<NodeId>, learners: Set<NodeId>, cc: ConfChange): void {
  switch (cc.type) {
    case 'addLearner':
      if (!voters.has(cc.nodeId)) learners.add(cc.nodeId);
      return;
    case 'promote':
      if (learners.delete(cc.nodeId)) voters.add(cc.nodeId);
      return;
    case 'remove':
      voters.delete(cc.nodeId);
      learners.delete(cc.nodeId);
      return;
  }
}

/** `cs` with the conf changes among `entries` applied in order (entries of other types skipped). */
export function replayConfChanges(cs: ConfState, entries: Entry[]): ConfState {
  const voters = new Set(cs.voters);
  const learners = new Set(cs.learners);
  for (const e of entries) {
    if (e.type !== 'confChange') continue;
    const cc = parseConfChange(e.data);
    if (cc !== undefined) applyChangeToSets(voters, learners, cc);
  }
  return { voters: [...voters], learners: [...learners] };
}
