import { ClassicLevel } from 'classic-level';

/** What the worker knows about one stored blob without reading its bytes. */
export interface BlobRecord {
  size: number;
  /** The record's sha256, as the manager named it: served as the etag, never recomputed here. */
  sha256: string;
  /**
   * CRC32C of the bytes (8 hex digits), computed here as they arrived and checked against the
   * sender's: what reads, the scrubber and copies check the bytes with. Absent on blobs stored
   * before it existed, which are checked with their sha256 instead.
   */
  crc32c?: string;
}

export interface BlobEntry extends BlobRecord {
  id: string;
}

/**
 * A write that was about to be renamed into place, as workers recorded it (sync) before blob files
 * carried a trailer (blobTrailer.ts). No longer written; the start-up check still finishes the ones
 * a crash of such a worker left, so a data folder of that version opens as it would have.
 */
export interface PendingWrite extends BlobRecord {
  id: string;
}

/** The stored fields of a record, without an id or anything else the value carries. */
function recordOf(r: BlobRecord): BlobRecord {
  return r.crc32c === undefined
    ? { size: r.size, sha256: r.sha256 }
    : { size: r.size, sha256: r.sha256, crc32c: r.crc32c };
}

// Key spaces. Ids never contain `!`, and `"` is the byte after `!`, so [prefix, prefix") is one space.
const BLOB = 'b!';
const PENDING = 'p!';
/**
 * The clean-stop flag workers of the previous version kept in the index; the store now keeps a
 * marker file beside it instead (BlobStore.close) and only reads and removes this one.
 */
const CLEAN_STOP = 's!clean-stop';
const upperBound = (prefix: string): string => `${prefix.slice(0, -1)}"`;

type Db = ClassicLevel<string, BlobRecord>;

/**
 * `{ id -> size, sha256, crc32c }` in LevelDB (classic-level) under `<dataDir>/index`. LevelDB's LOCK file also
 * guarantees one process per data folder. Every mutation is written with `sync: true` except a `put`
 * the caller asks otherwise: BlobStore's commit, whose blob file's trailer makes the entry
 * recoverable (see BlobStore). An index that ran ahead of, or lagged behind, the disk is repaired by
 * the start-up check in BlobStore.
 */
export class BlobIndex {
  private constructor(private readonly db: Db) {}

  static async open(location: string): Promise<BlobIndex> {
    const db: Db = new ClassicLevel<string, BlobRecord>(location, {
      keyEncoding: 'utf8',
      valueEncoding: 'json',
    });
    await db.open();
    return new BlobIndex(db);
  }

  async get(id: string): Promise<BlobRecord | undefined> {
    return this.getSync(id);
  }

  /**
   * The same lookup, on the calling thread. LevelDB answers from its memtable and caches in
   * microseconds, where a threadpool round trip costs ~60 µs of CPU on a busy 2-core machine.
   * Sees every write whose promise has resolved.
   */
  getSync(id: string): BlobRecord | undefined {
    const value = this.db.getSync(BLOB + id);
    return value === undefined ? undefined : recordOf(value);
  }

  /**
   * Records a blob and clears any pending-write marker of it in one batch, synced unless `sync: false`.
   * Unsynced, the batch still reaches the OS at once (it survives kill -9) and becomes durable with
   * the next synced write; only a power loss before then can drop it, and then the blob file's
   * trailer lets the next start index it again (BlobStore).
   */
  async put(id: string, record: BlobRecord, options: { sync?: boolean } = {}): Promise<void> {
    await this.record([{ id, ...record }], options);
  }

  /** `put` for several blobs in one batch (a group commit). */
  async record(entries: readonly BlobEntry[], options: { sync?: boolean } = {}): Promise<void> {
    await this.db.batch(
      entries.flatMap((e) => [
        { type: 'put' as const, key: BLOB + e.id, value: recordOf(e) },
        { type: 'del' as const, key: PENDING + e.id },
      ]),
      { sync: options.sync ?? true },
    );
  }

  async delete(id: string): Promise<void> {
    await this.db.batch(
      [
        { type: 'del', key: BLOB + id },
        { type: 'del', key: PENDING + id },
      ],
      { sync: true },
    );
  }

  async deleteMany(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.batch(
      ids.map((id) => ({ type: 'del' as const, key: BLOB + id })),
      { sync: true },
    );
  }

  /**
   * Every blob in id order, read from an implicit LevelDB snapshot in small batches: memory stays
   * bounded however many entries there are. `after` resumes a listing after that id.
   */
  async *entries(options: { after?: string } = {}): AsyncGenerator<BlobEntry> {
    const gt = options.after === undefined ? BLOB : BLOB + options.after;
    for await (const [key, value] of this.db.iterator({ gt, lt: upperBound(BLOB) })) {
      yield { id: key.slice(BLOB.length), ...recordOf(value) };
    }
  }

  async markPending(write: PendingWrite): Promise<void> {
    await this.markPendingMany([write]);
  }

  /** Several markers in one synced batch: a group commit pays for one sync, not one per blob. */
  async markPendingMany(writes: readonly PendingWrite[]): Promise<void> {
    await this.db.batch(
      writes.map((w) => ({
        type: 'put' as const,
        key: PENDING + w.id,
        value: recordOf(w),
      })),
      { sync: true },
    );
  }

  async clearPending(id: string): Promise<void> {
    await this.clearPendingMany([id]);
  }

  async clearPendingMany(ids: readonly string[]): Promise<void> {
    if (ids.length === 0) return;
    await this.db.batch(
      ids.map((id) => ({ type: 'del' as const, key: PENDING + id })),
      { sync: true },
    );
  }

  /**
   * Whether a worker of the previous version left its clean-stop flag, and from now on not: the
   * flag is removed with a synced write.
   */
  async takeCleanStop(): Promise<boolean> {
    const clean = (await this.db.get(CLEAN_STOP, { valueEncoding: 'utf8' })) !== undefined;
    await this.db.del(CLEAN_STOP, { sync: true });
    return clean;
  }

  /**
   * The previous version's clean-stop flag, kept for tools and tests of such data folders. Not
   * enough on its own: entries of a log LevelDB switched away from may not be durable with it.
   */
  async markCleanStop(): Promise<void> {
    await this.db.put(CLEAN_STOP, 'clean' as unknown as BlobRecord, { sync: true });
  }

  async *pendingWrites(): AsyncGenerator<PendingWrite> {
    for await (const [key, value] of this.db.iterator({ gt: PENDING, lt: upperBound(PENDING) })) {
      yield { id: key.slice(PENDING.length), ...recordOf(value) };
    }
  }

  async close(): Promise<void> {
    await this.db.close();
  }
}
