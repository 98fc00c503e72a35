// The rules every RaftLogStore applies, shared by the LevelDB store and the in-memory one so both
// have exactly the same semantics. A plan is computed (and every invariant checked) before anything
// is written: a broken invariant throws `LogStoreInvariantError` and leaves the store untouched.

import type { Entry, HardState, Index, Snapshot, Term } from './types.ts';

export class LogStoreInvariantError extends Error {
  override readonly name = 'LogStoreInvariantError';
}

export const EMPTY_HARD_STATE: HardState = Object.freeze({ term: 0, vote: null, commit: 0 }) as HardState;

/** What a store keeps in memory about its log: the bounds, never the entries themselves. */
export interface LogBounds {
  snapshotIndex: Index;
  snapshotTerm: Term;
  /** Index of the last entry, or `snapshotIndex` when no entry follows the snapshot. */
  lastIndex: Index;
  hardState: HardState;
}

export const EMPTY_BOUNDS: LogBounds = Object.freeze({
  snapshotIndex: 0,
  snapshotTerm: 0,
  lastIndex: 0,
  hardState: EMPTY_HARD_STATE,
});

/** Entries are stored in [snapshotIndex + 1, lastIndex]. */
export function firstIndexOf(bounds: LogBounds): Index {
  return bounds.snapshotIndex + 1;
}

export interface SaveUpdate {
  hardState?: HardState;
  entries?: Entry[];
  snapshot?: Snapshot;
}

/** A closed range of stored entry indexes to delete. */
export interface IndexRange {
  from: Index;
  to: Index;
}

export interface SavePlan {
  /** Ranges of currently stored entries to delete (every range non-empty). */
  deletes: IndexRange[];
  /** Entries to write (after the deletes), contiguous. */
  puts: Entry[];
  snapshot?: Snapshot;
  hardState?: HardState;
  next: LogBounds;
}

function fail(message: string): never {
  throw new LogStoreInvariantError(message);
}

function isCount(n: unknown): n is number {
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0;
}

export function checkHardState(hs: HardState): void {
  if (!isCount(hs.term) || !isCount(hs.commit)) fail(`malformed hard state ${JSON.stringify(hs)}`);
  if (hs.vote !== null && (typeof hs.vote !== 'string' || hs.vote.length === 0)) {
    fail(`malformed vote in hard state ${JSON.stringify(hs)}`);
  }
}

export function checkSnapshot(snap: Snapshot): void {
  const m = snap.metadata;
  if (!m || !isCount(m.index) || !isCount(m.term) || m.index < 1 || m.term < 1) {
    fail(`malformed snapshot metadata ${JSON.stringify(m)}`);
  }
  if (!m.confState || !Array.isArray(m.confState.voters) || !Array.isArray(m.confState.learners)) {
    fail(`snapshot ${m.index} has no confState`);
  }
  if (typeof snap.data !== 'string') fail(`snapshot ${m.index} data is not a string`);
}

/** Checks a run of entries: well-formed, contiguous, terms never decreasing (Raft log property). */
export function checkEntryRun(entries: Entry[], what: string): void {
  let prev: Entry | undefined;
  for (const e of entries) {
    if (!isCount(e.index) || !isCount(e.term) || e.index < 1 || e.term < 1) {
      fail(`${what}: malformed entry ${JSON.stringify({ index: e.index, term: e.term })}`);
    }
    if (e.type !== 'normal' && e.type !== 'confChange') fail(`${what}: entry ${e.index} has type ${e.type}`);
    if (typeof e.data !== 'string') fail(`${what}: entry ${e.index} data is not a string`);
    if (prev) {
      if (e.index !== prev.index + 1) fail(`${what}: gap between entries ${prev.index} and ${e.index}`);
      if (e.term < prev.term) fail(`${what}: term goes down from ${prev.term} to ${e.term} at ${e.index}`);
    }
    prev = e;
  }
}

/** Hard-state transitions Raft allows: term never decreases, one vote per term, commit never decreases. */
function checkHardStateTransition(prev: HardState, next: HardState, lastIndex: Index): void {
  checkHardState(next);
  if (next.term < prev.term) fail(`hard state term goes down from ${prev.term} to ${next.term}`);
  if (next.term === prev.term && prev.vote !== null && next.vote !== prev.vote) {
    fail(`vote changes within term ${next.term} from ${prev.vote} to ${next.vote}`);
  }
  if (next.commit < prev.commit) fail(`commit goes down from ${prev.commit} to ${next.commit}`);
  if (next.commit > lastIndex) fail(`commit ${next.commit} is beyond the last index ${lastIndex}`);
}

/**
 * Plans one save. `termAtSnapshotIndex` is the term of the stored entry at the index of
 * `update.snapshot` (undefined if no such entry is stored): the caller reads it beforehand so that
 * the plan itself needs no I/O.
 */
export function planSave(
  bounds: LogBounds,
  update: SaveUpdate,
  termAtSnapshotIndex: Term | undefined,
): SavePlan {
  const deletes: IndexRange[] = [];
  let { snapshotIndex, snapshotTerm, lastIndex } = bounds;
  let first = firstIndexOf(bounds);

  if (update.snapshot) {
    checkSnapshot(update.snapshot);
    const { index, term } = update.snapshot.metadata;
    if (index <= snapshotIndex) fail(`snapshot ${index} is not beyond the stored snapshot ${snapshotIndex}`);
    // Later entries are kept only if our log agrees with the snapshot at its index; otherwise they
    // come from a diverging history and the whole log is replaced by the snapshot.
    const keepLater = index < lastIndex && termAtSnapshotIndex === term;
    const dropTo = keepLater ? index : lastIndex;
    if (dropTo >= first) deletes.push({ from: first, to: dropTo });
    snapshotIndex = index;
    snapshotTerm = term;
    lastIndex = keepLater ? lastIndex : index;
    first = index + 1;
  }

  const entries = update.entries ?? [];
  if (entries.length > 0) {
    checkEntryRun(entries, 'save');
    const newFirst = entries[0]!.index;
    const newLast = entries[entries.length - 1]!.index;
    if (newFirst < first) fail(`entry ${newFirst} is at or below the snapshot index ${first - 1}`);
    if (newFirst > lastIndex + 1) fail(`entry ${newFirst} leaves a gap after the last index ${lastIndex}`);
    if (newFirst === first && entries[0]!.term < snapshotTerm) {
      fail(`entry ${newFirst} term ${entries[0]!.term} is below the snapshot term ${snapshotTerm}`);
    }
    if (newFirst <= lastIndex && newFirst <= bounds.hardState.commit) {
      fail(`entry ${newFirst} would replace a committed entry (commit ${bounds.hardState.commit})`);
    }
    // Keys [newFirst, newLast] are overwritten by the puts; only the stale tail beyond them goes.
    if (lastIndex > newLast) deletes.push({ from: newLast + 1, to: lastIndex });
    lastIndex = newLast;
  }

  if (update.hardState) checkHardStateTransition(bounds.hardState, update.hardState, lastIndex);
  else if (bounds.hardState.commit > lastIndex) {
    fail(`save would drop committed entries: commit ${bounds.hardState.commit}, last index ${lastIndex}`);
  }

  return {
    deletes,
    puts: entries,
    ...(update.snapshot ? { snapshot: update.snapshot } : {}),
    ...(update.hardState ? { hardState: update.hardState } : {}),
    next: { snapshotIndex, snapshotTerm, lastIndex, hardState: update.hardState ?? bounds.hardState },
  };
}

/**
 * Plans a compaction by a locally taken snapshot: it must advance, lie within the log and the
 * committed prefix, and agree with the stored entry at its index.
 */
export function planCompact(bounds: LogBounds, snapshot: Snapshot, termAtIndex: Term | undefined): SavePlan {
  checkSnapshot(snapshot);
  const { index, term } = snapshot.metadata;
  if (index <= bounds.snapshotIndex) {
    fail(`compact: snapshot ${index} is not beyond the stored snapshot ${bounds.snapshotIndex}`);
  }
  if (index > bounds.lastIndex)
    fail(`compact: snapshot ${index} is beyond the last index ${bounds.lastIndex}`);
  if (index > bounds.hardState.commit) {
    fail(`compact: snapshot ${index} is beyond the commit index ${bounds.hardState.commit}`);
  }
  if (termAtIndex !== term)
    fail(`compact: snapshot term ${term} differs from entry ${index} term ${termAtIndex}`);
  return {
    deletes: [{ from: firstIndexOf(bounds), to: index }],
    puts: [],
    snapshot,
    next: { ...bounds, snapshotIndex: index, snapshotTerm: term },
  };
}

/** Checks what a store read back on load, so a damaged log is refused rather than replayed. */
export function checkLoaded(hardState: HardState, snapshot: Snapshot | null, entries: Entry[]): void {
  checkHardState(hardState);
  if (snapshot) checkSnapshot(snapshot);
  checkEntryRun(entries, 'load');
  const snapshotIndex = snapshot?.metadata.index ?? 0;
  const first = entries[0];
  if (first && first.index !== snapshotIndex + 1) {
    fail(`load: first entry ${first.index} does not follow the snapshot index ${snapshotIndex}`);
  }
  if (first && snapshot && first.term < snapshot.metadata.term) {
    fail(
      `load: entry ${first.index} term ${first.term} is below the snapshot term ${snapshot.metadata.term}`,
    );
  }
  const lastIndex = entries.at(-1)?.index ?? snapshotIndex;
  if (hardState.commit > lastIndex)
    fail(`load: commit ${hardState.commit} is beyond the last index ${lastIndex}`);
}
