// The leader's view of one follower (etcd tracker/progress.go).
//
// - probe: the leader does not know where the follower's log ends. It sends at most one MsgApp per
//   heartbeat interval and waits for the answer, backing `next` off on each rejection.
// - replicate: the follower is known to match up to `match`; the leader streams MsgApp optimistically,
//   advancing `next` as it sends, bounded by the inflight window.
// - snapshot: the follower needs entries the leader has compacted; nothing is sent until the host
//   reports how sending the snapshot ended (reportSnapshot) or the follower acknowledges it.

import type { Index, ProgressStatus } from '../types.ts';
import { Inflights } from './inflights.ts';

export type ProgressState = 'probe' | 'replicate' | 'snapshot';

export class Progress {
  match: Index = 0;
  next: Index;
  state: ProgressState = 'probe';
  /** In snapshot state: the index of the snapshot being sent. */
  pendingSnapshot: Index = 0;
  /** Heard from since the last check-quorum round (the leader itself is always active). */
  recentActive = false;
  /** In probe state: a MsgApp was sent and we wait for its answer or the next heartbeat. */
  msgAppFlowPaused = false;
  inflights: Inflights;
  isLearner: boolean;

  constructor(next: Index, maxInflight: number, isLearner: boolean) {
    this.next = next;
    this.inflights = new Inflights(maxInflight);
    this.isLearner = isLearner;
  }

  private resetState(state: ProgressState): void {
    this.msgAppFlowPaused = false;
    this.pendingSnapshot = 0;
    this.state = state;
    this.inflights.reset();
  }

  becomeProbe(): void {
    // After a snapshot the follower has at least the snapshot's index, so probe just after it.
    if (this.state === 'snapshot') {
      const pending = this.pendingSnapshot;
      this.resetState('probe');
      this.next = Math.max(this.match + 1, pending + 1);
    } else {
      this.resetState('probe');
      this.next = this.match + 1;
    }
  }

  becomeReplicate(): void {
    this.resetState('replicate');
    this.next = this.match + 1;
  }

  becomeSnapshot(snapshotIndex: Index): void {
    this.resetState('snapshot');
    this.pendingSnapshot = snapshotIndex;
  }

  /** Bookkeeping after sending a MsgApp with `count` entries (`bytes` of data) ending at `lastIndex`. */
  sentEntries(count: number, bytes: number, lastIndex: Index): void {
    if (this.state === 'replicate') {
      if (count > 0) {
        this.next = lastIndex + 1;
        this.inflights.add(lastIndex, bytes);
      }
    } else if (this.state === 'probe') {
      this.msgAppFlowPaused = true;
    } else {
      throw new Error(`Progress.sentEntries in state ${this.state}`);
    }
  }

  /** The follower acknowledged up to `n`; returns false if that was stale news. */
  maybeUpdate(n: Index): boolean {
    let updated = false;
    if (this.match < n) {
      this.match = n;
      updated = true;
      this.msgAppFlowPaused = false;
    }
    this.next = Math.max(this.next, n + 1);
    return updated;
  }

  /**
   * The follower rejected a MsgApp whose previous index was `rejected`, hinting that its log may
   * match up to `matchHint`. Returns false if the rejection is stale (out of order).
   */
  maybeDecrTo(rejected: Index, matchHint: Index): boolean {
    if (this.state === 'replicate') {
      // Rejections at or below match are answers to messages overtaken by later acknowledgements.
      if (rejected <= this.match) return false;
      this.next = this.match + 1;
      return true;
    }
    // In probe state only the answer to the probe just sent (next-1) counts.
    if (this.next - 1 !== rejected) return false;
    this.next = Math.max(Math.min(rejected, matchHint + 1), this.match + 1);
    this.msgAppFlowPaused = false;
    return true;
  }

  isPaused(): boolean {
    switch (this.state) {
      case 'probe':
        return this.msgAppFlowPaused;
      case 'replicate':
        return this.inflights.full();
      case 'snapshot':
        return true;
    }
  }

  toStatus(): ProgressStatus {
    return {
      match: this.match,
      next: this.next,
      state: this.state,
      isLearner: this.isLearner,
      recentActive: this.recentActive,
    };
  }
}
