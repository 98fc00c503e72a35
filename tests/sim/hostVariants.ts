// Deliberately broken drivers: each is the real RaftNode with one realistic bug planted, to prove
// the host simulation catches it for the reason it was planted.

import type { RaftConfig } from '../../src/consensus/api.ts';
import { RaftCore } from '../../src/consensus/core/index.ts';
import { RaftNode } from '../../src/consensus/raftNode.ts';
import type { Index, Ready } from '../../src/consensus/types.ts';
import { UnconfirmedReadRaft } from './coreAdapter.ts';

export type HostVariant =
  | 'correct'
  | 'sendBeforePersist'
  | 'voteNotSynced'
  | 'reapplyAfterRestart'
  | 'leaseRead'
  /** Not the driver: the state machine answers syncApplied before its write is durable (hostStateMachine.ts). */
  | 'syncAppliedEarly';

export const HOST_VARIANTS: readonly HostVariant[] = [
  'correct',
  'sendBeforePersist',
  'voteNotSynced',
  'reapplyAfterRestart',
  'leaseRead',
  'syncAppliedEarly',
];

export function driverClass(variant: HostVariant): typeof RaftNode {
  switch (variant) {
    case 'correct':
      return RaftNode;
    case 'sendBeforePersist':
      return SendBeforePersistNode;
    case 'voteNotSynced':
      return VoteNotSyncedNode;
    case 'reapplyAfterRestart':
      return ReapplyingNode;
    case 'leaseRead':
      return LeaseReadNode;
    case 'syncAppliedEarly':
      return RaftNode;
  }
}

/** Hands a Ready's messages (votes, append acks) to the transport before its write is synced. */
class SendBeforePersistNode extends RaftNode {
  protected override async handleReady(rd: Ready): Promise<void> {
    if (rd.messages.length > 0) this.transport.send(rd.messages);
    await super.handleReady({ ...rd, messages: [] });
  }
}

/** Defers a hard state whose term is unchanged, as if only the commit index could change: a vote is not synced before it is granted. */
class VoteNotSyncedNode extends RaftNode {
  protected override mustSaveHardState(): boolean {
    const hs = this.unsavedHardState;
    return hs !== null && hs.term !== this.durableHardState.term;
  }
}

/** After a restart, applies again what the durable state machine already holds. */
class ReapplyingNode extends RaftNode {
  protected override appliedIndexToSkip(): Index {
    return 0;
  }
}

/**
 * Answers ReadIndex from the commit index without a heartbeat round, trusting check-quorum to have
 * deposed it in time (a lease, etcd's ReadOnlyLeaseBased): only safe while clocks run at the same
 * rate and no process pauses.
 */
class LeaseReadNode extends RaftNode {
  protected static override createCore(config: RaftConfig): RaftCore {
    return new RaftCore(config, (c) => new LeaseReadRaft(c));
  }
}

class LeaseReadRaft extends UnconfirmedReadRaft {
  protected override answersReadAtOnce(): boolean {
    return this.committedEntryInCurrentTerm();
  }
}
