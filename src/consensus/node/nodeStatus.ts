// What `RaftNode.status()` reports (GET /v1/cluster/raft is built from it): the core's status, with
// what only the driver knows: the applied index of the state machine, the snapshot it holds, the
// member URLs, and on the leader how long ago each peer was last heard from.

import type { NodeId, ProgressStatus, Status } from '../types.ts';

export interface RaftNodeStatus extends Omit<Status, 'progress'> {
  leaderUrl: string | null;
  members: Record<NodeId, string>;
  /** Only on the leader; lastContactMs is the time since this node last heard from the peer. */
  progress?: Record<NodeId, ProgressStatus & { lastContactMs: number | null }>;
}

/** When each peer was last heard from (any message that passed the checks in receive). */
export class PeerContacts {
  private readonly lastHeard = new Map<NodeId, number>();
  private readonly lastLost = new Map<NodeId, number>();

  heard(peer: NodeId, now: number): void {
    this.lastHeard.set(peer, now);
  }

  /** A path to `peer` closed or failed: it is silent until heard from again. */
  lost(peer: NodeId, now: number): void {
    this.lastLost.set(peer, now);
  }

  /** Milliseconds since `peer` was last heard from, or null if never, or not since a path to it was lost. */
  silenceMs(peer: NodeId, now: number): number | null {
    const seen = this.lastHeard.get(peer);
    const lost = this.lastLost.get(peer);
    if (seen === undefined || (lost !== undefined && lost >= seen)) return null;
    return now - seen;
  }

  /** Milliseconds since `peer` was last heard from, or null if never. */
  ageMs(peer: NodeId, now: number): number | null {
    const seen = this.lastHeard.get(peer);
    return seen === undefined ? null : now - seen;
  }
}

export interface DriverView {
  self: NodeId;
  now: number;
  applied: number;
  snapshotIndex: number;
  members: Map<NodeId, string>;
  contacts: PeerContacts;
}

export function nodeStatus(core: Status, driver: DriverView): RaftNodeStatus {
  const { progress: coreProgress, ...rest } = core;
  let progress: RaftNodeStatus['progress'];
  if (coreProgress) {
    progress = {};
    for (const [peer, p] of Object.entries(coreProgress)) {
      const lastContactMs = peer === driver.self ? 0 : driver.contacts.ageMs(peer, driver.now);
      progress[peer] = { ...p, lastContactMs };
    }
  }
  return {
    ...rest,
    applied: driver.applied,
    snapshotIndex: driver.snapshotIndex,
    leaderUrl: core.leader === null ? null : (driver.members.get(core.leader) ?? null),
    members: Object.fromEntries(driver.members),
    ...(progress ? { progress } : {}),
  };
}
