// The one place the simulator touches the concrete Raft core (src/consensus/core): building a core
// and its MemoryStorage from a node's durable disk, mirroring persisted Readys into that storage
// (rawNode.ts host contract), compaction, membership changes, and the deliberately broken
// variants that prove the checker catches real bugs.

import type { CoreStorage, RaftConfig } from '../../src/consensus/api.ts';
import { committedIndex, MemoryStorage, Raft, RaftCore, RaftLog } from '../../src/consensus/core/index.ts';
import { Unstable } from '../../src/consensus/core/unstable.ts';
import type {
  ConfChange,
  ConfState,
  Entry,
  Index,
  Message,
  NodeId,
  RandomInt,
  Ready,
  Snapshot,
  Term,
} from '../../src/consensus/types.ts';
import type { SimDisk } from './simDisk.ts';

/** Deliberate bugs in the core, to prove the checker finds them. */
export type CoreVariant =
  | 'correct'
  | 'commitPreviousTermByCounting'
  | 'truncateMatchedEntries'
  | 'readIndexWithoutQuorum'
  | 'commitBeyondLastNewEntry'
  | 'stableToIgnoresTerm'
  | 'leaderCountsUnsyncedEntries';

export const CORE_VARIANTS: readonly CoreVariant[] = [
  'correct',
  'commitPreviousTermByCounting',
  'truncateMatchedEntries',
  'readIndexWithoutQuorum',
  'commitBeyondLastNewEntry',
  'stableToIgnoresTerm',
  'leaderCountsUnsyncedEntries',
];

export interface CoreParams {
  id: NodeId;
  disk: SimDisk;
  random: RandomInt;
  applied: number;
  electionTick: number;
  heartbeatTick: number;
  maxSizePerMsg: number;
  maxInflightMsgs: number;
  variant: CoreVariant;
}

export interface SimCore {
  node: RaftCore;
  storage: MemoryStorage;
}

/** Rebuilds the core's storage from what the durable log store loads, then a fresh core over it. */
export function createCore(params: CoreParams): SimCore {
  const loaded = params.disk.load();
  const storage = new MemoryStorage(loaded.snapshot ?? undefined);
  storage.setHardState(loaded.hardState);
  storage.append(loaded.entries);
  const config: RaftConfig = {
    id: params.id,
    storage,
    electionTick: params.electionTick,
    heartbeatTick: params.heartbeatTick,
    random: params.random,
    applied: params.applied,
    maxSizePerMsg: params.maxSizePerMsg,
    maxInflightMsgs: params.maxInflightMsgs,
    preVote: true,
    checkQuorum: true,
  };
  const node = new RaftCore(config, raftFactory(params.variant));
  return { node, storage };
}

function raftFactory(variant: CoreVariant): (config: RaftConfig) => Raft {
  switch (variant) {
    case 'correct':
      return (c) => new Raft(c);
    case 'commitPreviousTermByCounting':
      return (c) => new CommitsByCountingRaft(c);
    case 'truncateMatchedEntries':
      return (c) => new TruncatingFollowerRaft(c);
    case 'readIndexWithoutQuorum':
      return (c) => new UnconfirmedReadRaft(c);
    case 'commitBeyondLastNewEntry':
      return (c) => new OvercommittingFollowerRaft(c);
    case 'stableToIgnoresTerm':
      return (c) => new CarelessStableRaft(c);
    case 'leaderCountsUnsyncedEntries':
      return (c) => new SelfCountingRaft(c);
  }
}

/** The host persisted `ready`: the core's storage must now hold exactly what is on disk. */
export function appendToStorage(core: SimCore, ready: Ready): void {
  if (ready.snapshot) core.storage.applySnapshot(ready.snapshot);
  core.storage.append(ready.entries);
  if (ready.hardState) core.storage.setHardState(ready.hardState);
}

export function compactStorage(core: SimCore, snapshot: Snapshot): void {
  const { index, confState } = snapshot.metadata;
  core.storage.createSnapshot(index, confState, snapshot.data);
  core.storage.compact(index);
}

export function applyConfChange(core: SimCore, change: ConfChange): ConfState {
  return core.node.applyConfChange(change);
}

// --- Broken variants -----------------------------------------------------------------------------

/**
 * The leader counts its own entries toward a commit as soon as it appends them, while its appends
 * (and the commit index they carry) leave before its write is durable: a crash of the leader can
 * then forget an entry a follower or learner already applied.
 */
class SelfCountingRaft extends Raft {
  override proposeEntries(entries: Entry[]) {
    const err = super.proposeEntries(entries);
    if (err === null && this.role === 'leader') {
      this.prs.get(this.id)?.maybeUpdate(this.raftLog.lastIndex());
      if (this.maybeCommit()) this.bcastAppend();
    }
    return err;
  }
}

/**
 * Bug (a), Raft paper 5.4.2 / figure 8: the leader commits the highest index stored on a majority
 * even when that entry is from an earlier term.
 */
class CommitsByCountingRaft extends Raft {
  protected override maybeCommit(): boolean {
    const mci = committedIndex(this.voters, (id) => this.prs.get(id)?.match);
    if (!Number.isFinite(mci) || mci <= this.raftLog.committed) return false;
    this.raftLog.commitTo(mci);
    return true;
  }
}

/**
 * Bug (c): the follower replaces its log after the MsgApp's previous entry with the message's
 * entries even when they all match, so a stale (reordered or duplicated) MsgApp cuts off entries
 * it already acknowledged and the leader may have counted towards a commit.
 */
class TruncatingFollowerRaft extends Raft {
  protected override createLog(storage: CoreStorage): RaftLog {
    return new TruncatingRaftLog(storage);
  }
}

class TruncatingRaftLog extends RaftLog {
  override maybeAppend(index: Index, logTerm: Term, committed: Index, ents: Entry[]): Index | undefined {
    if (!this.matchTerm(index, logTerm)) return undefined;
    const lastNew = index + ents.length;
    if (ents.length > 0) this.unstable.truncateAndAppend(ents);
    this.commitTo(Math.min(committed, lastNew));
    return lastNew;
  }
}

/**
 * Bug (e), etcd TestLogMaybeAppend: the follower takes the leader's commit index as is instead of
 * capping it at the last entry the MsgApp vouched for, so a stale tail of an old term beyond that
 * entry (not yet overwritten by the leader) becomes committed and is applied.
 */
class OvercommittingFollowerRaft extends Raft {
  protected override createLog(storage: CoreStorage): RaftLog {
    return new OvercommittingRaftLog(storage);
  }
}

export class OvercommittingRaftLog extends RaftLog {
  override maybeAppend(index: Index, logTerm: Term, committed: Index, ents: Entry[]): Index | undefined {
    const lastNew = super.maybeAppend(index, logTerm, committed, ents);
    if (lastNew !== undefined) this.commitTo(Math.min(committed, this.lastIndex()));
    return lastNew;
  }
}

/**
 * Bug (f), etcd log_unstable.go stableTo: advance() marks entries stable by index alone, so
 * entries a new leader replaced while their Ready was being persisted are taken as durable and
 * never handed to the host: the log on disk keeps the old term's entries the node acknowledged as
 * the new ones.
 */
class CarelessStableRaft extends Raft {
  protected override createLog(storage: CoreStorage): RaftLog {
    const log = new RaftLog(storage);
    const careless = new CarelessUnstable(log.unstable.offset);
    (log as { unstable: Unstable }).unstable = careless;
    return log;
  }
}

export class CarelessUnstable extends Unstable {
  override stableTo(i: Index, _t: Term): void {
    if (i < this.offset || i >= this.offset + this.entries.length) return;
    this.entries = this.entries.slice(i + 1 - this.offset);
    this.offset = i + 1;
  }
}

/**
 * Bug (d), thesis 6.4: a leader answers ReadIndex with its commit index without a heartbeat round
 * confirming it still leads, so a deposed leader that has not heard of its successor serves stale
 * reads.
 */
export class UnconfirmedReadRaft extends Raft {
  /** Whether this leader answers a ReadIndex now, from its commit index (this bug: always). */
  protected answersReadAtOnce(): boolean {
    return true;
  }

  override step(m: Message): void {
    if (m.type !== 'MsgReadIndex' || this.role !== 'leader' || !this.answersReadAtOnce()) {
      super.step(m);
      return;
    }
    const index = this.raftLog.committed;
    const context = m.context ?? '';
    if (m.from === this.id) this.readStates.push({ index, context });
    else
      this.msgs.push({
        type: 'MsgReadIndexResp',
        from: this.id,
        to: m.from,
        term: this.term,
        index,
        context,
      });
  }
}
