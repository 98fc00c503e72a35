// The leader's own view of which workers are alive, from the heartbeats it receives. It is not
// replicated: a new leader starts it empty and gives every worker one suspect timeout to be heard
// from before doubting it, so a failover never condemns a healthy worker. Only verdicts that must
// survive a failover (a node is down) go through Raft.

import type { NodeState, NodeUsage, NodeView } from '../metadata/commands.ts';
import type { PlacementCandidate } from './placement.ts';

export interface LivenessOptions {
  suspectAfterMs: number;
  now?: () => number;
}

export class WorkerLiveness {
  private readonly lastHeard = new Map<string, number>();
  private readonly usage = new Map<string, NodeUsage>();
  private readonly pendingSummary = new Map<string, NodeUsage>();
  /** Copies this leader placed on a worker since its last heartbeat, which its figures lack. */
  private readonly placed = new Map<string, { bytes: number; count: number }>();
  private readonly now: () => number;
  private watchingSince: number;

  constructor(private readonly opts: LivenessOptions) {
    this.now = opts.now ?? Date.now;
    this.watchingSince = this.now();
  }

  /** Called when this manager becomes leader: earlier observations may be stale. */
  reset(): void {
    this.lastHeard.clear();
    this.usage.clear();
    this.pendingSummary.clear();
    this.placed.clear();
    this.watchingSince = this.now();
  }

  /**
   * Counts a copy just placed on `nodeId` against it until its next heartbeat, so uploads and
   * repairs running between two heartbeats spread over the workers instead of all picking the one
   * that looked emptiest at the last beat.
   */
  reservePlacement(nodeId: string, bytes: number): void {
    const p = this.placed.get(nodeId) ?? { bytes: 0, count: 0 };
    p.bytes += bytes;
    p.count += 1;
    this.placed.set(nodeId, p);
  }

  heard(usage: NodeUsage): void {
    this.lastHeard.set(usage.nodeId, this.now());
    this.usage.set(usage.nodeId, usage);
    this.pendingSummary.set(usage.nodeId, usage);
    this.placed.delete(usage.nodeId);
  }

  /** Milliseconds since the worker was last heard from (or since this leader started watching). */
  silenceMs(nodeId: string): number {
    return this.now() - (this.lastHeard.get(nodeId) ?? this.watchingSince);
  }

  /** The table's state, demoted to `suspect` when an `up` worker has been silent too long. */
  effectiveState(node: NodeView): NodeState {
    if (node.state === 'up' && this.silenceMs(node.nodeId) > this.opts.suspectAfterMs) return 'suspect';
    return node.state;
  }

  /**
   * Can serve reads and be a copy source now. A draining worker must also have been heard lately:
   * silence demotes only `up` to `suspect`, and a draining worker is never marked down (its drain
   * would be forgotten when it returned), so this is where a dead one stops being a source.
   */
  isServing(node: NodeView): boolean {
    const state = this.effectiveState(node);
    if (state === 'up') return true;
    return state === 'draining' && this.silenceMs(node.nodeId) <= this.opts.suspectAfterMs;
  }

  /**
   * Serving, and actually heard by this leader within the suspect timeout. Stricter than
   * isServing, which gives every worker the benefit of the doubt for a while after a failover:
   * what may destroy a copy (a wipe) must not count on a worker nobody has heard.
   */
  isHeardServing(node: NodeView): boolean {
    const heard = this.lastHeard.get(node.nodeId);
    return heard !== undefined && this.now() - heard <= this.opts.suspectAfterMs && this.isServing(node);
  }

  /** Placement candidates: the table's nodes with liveness and the freshest usage figures applied. */
  candidates(nodes: NodeView[]): PlacementCandidate[] {
    return nodes.map((n) => {
      const fresh = this.usage.get(n.nodeId);
      const placed = this.placed.get(n.nodeId) ?? { bytes: 0, count: 0 };
      return {
        nodeId: n.nodeId,
        zone: n.zone,
        state: this.effectiveState(n),
        diskUsed: (fresh?.diskUsed ?? n.diskUsed) + placed.bytes,
        diskFree: Math.max(0, (fresh?.diskFree ?? n.diskFree) - placed.bytes),
        objectCount: (fresh?.objectCount ?? n.objectCount) + placed.count,
      };
    });
  }

  /** Usage heard since the last call, for one coalesced heartbeatSummary command. */
  takeSummary(): NodeUsage[] {
    const out = [...this.pendingSummary.values()];
    this.pendingSummary.clear();
    return out;
  }
}
