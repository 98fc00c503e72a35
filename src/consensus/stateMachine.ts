// The contract between the Raft node driver and the replicated state machine it applies into.

import type { Entry, Index } from './types.ts';

/** What applying one committed entry produced, for the proposer waiting on it. */
export interface AppliedResult {
  index: Index;
  /** The request id the command carried (how the driver finds the waiting proposal), or null. */
  requestId: string | null;
  result: unknown;
}

/**
 * A deterministic state machine. The driver calls it from its single Ready loop only, always with
 * entries in log order; the one overlap is a snapshot finishing while later entries are applied.
 *
 * Invariant: `appliedIndex()` only moves forward, and is recorded atomically with the changes it
 * covers, so after a restart the driver skips every entry at or below it and never applies one twice.
 */
export interface StateMachine {
  /**
   * The last index applied (0 when empty): every read of the state called from now on sees its
   * effect, though its write may still be running (see `flush`). After a restart, the last index
   * whose effect was recorded.
   */
  appliedIndex(): Index;
  /**
   * Apply committed entries, all above `appliedIndex()` and consecutive. Every entry advances the
   * applied index, including the leader's empty no-op and conf-change entries, which change no table.
   * Returns one result per `normal` entry carrying a command. Must not throw on a command that
   * passed validation before it was proposed; a malformed one is recorded as an error result.
   */
  apply(entries: Entry[]): Promise<AppliedResult[]>;
  /**
   * Serialise the whole state as of `appliedIndex()` at the moment of the call: the state must be
   * captured synchronously, before the call returns (a LevelDB snapshot, a copy), because the
   * driver goes on applying entries, and may install a snapshot from the leader, while the returned
   * promise settles. A large state is serialised off the Ready loop that way.
   */
  snapshot(): Promise<string>;
  /**
   * Waits until everything applied so far is written, for a state machine whose `apply` returns
   * before its write ends (the metadata tables: MetadataStateMachine.apply). The driver calls it
   * before `snapshot`, which must capture exactly `appliedIndex()` at the call.
   */
  flush?(): Promise<void>;
  /**
   * For such a state machine: `onFailure` is called once when a write that `apply` returned before
   * fails (at once if one already did). The driver stops on it as if `apply` had thrown: a failed
   * write would otherwise surface only at the next apply, which an idle leader may never get.
   */
  onWriteFailure?(onFailure: (err: unknown) => void): void;
  /** Replace the whole state with a snapshot's, taken at `index`. */
  restore(data: string, index: Index): Promise<void>;
  /**
   * The streamed form of `snapshot`, for a state too large for one string: the state is captured
   * before the call returns, as there, and handed out as chunks of bounded size; the caller
   * iterates it to its end (which releases what the capture holds). Without it, the driver wraps
   * `snapshot` (src/consensus/snapshots.ts). `transient`: the caller is done with each chunk before
   * it asks for the next, so the same buffer may be handed out each time, written over.
   */
  snapshotChunks?(opts?: { transient?: boolean }): AsyncIterable<Uint8Array>;
  /**
   * The streamed form of `restore`: consumes `chunks` (what `snapshotChunks` wrote) and makes the new
   * state live only after the whole stream was read and checked. When `chunks` throws (a digest
   * the driver checks at the end of the file, a read error), the old state stays as it was.
   */
  restoreChunks?(chunks: AsyncIterable<Uint8Array>, index: Index): Promise<void>;
  /**
   * Makes every change applied so far durable (a synced write) and returns the applied index that
   * covers, or null when this state machine does not keep its state durably in order. When it does,
   * the driver compacts its log without writing the state to a snapshot file (raftNode.ts,
   * maybeSnapshot): the state machine is then the only copy of the compacted entries, so it must
   * never lose or tear a write once this returned (and never after an unclean stop either).
   */
  syncApplied?(): Promise<Index | null>;
  close(): Promise<void>;
}

/** `snapshot`'s one string as the single chunk of a `snapshotChunks` stream. */
export async function* snapshotAsChunks(state: Promise<string>): AsyncGenerator<Uint8Array> {
  yield Buffer.from(await state, 'utf8');
}
