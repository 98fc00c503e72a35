// Durable Raft log on classic-level (LevelDB). Keys are binary so they sort in index order:
//   'e' + 8-byte big-endian index -> JSON Entry
//   'h'                           -> JSON HardState
//   'm'                           -> JSON SnapshotMetadata
//   's'                           -> snapshot data
// Every save/compact is one `batch(..., { sync: true })`, so a crash leaves either all of it or
// none of it on disk. Only the log's bounds live in memory, never the entries; entriesSync reads
// them back one by one for a leader that keeps its log behind a snapshot file on disk only.

import { ClassicLevel } from 'classic-level';
import type { RaftLogStore } from './api.ts';
import { readWithinSize } from './core/index.ts';
import {
  checkHardState,
  checkLoaded,
  EMPTY_BOUNDS,
  firstIndexOf,
  type LogBounds,
  LogStoreInvariantError,
  planCompact,
  planSave,
  type SavePlan,
  type SaveUpdate,
} from './logStoreRules.ts';
import type { Entry, HardState, Index, Snapshot, SnapshotMetadata, Term } from './types.ts';

const ENTRY_PREFIX = 0x65; // 'e'
const HARD_STATE_KEY = Buffer.from('h');
const SNAPSHOT_META_KEY = Buffer.from('m');
const SNAPSHOT_DATA_KEY = Buffer.from('s');
const MIN_ENTRY_KEY = entryKey(0);
const MAX_ENTRY_KEY = entryKey(Number.MAX_SAFE_INTEGER);

type Db = ClassicLevel<Buffer, string>;
type BatchOp = { type: 'put'; key: Buffer; value: string } | { type: 'del'; key: Buffer };

export function entryKey(index: Index): Buffer {
  const key = Buffer.alloc(9);
  key[0] = ENTRY_PREFIX;
  key.writeBigUInt64BE(BigInt(index), 1);
  return key;
}

function indexOfKey(key: Buffer): Index {
  if (key.length !== 9 || key[0] !== ENTRY_PREFIX) throw new LogStoreInvariantError('not an entry key');
  return Number(key.readBigUInt64BE(1));
}

export class LevelLogStore implements RaftLogStore {
  /** Serialises writes so the in-memory bounds always describe what the last batch wrote. */
  private queue: Promise<unknown> = Promise.resolve();
  /** Operations started or waiting in `queue` and not yet settled. */
  private queued = 0;
  /** Set once a write fails: what is on disk is then unknown, so the store refuses further use. */
  private broken: Error | null = null;

  private constructor(
    private readonly db: Db,
    private bounds: LogBounds,
  ) {}

  /** Opens (creating if needed) the log in `folder` and reads its bounds. */
  static async open(folder: string): Promise<LevelLogStore> {
    const db: Db = new ClassicLevel<Buffer, string>(folder, { keyEncoding: 'buffer', valueEncoding: 'utf8' });
    await db.open();
    try {
      return new LevelLogStore(db, await readBounds(db));
    } catch (err) {
      await db.close();
      throw err;
    }
  }

  async load(): Promise<{ hardState: HardState; snapshot: Snapshot | null; entries: Entry[] }> {
    return this.serialised(async () => {
      const hardState = await readHardState(this.db);
      const meta = await readSnapshotMeta(this.db);
      let snapshot: Snapshot | null = null;
      if (meta) {
        const data = await this.db.get(SNAPSHOT_DATA_KEY);
        if (data === undefined) throw new LogStoreInvariantError(`snapshot ${meta.index} has no data`);
        snapshot = { metadata: meta, data };
      }
      const entries: Entry[] = [];
      for await (const [key, value] of this.db.iterator({ gte: MIN_ENTRY_KEY, lte: MAX_ENTRY_KEY })) {
        const entry = JSON.parse(value) as Entry;
        if (entry.index !== indexOfKey(key)) {
          throw new LogStoreInvariantError(`entry stored under index ${indexOfKey(key)} says ${entry.index}`);
        }
        entries.push(entry);
      }
      checkLoaded(hardState, snapshot, entries);
      return { hardState, snapshot, entries };
    });
  }

  async save(update: SaveUpdate): Promise<void> {
    return this.serialised(async () => {
      const snapIndex = update.snapshot?.metadata.index;
      const term = snapIndex === undefined ? undefined : await this.termAt(snapIndex);
      await this.write(planSave(this.bounds, update, term));
    });
  }

  async compact(snapshot: Snapshot): Promise<void> {
    return this.serialised(async () => {
      const term = await this.termAt(snapshot.metadata.index);
      await this.write(planCompact(this.bounds, snapshot, term));
    });
  }

  async close(): Promise<void> {
    await this.queue.catch(() => {});
    await this.db.close();
  }

  firstIndex(): Index {
    return firstIndexOf(this.bounds);
  }

  lastIndex(): Index {
    return this.bounds.lastIndex;
  }

  /** Point reads of the stored log (classic-level's getSync): see RaftLogStore.entriesSync. */
  entriesSync(lo: Index, hi: Index, maxSize: number): Entry[] {
    return readWithinSize(lo, hi, maxSize, (i) => this.entrySync(i));
  }

  termSync(index: Index): Term {
    return this.entrySync(index).term;
  }

  private entrySync(index: Index): Entry {
    const value = this.db.getSync(entryKey(index));
    if (value === undefined) throw new LogStoreInvariantError(`entry ${index} is not in the store`);
    return JSON.parse(value) as Entry;
  }

  private async termAt(index: Index): Promise<Term | undefined> {
    if (index < firstIndexOf(this.bounds) || index > this.bounds.lastIndex) return undefined;
    const value = await this.db.get(entryKey(index));
    return value === undefined ? undefined : (JSON.parse(value) as Entry).term;
  }

  private async write(plan: SavePlan): Promise<void> {
    const ops: BatchOp[] = [];
    if (plan.snapshot) {
      ops.push({ type: 'put', key: SNAPSHOT_META_KEY, value: JSON.stringify(plan.snapshot.metadata) });
      ops.push({ type: 'put', key: SNAPSHOT_DATA_KEY, value: plan.snapshot.data });
    }
    for (const { from, to } of plan.deletes) {
      for (let i = from; i <= to; i++) ops.push({ type: 'del', key: entryKey(i) });
    }
    for (const e of plan.puts) {
      const value = JSON.stringify({ term: e.term, index: e.index, type: e.type, data: e.data });
      ops.push({ type: 'put', key: entryKey(e.index), value });
    }
    if (plan.hardState) {
      const { term, vote, commit } = plan.hardState;
      ops.push({ type: 'put', key: HARD_STATE_KEY, value: JSON.stringify({ term, vote, commit }) });
    }
    if (ops.length === 0) return;
    try {
      await this.db.batch(ops, { sync: true });
    } catch (err) {
      this.broken = err instanceof Error ? err : new Error(String(err));
      throw err;
    }
    this.bounds = plan.next;
  }

  private serialised<T>(op: () => Promise<T>): Promise<T> {
    const run = async () => {
      if (this.broken) throw new Error(`log store unusable after a failed write: ${this.broken.message}`);
      return op();
    };
    // With nothing queued the operation starts now, not a microtask later: a leader's synced write
    // is then under way before the caller sends its appends (RaftNode.handleReady).
    const result = this.queued === 0 ? run() : this.queue.then(run, run);
    this.queued++;
    this.queue = result.then(
      () => void this.queued--,
      () => void this.queued--,
    );
    return result;
  }
}

async function readHardState(db: Db): Promise<HardState> {
  const value = await db.get(HARD_STATE_KEY);
  if (value === undefined) return { ...EMPTY_BOUNDS.hardState };
  const hs = JSON.parse(value) as HardState;
  checkHardState(hs);
  return hs;
}

async function readSnapshotMeta(db: Db): Promise<SnapshotMetadata | null> {
  const value = await db.get(SNAPSHOT_META_KEY);
  return value === undefined ? null : (JSON.parse(value) as SnapshotMetadata);
}

async function boundaryEntryIndex(db: Db, reverse: boolean): Promise<Index | undefined> {
  for await (const key of db.keys({ gte: MIN_ENTRY_KEY, lte: MAX_ENTRY_KEY, reverse, limit: 1 })) {
    return indexOfKey(key);
  }
  return undefined;
}

async function readBounds(db: Db): Promise<LogBounds> {
  const hardState = await readHardState(db);
  const meta = await readSnapshotMeta(db);
  const snapshotIndex = meta?.index ?? 0;
  const first = await boundaryEntryIndex(db, false);
  const last = await boundaryEntryIndex(db, true);
  if (first !== undefined && first !== snapshotIndex + 1) {
    throw new LogStoreInvariantError(
      `first entry ${first} does not follow the snapshot index ${snapshotIndex}`,
    );
  }
  const lastIndex = last ?? snapshotIndex;
  if (hardState.commit > lastIndex) {
    throw new LogStoreInvariantError(`commit ${hardState.commit} is beyond the last index ${lastIndex}`);
  }
  return { snapshotIndex, snapshotTerm: meta?.term ?? 0, lastIndex, hardState };
}
