// Membership changes, apart from the roles and messages of raft.ts (etcd keeps them in confchange/):
// parsing a conf-change entry, checking proposed changes against the membership, applying one to
// the member sets and to the leader's progress tracker, replaying the changes of a stretch of log,
// and what a leader does once a change applied. Raft (raft.ts) owns when they happen: a change is
// checked when proposed and takes effect when the host applies its entry. Everything here is as
// deterministic as the rest of the core: no clock, no I/O.

import type { ProposeError } from '../api.ts';
import type { ConfChange, ConfState, Entry, NodeId } from '../types.ts';
import { Progress } from './progress.ts';

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

/**
 * Why the conf changes among a proposal's `entries` may not be appended now, or null.
 * `inProgress()` tells whether an earlier change may still be unapplied (asked only when there is a
 * change): single-server changes are safe only one at a time (Raft thesis 4.1).
 */
export function refuseConfChanges(
  entries: Entry[],
  voters: Set<NodeId>,
  learners: Set<NodeId>,
  inProgress: () => boolean,
): ProposeError | null {
  let confChanges = 0;
  for (const e of entries) {
    if (e.type !== 'confChange') continue;
    const cc = parseConfChange(e.data);
    if (cc === undefined) return 'ProposalDropped';
    // A second change in the same batch (a forwarded MsgProp may carry several) would be pending
    // alongside the first, and was validated against a membership the first one changes.
    confChanges++;
    if (confChanges > 1 || inProgress()) return 'ConfChangeInProgress';
    // An invalid change is dropped like etcd drops it; ProposeError has no finer code for it.
    if (!confChangeValid(voters, learners, cc)) return 'ProposalDropped';
  }
  return null;
}

/** `voters` and `learners` with `cc` applied, as a new ConfState (the sets are left as they are). */
export function withConfChange(voters: Set<NodeId>, learners: Set<NodeId>, cc: ConfChange): ConfState {
  const v = new Set(voters);
  const l = new Set(learners);
  applyChangeToSets(v, l, cc);
  return { voters: [...v], learners: [...l] };
}

/** Who votes, who learns, and the leader's replication progress for each of them (raft.ts). */
export interface MemberTracker {
  readonly voters: Set<NodeId>;
  readonly learners: Set<NodeId>;
  readonly prs: Map<NodeId, Progress>;
}

/** How a new member's progress starts: at the leader's next index, with its in-flight window. */
export interface FreshProgress {
  next: number;
  maxInflight: number;
  self: NodeId;
  /** This node's own match: what of its log is durable. */
  selfMatch: () => number;
}

/** Replaces the membership of `t` by `cs`, keeping the progress of the members that stay (etcd's confchange/restore.go). */
export function switchConfig(t: MemberTracker, cs: ConfState, fresh: FreshProgress): void {
  t.voters.clear();
  t.learners.clear();
  for (const v of cs.voters) t.voters.add(v);
  for (const l of cs.learners) if (!t.voters.has(l)) t.learners.add(l);
  for (const id of [...t.prs.keys()]) {
    if (!t.voters.has(id) && !t.learners.has(id)) t.prs.delete(id);
  }
  for (const id of [...t.voters, ...t.learners]) {
    const isLearner = t.learners.has(id);
    const pr = t.prs.get(id);
    if (pr !== undefined) {
      pr.isLearner = isLearner;
      continue;
    }
    const created = new Progress(fresh.next, fresh.maxInflight, isLearner);
    // A new member counts as active so the leader may snapshot it and check-quorum is not
    // tripped by it before it had a chance to answer.
    created.recentActive = true;
    if (id === fresh.self) created.match = fresh.selfMatch();
    t.prs.set(id, created);
  }
}

/** What a leader's reaction to an applied conf change needs from Raft (raft.ts provides it). */
export interface ConfChangeLeader {
  readonly self: NodeId;
  /** Whether `id` is in the new configuration (voter or learner). */
  isMember(id: NodeId): boolean;
  isVoter(id: NodeId): boolean;
  transferee(): NodeId | null;
  /** Heartbeats every peer with the commit index, then becomes a follower in the same term. */
  stepDown(): void;
  /** Rechecks the commit index against the new quorum; true if it advanced. */
  commit(): boolean;
  /** Sends every peer what it lacks (the new commit index included). */
  broadcastAppend(): void;
  /** The other members, sorted. */
  peers(): NodeId[];
  /** Sends `to` what it lacks; an empty append (a probe) only if `sendIfEmpty`. */
  sendAppend(to: NodeId, sendIfEmpty: boolean): void;
  abortTransfer(): void;
}

/**
 * What a leader does once a conf change applied: the quorum changed at once, so the commit index
 * is rechecked; new members are contacted now rather than at the next heartbeat; a transfer to a
 * node that no longer votes is abandoned. `before` is the membership before the change.
 */
export function leaderAfterConfChange(leader: ConfChangeLeader, before: ReadonlySet<NodeId>): void {
  if (!leader.isMember(leader.self)) {
    // Removed leader (thesis 4.2.2): let followers learn the final commit index, then step down.
    leader.stepDown();
    return;
  }
  if (leader.commit()) {
    leader.broadcastAppend();
  } else {
    // A new member's progress starts at next = lastIndex + 1, so it has nothing to send unless
    // the probe may be empty.
    for (const id of leader.peers()) leader.sendAppend(id, !before.has(id));
  }
  const transferee = leader.transferee();
  if (transferee !== null && !leader.isVoter(transferee)) leader.abortTransfer();
}
