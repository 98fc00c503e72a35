// Placement: which workers should receive a copy. Pure functions over a view of the node table,
// so the upload pipeline, repair and draining all rank targets the same way and tests need no cluster.

export interface PlacementCandidate {
  nodeId: string;
  zone: string;
  state: 'up' | 'suspect' | 'down' | 'draining' | 'drained';
  diskUsed: number;
  diskFree: number;
  objectCount: number;
  /**
   * This manager heard the worker within the suspect timeout, so its state and figures are
   * current. Absent counts as heard (callers that keep no liveness view).
   */
  heard?: boolean;
}

export interface PlacementRequest {
  /** Nodes that must not receive this copy: those already holding it, or that failed this attempt. */
  exclude?: ReadonlySet<string>;
  /** Zones that already hold a copy; a node in another zone is preferred when one exists. */
  avoidZones?: ReadonlySet<string>;
  /** Bytes the copy needs; a node with less free space is never chosen. */
  size?: number;
}

/**
 * How full the disk is, in whole percent. Disks within the same percent count as equally used, so
 * the object count decides between them: ranking by the exact fraction let measurement noise
 * decide (workers sharing one filesystem report it a few bytes apart) and sent every upload
 * between two heartbeats to the same worker.
 */
function usedPercent(n: PlacementCandidate): number {
  const total = n.diskUsed + n.diskFree;
  return total > 0 ? Math.floor((n.diskUsed / total) * 100) : 100;
}

/**
 * Every eligible target, best first: only `up` nodes (a suspect node may be dying, a draining one is
 * being emptied), with room for the copy, outside `exclude`; other zones before `avoidZones`, then
 * least used disk (by whole percent), then fewest objects, then node id so the order is total
 * and deterministic.
 */
export function rankTargets(
  nodes: Iterable<PlacementCandidate>,
  req: PlacementRequest = {},
): PlacementCandidate[] {
  const size = req.size ?? 0;
  const eligible = [...nodes].filter(
    (n) => n.state === 'up' && !req.exclude?.has(n.nodeId) && n.diskFree >= size,
  );
  const zonePenalty = (n: PlacementCandidate) => (req.avoidZones?.has(n.zone) ? 1 : 0);
  return eligible.sort(
    (a, b) =>
      zonePenalty(a) - zonePenalty(b) ||
      usedPercent(a) - usedPercent(b) ||
      a.objectCount - b.objectCount ||
      (a.nodeId < b.nodeId ? -1 : a.nodeId > b.nodeId ? 1 : 0),
  );
}

/**
 * Why rankTargets found no target, decided from the same candidates, so the answer names the
 * cause a client can act on:
 * - `full`: workers known to be live (heard lately) exist, and none has room for the copy (507);
 * - `unheard`: this manager has not heard enough workers lately to know (a leader just elected,
 *   workers restarting): retry shortly (503);
 * - `noWorker`: the table holds no worker that could take it (all down, draining or excluded).
 */
export type NoTargetReason = 'full' | 'unheard' | 'noWorker';

export function whyNoTarget(nodes: Iterable<PlacementCandidate>, req: PlacementRequest = {}): NoTargetReason {
  const open = [...nodes].filter((n) => !req.exclude?.has(n.nodeId));
  const live = open.filter((n) => n.state === 'up');
  if (live.length > 0) {
    // Room is judged only on figures a recent heartbeat gave: an unheard worker's may be stale.
    return live.every((n) => n.heard !== false) ? 'full' : 'unheard';
  }
  return open.some((n) => n.state === 'suspect') ? 'unheard' : 'noWorker';
}
