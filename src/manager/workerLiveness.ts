// A manager's own view of which workers are alive, from the heartbeats it receives. Workers beat
// every manager (as HDFS DataNodes report to the active and the standby NameNode), so a follower
// keeps this view warm and a new leader places uploads from its first moment. It is not replicated
// and only the leader acts on it. Only verdicts that must survive a failover (a node is down) go
// through Raft, and those are damped: silence counts toward a down verdict only from the moment
// this manager started leading (downSilenceMs), so a failover never condemns a healthy worker.

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
  /** Copies being sent to each worker right now (sendingTo), abandoned if it goes silent. */
  private readonly sending = new Map<string, Set<AbortController>>();
  /** Copies this leader placed on a worker since its last heartbeat, which its figures lack. */
  private readonly placed = new Map<string, { bytes: number; count: number }>();
  private readonly now: () => number;
  /** When this view began: a worker never heard is silent since then. */
  private readonly watchingSince: number;
  /** When this manager last started leading; down verdicts count silence from here at the earliest. */
  private leadingSince: number;

  constructor(private readonly opts: LivenessOptions) {
    this.now = opts.now ?? Date.now;
    this.watchingSince = this.now();
    this.leadingSince = this.watchingSince;
  }

  /**
   * Called when this manager becomes leader: starts the down clock (downSilenceMs). What it heard
   * as a follower stays: those heartbeats were real, recent evidence of life, which is what lets it
   * place uploads at once.
   */
  startLeading(): void {
    this.leadingSince = this.now();
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

  /**
   * A copy starts going to `nodeId`: its signal aborts if the worker goes silent before the copy
   * ends (abandonSilentCopies). `end` must be called once the copy ends, however it ends.
   */
  sendingTo(nodeId: string): { signal: AbortSignal; end: () => void } {
    const abort = new AbortController();
    const copies = this.sending.get(nodeId) ?? new Set<AbortController>();
    this.sending.set(nodeId, copies);
    copies.add(abort);
    const end = () => {
      copies.delete(abort);
      if (copies.size === 0 && this.sending.get(nodeId) === copies) this.sending.delete(nodeId);
    };
    return { signal: abort.signal, end };
  }

  /**
   * Aborts the copies in flight to workers silent past the suspect timeout, so that their uploads
   * place them elsewhere now rather than wait out the PUT's answer bound (10 s and more) on a
   * frozen process or host. Not while no worker at all was heard lately: that is this manager's own
   * stall (its event loop held up), not the workers'. Returns the workers whose copies it aborted.
   */
  abandonSilentCopies(): string[] {
    if (![...this.lastHeard.keys()].some((n) => this.heardLately(n))) return [];
    const abandoned: string[] = [];
    for (const [nodeId, copies] of this.sending) {
      const silence = this.silenceMs(nodeId);
      if (silence <= this.opts.suspectAfterMs) continue;
      const why = new Error(`worker ${nodeId} silent for ${silence} ms: copy abandoned`);
      for (const abort of copies) abort.abort(why);
      this.sending.delete(nodeId);
      abandoned.push(nodeId);
    }
    return abandoned;
  }

  /** The usage figures of the worker's last heartbeat to this manager, if it has heard one. */
  heardUsage(nodeId: string): NodeUsage | undefined {
    return this.usage.get(nodeId);
  }

  /** Milliseconds since this manager last heard the worker (or since it started watching). */
  silenceMs(nodeId: string): number {
    return this.now() - (this.lastHeard.get(nodeId) ?? this.watchingSince);
  }

  /**
   * The silence a down verdict may count: at most the time since this manager started leading.
   * Every worker gets one full down timeout from a leader's start, as observed by that leader, before
   * it can be condemned; a follower's observations never condemn anyone on their own (a worker that
   * could not reach this manager while it followed may have been beating the old leader all along).
   */
  downSilenceMs(nodeId: string): number {
    return Math.min(this.silenceMs(nodeId), this.now() - this.leadingSince);
  }

  /** Heard by this manager within the suspect timeout. */
  private heardLately(nodeId: string): boolean {
    const heard = this.lastHeard.get(nodeId);
    return heard !== undefined && this.now() - heard <= this.opts.suspectAfterMs;
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
   * Serving, and actually heard by this manager within the suspect timeout. Stricter than
   * isServing, which gives a worker the benefit of the doubt for one suspect timeout after this
   * manager starts: what may destroy a copy (a wipe) must not count on a worker nobody has heard.
   */
  isHeardServing(node: NodeView): boolean {
    return this.heardLately(node.nodeId) && this.isServing(node);
  }

  /**
   * Placement candidates: the table's nodes with liveness and the freshest usage figures applied.
   * `heard` tells figures from a recent heartbeat from the table's (possibly stale) ones.
   */
  candidates(nodes: NodeView[]): PlacementCandidate[] {
    return nodes.map((n) => {
      const fresh = this.usage.get(n.nodeId);
      const placed = this.placed.get(n.nodeId) ?? { bytes: 0, count: 0 };
      return {
        nodeId: n.nodeId,
        zone: n.zone,
        state: this.effectiveState(n),
        heard: this.heardLately(n.nodeId),
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
