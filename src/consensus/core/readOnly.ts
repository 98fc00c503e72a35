// ReadIndex bookkeeping (etcd read_only.go, ReadOnlySafe): the leader records its commit index when a
// read arrives, then confirms it is still leader with a heartbeat round carrying the request's
// context. Once a majority has answered that round, every request queued up to that context can be
// served at the recorded index (Raft thesis 6.4).

import type { Index, Message, NodeId } from '../types.ts';

export interface ReadIndexStatus {
  /** The MsgReadIndex as received (from = requester, context = the read's ctx). */
  req: Message;
  index: Index;
  acks: Set<NodeId>;
}

export class ReadOnly {
  private readonly pending = new Map<string, ReadIndexStatus>();
  private queue: string[] = [];

  /** Queues a read at `index`; a context already pending is ignored (the first request wins). */
  addRequest(index: Index, req: Message): void {
    const ctx = req.context ?? '';
    if (this.pending.has(ctx)) return;
    this.pending.set(ctx, { req, index, acks: new Set() });
    this.queue.push(ctx);
  }

  /** Records that `from` answered the heartbeat round for `ctx`; returns the acks so far. */
  recvAck(from: NodeId, ctx: string): ReadonlySet<NodeId> | undefined {
    const rs = this.pending.get(ctx);
    if (rs === undefined) return undefined;
    rs.acks.add(from);
    return rs.acks;
  }

  /**
   * Dequeues every request up to and including `ctx`: a heartbeat round confirming leadership for a
   * later request also confirms it for the earlier ones.
   */
  advance(ctx: string): ReadIndexStatus[] {
    const at = this.queue.indexOf(ctx);
    if (at < 0) return [];
    const done = this.queue.slice(0, at + 1);
    this.queue = this.queue.slice(at + 1);
    const out: ReadIndexStatus[] = [];
    for (const c of done) {
      const rs = this.pending.get(c);
      if (rs === undefined) throw new Error(`ReadOnly: queued ctx ${c} has no pending status`);
      this.pending.delete(c);
      out.push(rs);
    }
    return out;
  }

  lastPendingRequestCtx(): string | undefined {
    return this.queue[this.queue.length - 1];
  }

  get pendingCount(): number {
    return this.queue.length;
  }
}
