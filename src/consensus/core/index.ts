// The deterministic Raft core: see docs/consensus.md and rawNode.ts for the host loop.

export {
  applyChangeToSets,
  type ConfChangeLeader,
  confChangeValid,
  leaderAfterConfChange,
  parseConfChange,
  refuseConfChanges,
  replayConfChanges,
  switchConfig,
  withConfChange,
} from './confChange.ts';
export { entriesSize, entrySize, limitSize, readWithinSize } from './entrySize.ts';
export { Inflights } from './inflights.ts';
export {
  bootstrapSnapshot,
  MemoryStorage,
  SnapshotOutOfDateError,
  StorageCompactedError,
} from './memoryStorage.ts';
export { Progress, type ProgressState } from './progress.ts';
export { committedIndex, majority, type VoteResult, voteResult } from './quorum.ts';
export {
  CAMPAIGN_TRANSFER,
  DEFAULT_MAX_INFLIGHT_MSGS,
  DEFAULT_MAX_SIZE_PER_MSG,
  Raft,
} from './raft.ts';
export { RaftLog } from './raftLog.ts';
export { RaftCore, type RaftFactory } from './rawNode.ts';
export { type ReadIndexStatus, ReadOnly } from './readOnly.ts';
export { Unstable } from './unstable.ts';
