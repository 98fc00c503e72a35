// A manager's `GET /v1/cluster/raft` answer (its schema is protocol/raftView.ts): how a manager
// builds it from its node's status, and how other managers (the start-up guard) and the tools read
// one. Here, below the CLI, so a manager needs nothing from cli/.

import type { RaftNodeStatus } from '../consensus/raftNode.ts';
import { type ManagerDiskView, parseRaftView, type RaftView } from '../protocol/raftView.ts';

export type { RaftView } from '../protocol/raftView.ts';

/** `disk`: the manager's (managerDisk.ts), when it keeps a reserve. */
export function raftViewOf(s: RaftNodeStatus, disk?: ManagerDiskView): RaftView {
  const view: RaftView = {
    id: s.id,
    role: s.role,
    term: s.term,
    leader: s.leader === null ? null : { id: s.leader, url: s.leaderUrl },
    commit: s.commit,
    applied: s.applied,
    firstIndex: s.firstIndex,
    lastIndex: s.lastIndex,
    snapshotIndex: s.snapshotIndex,
    confState: s.confState,
    members: s.members,
  };
  if (s.progress) {
    view.peers = Object.fromEntries(
      Object.entries(s.progress).map(([id, p]) => [
        id,
        {
          match: p.match,
          next: p.next,
          state: p.state,
          isLearner: p.isLearner,
          lastContactMs: p.lastContactMs,
        },
      ]),
    );
  }
  if (disk) view.disk = disk;
  return view;
}

/**
 * `url`'s raft view, or null when it does not answer in `timeoutMs` or answers something else.
 * `headers`: a client token, or the cluster secret, when the manager requires one.
 */
export async function fetchRaftView(
  url: string,
  timeoutMs = 1_000,
  headers: Record<string, string> = {},
): Promise<RaftView | null> {
  try {
    const res = await fetch(`${url}/v1/cluster/raft`, { headers, signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return null;
    return parseRaftView(await res.json());
  } catch {
    return null;
  }
}
