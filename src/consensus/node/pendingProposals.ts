// Proposals waiting for their entry to be applied here, by request id. A proposal is answered once:
// with the state machine's result when its entry applies, or with an error (refused by the core,
// timed out, node stopped). A timed-out proposal may still commit: its caller cannot tell, and must
// treat the outcome as unknown.

import type { AppliedResult } from '../stateMachine.ts';
import type { RaftClock, TimerHandle } from './clock.ts';
import { RaftError } from './raftError.ts';

/** Why a proposal was answered with an error, as imgvault_raft_proposals_dropped_total counts it. */
export type DropReason = 'queue_full' | 'refused' | 'timeout';

interface PendingProposal {
  resolve: (result: unknown) => void;
  reject: (err: RaftError) => void;
  timer: TimerHandle;
}

export interface PendingProposalsOptions {
  clock: RaftClock;
  timeoutMs: number;
  /** Bound on proposals waiting; beyond it a proposal is refused at once (backpressure). */
  max: number;
  onDropped?: (reason: DropReason) => void;
}

export class PendingProposals {
  private readonly waiting = new Map<string, PendingProposal>();

  constructor(private readonly opts: PendingProposalsOptions) {}

  get size(): number {
    return this.waiting.size;
  }

  /** Why `requestId` may not be proposed now (queue full, already pending), or null. */
  admit(requestId: string): RaftError | null {
    if (this.waiting.size >= this.opts.max) {
      this.opts.onDropped?.('queue_full');
      return new RaftError('ProposalDropped', `${this.waiting.size} proposals already pending; retry later`);
    }
    if (this.waiting.has(requestId)) {
      return new RaftError('DuplicateRequest', `request ${requestId} is already pending`);
    }
    return null;
  }

  /** Waits for `requestId`'s result, for at most the proposal timeout. Call `admit` first. */
  track(requestId: string): Promise<unknown> {
    return new Promise((resolve, reject) => {
      const timer = this.opts.clock.setTimeout(() => {
        if (!this.waiting.delete(requestId)) return;
        this.opts.onDropped?.('timeout');
        reject(
          new RaftError('Timeout', `proposal ${requestId} not applied within ${this.opts.timeoutMs} ms`),
        );
      }, this.opts.timeoutMs);
      this.waiting.set(requestId, { resolve, reject, timer });
    });
  }

  /** The core refused `requestId`'s entry: it will never apply. */
  refused(requestId: string, err: RaftError): void {
    this.opts.onDropped?.('refused');
    this.fail(requestId, err);
  }

  /** Answers the proposals whose entries the state machine just applied. */
  applied(results: AppliedResult[]): void {
    for (const r of results) {
      if (r.requestId === null) continue;
      const p = this.waiting.get(r.requestId);
      if (p === undefined) continue;
      this.waiting.delete(r.requestId);
      this.opts.clock.clearTimeout(p.timer);
      p.resolve(r.result);
    }
  }

  failAll(err: RaftError): void {
    for (const p of this.waiting.values()) {
      this.opts.clock.clearTimeout(p.timer);
      p.reject(err);
    }
    this.waiting.clear();
  }

  private fail(requestId: string, err: RaftError): void {
    const p = this.waiting.get(requestId);
    if (p === undefined) return;
    this.waiting.delete(requestId);
    this.opts.clock.clearTimeout(p.timer);
    p.reject(err);
  }
}
