// The metadata tables on disk: one LevelDB (classic-level) folder, one string keyspace.
//
// Layout (every value is JSON written by the codecs below, fields in a fixed order, so the bytes
// are a pure function of the state and two replicas can be compared byte for byte):
//
//   meta/applied                          -> last applied log index (decimal)
//   meta/generation                       -> the generation holding the live tables (decimal)
//   data/<gen:12>/o/<objectId>            -> objects:   ObjectRecord
//   data/<gen:12>/n/<nodeId>              -> nodes:     NodeRecord
//   data/<gen:12>/x/<nodeId>/<objectId>   -> nodeIndex: {}   ("what does this node hold" is a range scan)
//   data/<gen:12>/c/total                 -> counters:  { objects, bytes } over all objects
//   data/<gen:12>/c/node/<nodeId>         -> counters:  { objects, bytes } of the replicas on that node
//   data/<gen:12>/c/names                 -> counters:  { objects: names, bytes: their sizes summed }
//   data/<gen:12>/c/content               -> counters:  { objects, bytes } of the objects names point at
//   data/<gen:12>/k/<bucket>/<key>        -> names:     NameRecord
//   data/<gen:12>/r/<objectId>            -> refs:      { names } naming that object (no row: none)
//   data/<gen:12>/h/<sha256>              -> content:   the object id named content with that sha256 is in
//   data/<gen:12>/b/<bucket>              -> buckets:   { createdAt } of a created bucket
//   data/<gen:12>/s/<accessKeyId>         -> s3keys:    S3KeyRecord (the secret in clear: docs/s3.md)
//   data/<gen:12>/d/<nodeId>              -> removedNodes: RemovedNodeRecord of a worker removed for good
//
// `/` is not in the id alphabet, so `<nodeId>/` is a prefix of exactly that node's index keys; nor
// in the bucket alphabet, so `<bucket>/` is a prefix of exactly that bucket's names.
//
// Why generations: restoring a snapshot writes the new tables under generation g+1 in many
// batches, then flips meta/generation and meta/applied in one synced batch, then clears
// generation g. A crash before the flip leaves generation g live and g+1 half written; a crash
// after it leaves g behind. Either way `open` finds one live generation and clears every other, so
// a restore is all or nothing without holding a whole snapshot in one LevelDB batch.

import { createHash, type Hash } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import { ClassicLevel } from 'classic-level';
import { z } from 'zod';
import { WrittenBatches } from './batchMemory.ts';
import type { NameRecord, NodeRecord, ObjectRecord, RemovedNodeRecord, S3KeyRecord } from './commands.ts';
import { headerLine, parseHeader, parseLine, splitLineBatches, trailerLine } from './snapshotStream.ts';

// Newer tables come last: a state without their rows digests as it did before they existed.
export const TABLES = [
  'objects',
  'nodes',
  'nodeIndex',
  'counters',
  'names',
  'refs',
  'content',
  'buckets',
  's3keys',
  'removedNodes',
] as const;
export type Table = (typeof TABLES)[number];
const TABLE_TAG: Record<Table, string> = {
  objects: 'o',
  nodes: 'n',
  nodeIndex: 'x',
  counters: 'c',
  names: 'k',
  refs: 'r',
  content: 'h',
  buckets: 'b',
  s3keys: 's',
  removedNodes: 'd',
};

const META_APPLIED = 'meta/applied';
const META_GENERATION = 'meta/generation';
/**
 * Present while every table write is fsynced (`syncWrites`): the batches of `write`, of a
 * restore's new generation and the deletes clearing a generation that is not live. The tables are
 * then never torn (each batch is durable before the next is written, and LevelDB drops only a
 * torn last record), so an unclean stop need not rebuild them (metadataStateMachine.ts).
 *
 * Every batch must be synced itself: a synced write fsyncs only LevelDB's current log file.
 * LevelDB closes the previous log at a memtable switch without an fsync, so an unsynced batch
 * written before the switch may be lost in a power cut while a synced one written after it is
 * kept (it is durable only once that memtable reached a table file, which nothing waits for).
 */
const META_SYNCED_WRITES = 'meta/synced-writes';
/** Written by `syncApplied`, synced: it orders that call after every write completed before it. */
const META_SYNCED = 'meta/synced';
const DATA_ROOT = 'data/';
const SNAPSHOT_FORMAT = 'imgvault.metadata/1';
/** The streamed form (`snapshotChunks`): a header line, one line per row, a trailer line. */
export const STREAM_FORMAT = 'imgvault.metadata/2';
/** Bytes a streamed snapshot gathers before it hands out a chunk. */
const STREAM_CHUNK_BYTES = 1024 * 1024;
/** Longest line a streamed snapshot may hold: rows are far smaller (keys <= 1 KiB, small JSON values). */
const MAX_STREAM_LINE_BYTES = 4 * 1024 * 1024;
/**
 * Rows, and bytes, one `scan` read hands over at most. A page of 1,000 objects (about 250 KiB)
 * then comes back in one read: with classic-level's default (16 KiB a read) it took some twenty
 * thread-pool round trips, each waiting its turn of the event loop behind whatever else the
 * manager was doing (docs/operations.md, "Listing at scale"). `range` keeps the default: it stops
 * at the end of a prefix, and a large read would fetch rows past it for nothing.
 */
const READ_BATCH_ROWS = 1024;
const READ_BATCH_BYTES = 1024 * 1024;
/** Deletes per LevelDB batch while a generation that is not live is cleared. */
const RESTORE_BATCH_OPS = 1000;
/**
 * Bytes of rows per LevelDB batch while a restore writes the new generation: each batch is one
 * fsync with synced writes, and at 1,000 rows a batch the fsyncs of ten million images' rows
 * (30 million) took longer than everything else the install did.
 */
const RESTORE_BATCH_BYTES = 4 * 1024 * 1024;
/**
 * Bytes of rows a restore writes between two full garbage collections, which release the written
 * batches' native copies (batchMemory.ts): each costs tens of milliseconds, about a hundred of them
 * at ten million images.
 */
const RESTORE_RELEASE_BYTES = 32 * 1024 * 1024;

export type TableOp =
  | { type: 'put'; table: Table; key: string; value: string }
  | { type: 'del'; table: Table; key: string };

export const TOTAL_COUNTER = 'total';
export const nodeCounterKey = (nodeId: string): string => `node/${nodeId}`;
export const NODE_COUNTER_PREFIX = 'node/';
export const nodeIndexKey = (nodeId: string, objectId: string): string => `${nodeId}/${objectId}`;
export const nodeIndexPrefix = (nodeId: string): string => `${nodeId}/`;
export const NAMES_COUNTER = 'names';
export const CONTENT_COUNTER = 'content';
export const nameKey = (bucket: string, key: string): string => `${bucket}/${key}`;
export const bucketPrefix = (bucket: string): string => `${bucket}/`;

function generationPrefix(gen: number): string {
  return `${DATA_ROOT}${String(gen).padStart(12, '0')}/`;
}

function tablePrefix(gen: number, table: Table): string {
  return `${generationPrefix(gen)}${TABLE_TAG[table]}/`;
}

/**
 * The least string greater than every string that starts with `prefix`, when its last character is
 * ASCII (name keys are not: `TablesView.range` bounds those by a prefix check instead).
 */
export function prefixEnd(prefix: string): string {
  return prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1);
}

// ---- Codecs: fixed field order, so equal records are equal bytes -----------------------------

export interface Counter {
  objects: number;
  bytes: number;
}

export function encodeObject(r: ObjectRecord): string {
  return JSON.stringify({
    size: r.size,
    sha256: r.sha256,
    contentType: r.contentType,
    createdAt: r.createdAt,
    replicas: r.replicas,
    // Last and only when set: a record without one encodes to the same bytes as before it existed.
    ...(r.crc32c === undefined ? {} : { crc32c: r.crc32c }),
  });
}

export function encodeNode(r: NodeRecord): string {
  return JSON.stringify({
    url: r.url,
    zone: r.zone,
    state: r.state,
    stateSince: r.stateSince,
    lastSeen: r.lastSeen,
    diskUsed: r.diskUsed,
    diskFree: r.diskFree,
    objectCount: r.objectCount,
  });
}

export function encodeCounter(c: Counter): string {
  return JSON.stringify({ objects: c.objects, bytes: c.bytes });
}

export function encodeName(r: NameRecord): string {
  return JSON.stringify({
    objectId: r.objectId,
    size: r.size,
    sha256: r.sha256,
    contentType: r.contentType,
    mtime: r.mtime,
    updatedAt: r.updatedAt,
    // Absent, not null, when there is none: older records keep their exact bytes.
    ...(r.etag !== undefined ? { etag: r.etag } : {}),
  });
}

export const encodeBucket = (createdAt: number): string => JSON.stringify({ createdAt });

export function encodeS3Key(r: S3KeyRecord): string {
  return JSON.stringify({ secretAccessKey: r.secretAccessKey, createdAt: r.createdAt });
}

export const encodeRefs = (names: number): string => JSON.stringify({ names });

export function encodeRemovedNode(r: RemovedNodeRecord): string {
  return JSON.stringify({ url: r.url, zone: r.zone, removedAt: r.removedAt });
}

export const NODE_INDEX_VALUE = '{}';

// Values are only ever written by the codecs above, so decoding trusts their shape.
export const decodeObject = (v: string): ObjectRecord => JSON.parse(v) as ObjectRecord;
export const decodeNode = (v: string): NodeRecord => JSON.parse(v) as NodeRecord;
export const decodeCounter = (v: string): Counter => JSON.parse(v) as Counter;
export const decodeName = (v: string): NameRecord => JSON.parse(v) as NameRecord;
export const decodeRefs = (v: string): number => (JSON.parse(v) as { names: number }).names;
export const decodeBucket = (v: string): number => (JSON.parse(v) as { createdAt: number }).createdAt;
export const decodeS3Key = (v: string): S3KeyRecord => JSON.parse(v) as S3KeyRecord;
export const decodeRemovedNode = (v: string): RemovedNodeRecord => JSON.parse(v) as RemovedNodeRecord;

// ---- Digest ---------------------------------------------------------------------------------

// JSON framing makes the byte stream unambiguous whatever the keys and values contain. The same
// line is a row of a streamed snapshot, so that stream's rows digest to `digest()` of the tables.
function rowLine(table: Table, key: string, value: string): string {
  return `${JSON.stringify([table, key, value])}\n`;
}

function digestRow(hash: Hash, table: Table, key: string, value: string): void {
  hash.update(rowLine(table, key, value));
}

export interface TableDigest {
  appliedIndex: number;
  /** sha256 (hex) over every row of every table, tables in TABLES order, rows in key order. */
  sha256: string;
}

const snapshotSchema = z.object({
  format: z.literal(SNAPSHOT_FORMAT),
  appliedIndex: z.number().int().nonnegative(),
  tables: z.object({
    objects: z.array(z.tuple([z.string(), z.string()])),
    nodes: z.array(z.tuple([z.string(), z.string()])),
    nodeIndex: z.array(z.tuple([z.string(), z.string()])),
    counters: z.array(z.tuple([z.string(), z.string()])),
    // Absent from snapshots cut before names existed.
    names: z.array(z.tuple([z.string(), z.string()])).default([]),
    refs: z.array(z.tuple([z.string(), z.string()])).default([]),
    content: z.array(z.tuple([z.string(), z.string()])).default([]),
    buckets: z.array(z.tuple([z.string(), z.string()])).default([]),
    s3keys: z.array(z.tuple([z.string(), z.string()])).default([]),
    removedNodes: z.array(z.tuple([z.string(), z.string()])).default([]),
  }),
  sha256: z.string(),
});

type SnapshotContent = z.infer<typeof snapshotSchema>;

function emptySnapshot(index: number): SnapshotContent {
  const tables = {
    objects: [],
    nodes: [],
    nodeIndex: [],
    counters: [],
    names: [],
    refs: [],
    content: [],
    buckets: [],
    s3keys: [],
    removedNodes: [],
  };
  return { format: SNAPSHOT_FORMAT, appliedIndex: index, tables, sha256: createHash('sha256').digest('hex') };
}

type Db = ClassicLevel<string, string>;

/**
 * LevelDB reads its table files through mmap and unmaps one only when it leaves the table cache,
 * which keeps maxOpenFiles - 10 files (leveldb db_impl.cc, env_posix.cc). Every page a read touches
 * counts in the process's RSS while its file stays mapped, and a full scan (a snapshot file's
 * build, the digest check) touches every page of every file: with the default of 1000 the mapped
 * pages grow with the table, about 1 GiB at 10 million images. 74 is LevelDB's floor: 64 files of
 * at most 2 MiB (maxFileSize), so at most 128 MiB mapped. A point read whose file left the cache
 * opens and maps it again, tens of microseconds (docs/operations.md, "Manager memory").
 */
export const TABLE_FILES_OPEN = 74;

type DbSnapshot = ReturnType<Db['snapshot']>;

/**
 * A consistent read of the tables: a LevelDB snapshot plus the generation that was live when it
 * was taken. Close it when done.
 *
 * Point reads here and in MetadataTables use getSync: LevelDB answers them from its memtable and
 * caches, far cheaper than an async get's threadpool round trip (docs/measurements.md), and a
 * repair or an upload makes a dozen such reads.
 */
export class TablesView {
  constructor(
    private readonly db: Db,
    private readonly snap: DbSnapshot,
    private readonly generation: number,
  ) {}

  async get(table: Table, key: string): Promise<string | undefined> {
    return this.db.getSync(tablePrefix(this.generation, table) + key, { snapshot: this.snap });
  }

  async getMany(table: Table, keys: string[]): Promise<(string | undefined)[]> {
    const prefix = tablePrefix(this.generation, table);
    return keys.map((k) => this.db.getSync(prefix + k, { snapshot: this.snap }));
  }

  async appliedIndex(): Promise<number> {
    return Number(this.db.getSync(META_APPLIED, { snapshot: this.snap }) ?? '0');
  }

  /**
   * Rows of `table` in key order, keys relative to the table. `prefix` restricts to keys starting
   * with it; `after` (a full relative key) starts strictly after it.
   */
  async *scan(
    table: Table,
    opts: { prefix?: string; after?: string; limit?: number } = {},
  ): AsyncGenerator<[string, string]> {
    for await (const rows of this.scanBatches(table, opts)) yield* rows;
  }

  /**
   * `scan`, the rows of each LevelDB read handed out together: a whole table streamed row by row
   * (a snapshot of millions) spent more on an await per row than on the row.
   */
  async *scanBatches(
    table: Table,
    opts: { prefix?: string; after?: string; limit?: number } = {},
  ): AsyncGenerator<[string, string][]> {
    const base = tablePrefix(this.generation, table);
    const from = base + (opts.prefix ?? '');
    const lt = opts.prefix ? prefixEnd(from) : prefixEnd(base);
    const range =
      opts.after !== undefined && base + opts.after >= from
        ? { gt: base + opts.after, lt }
        : { gte: from, lt };
    const it = this.db.iterator({
      ...range,
      limit: opts.limit ?? Number.POSITIVE_INFINITY,
      snapshot: this.snap,
      highWaterMarkBytes: READ_BATCH_BYTES,
    });
    try {
      for (
        let rows = await it.nextv(READ_BATCH_ROWS);
        rows.length > 0;
        rows = await it.nextv(READ_BATCH_ROWS)
      ) {
        yield rows.map(([key, value]): [string, string] => [key.slice(base.length), value]);
      }
    } finally {
      await it.close();
    }
  }

  /**
   * Rows of `table` from `gte` on, in LevelDB's (UTF-8 byte) order, while their key starts with
   * `prefix`; `gte` must not sort before `prefix`. For keys of any Unicode, where `scan`'s bound by
   * character arithmetic would not hold.
   */
  async *range(
    table: Table,
    opts: { gte: string; prefix: string; limit?: number },
  ): AsyncGenerator<[string, string]> {
    const base = tablePrefix(this.generation, table);
    const it = this.db.iterator({
      gte: base + opts.gte,
      lt: prefixEnd(base),
      limit: opts.limit ?? Number.POSITIVE_INFINITY,
      snapshot: this.snap,
    });
    try {
      for await (const [key, value] of it) {
        const relative = key.slice(base.length);
        if (!relative.startsWith(opts.prefix)) return;
        yield [relative, value];
      }
    } finally {
      await it.close();
    }
  }

  async close(): Promise<void> {
    await this.snap.close();
  }
}

const TABLE_ORDER = new Map<string, number>(TABLES.map((t, i) => [t, i]));

/**
 * Writes a snapshot's rows into a generation that is not live yet, in batches, checking on the way
 * what installing a corrupt state would need: known tables in TABLES order, keys strictly
 * increasing in LevelDB's order within a table, and (at `finish`) the digest over every row.
 *
 * Rows are added synchronously (`add`); `flush` hands a full batch to LevelDB and returns at once
 * unless the previous batch is still being written, so parsing the next rows overlaps the write
 * (and, with synced writes, its fsync) of the last ones. Batches are written one after another,
 * in order: all of them are durable before `finish` returns, hence before the flip. A written
 * batch's native copy of its rows is released by a full collection every RESTORE_RELEASE_BYTES.
 */
class GenerationWriter {
  rows = 0;
  private readonly hash = createHash('sha256');
  private batch: ReturnType<Db['batch']>;
  private batchBytes = 0;
  private writing: Promise<void> | null = null;
  /** Bytes of the batch `writing` writes. */
  private writingBytes = 0;
  private readonly written = new WrittenBatches(RESTORE_RELEASE_BYTES);
  private tableIndex = -1;
  private previous: Buffer | null = null;

  constructor(
    private readonly db: Db,
    readonly generation: number,
    /** Fsync each batch (META_SYNCED_WRITES): the generation may become live without a rebuild. */
    private readonly sync: boolean,
    private readonly batchLimit: number,
  ) {
    this.batch = db.batch();
  }

  /** Whether the batch being gathered is due to be written (`flush`). */
  get full(): boolean {
    return this.batchBytes >= this.batchLimit;
  }

  /**
   * Adds a row; `line`, when given, is its row line as received without the newline (a line of
   * a streamed snapshot), digested as it is instead of being built again from the row.
   */
  add(table: string, key: string, value: string, line?: string): void {
    const order = TABLE_ORDER.get(table);
    if (order === undefined) throw new Error(`metadata snapshot: unknown table ${JSON.stringify(table)}`);
    if (order < this.tableIndex) throw new Error(`metadata snapshot: table ${table} out of order`);
    if (order > this.tableIndex) {
      this.tableIndex = order;
      this.previous = null;
    }
    // LevelDB orders keys by their UTF-8 bytes; JavaScript's `<=` compares UTF-16 code units,
    // and the two disagree when a character above U+FFFF meets one in U+E000-U+FFFF.
    const bytes = Buffer.from(key, 'utf8');
    if (this.previous !== null && Buffer.compare(bytes, this.previous) <= 0) {
      throw new Error(`metadata snapshot: ${table} keys out of order at ${JSON.stringify(key)}`);
    }
    this.previous = bytes;
    if (line === undefined) digestRow(this.hash, table as Table, key, value);
    else this.hash.update(`${line}\n`);
    this.rows += 1;
    const fullKey = tablePrefix(this.generation, table as Table) + key;
    this.batch.put(fullKey, value);
    this.batchBytes += fullKey.length + value.length;
  }

  async put(table: string, key: string, value: string): Promise<void> {
    this.add(table, key, value);
    if (this.full) await this.flush();
  }

  /** Starts writing the gathered rows, once the previous batch is written. */
  async flush(): Promise<void> {
    if (this.batch.length === 0) return;
    const batch = this.batch;
    const bytes = this.batchBytes;
    this.batch = this.db.batch();
    this.batchBytes = 0;
    try {
      await this.writing;
    } catch (err) {
      // Out of this.batch already: abandon() would not close it.
      await batch.close().catch(() => {});
      throw err;
    }
    // The batch awaited is written, and nothing refers to it any more.
    this.written.written(this.writingBytes);
    this.writingBytes = bytes;
    const write = batch.write({ sync: this.sync });
    // Awaited by the next flush or by finish; until then a failure must not go unhandled.
    write.catch(() => {});
    this.writing = write;
  }

  async finish(sha256: string): Promise<void> {
    await this.flush();
    await this.writing;
    if (this.hash.digest('hex') !== sha256)
      throw new Error('metadata snapshot: rows do not match the snapshot digest');
  }

  /** Drops what was written: the live generation never saw it. */
  async abandon(): Promise<void> {
    await this.writing?.catch(() => {});
    await this.batch.close().catch(() => {});
    const prefix = generationPrefix(this.generation);
    await clearDurably(this.db, prefix, prefixEnd(prefix));
  }
}

/**
 * Deletes the rows in [gte, lt) in synced batches. LevelDB's own clear never syncs, and its
 * deletes could come undone in a power cut even after later synced writes (META_SYNCED_WRITES):
 * rows of a generation that is not live must be gone for good before a restore writes that
 * generation again, or they would come back inside it once it is live. Free when there are none.
 */
async function clearDurably(db: Db, gte: string, lt: string): Promise<void> {
  for (;;) {
    const keys = await db.keys({ gte, lt, limit: RESTORE_BATCH_OPS }).all();
    if (keys.length === 0) return;
    await db.batch(
      keys.map((key) => ({ type: 'del' as const, key })),
      { sync: true },
    );
  }
}

const rowId = (table: Table, key: string): string => `${table}\0${key}`;

/**
 * The rows of several commands gathered for one `MetadataTables.write`, and a reader of the tables
 * as they will be once it is written: a command planned against it reads what it would have read
 * had each command before it been written in a batch of its own (applyCommand.ts, TableReader).
 */
export class PendingWrites {
  readonly ops: TableOp[] = [];
  /** The last value planned for each row, null for a delete. */
  private readonly rows = new Map<string, string | null>();

  constructor(private readonly tables: MetadataTables) {}

  /** The last value planned for each row (by rowId), what `MetadataTables.writeBehind` serves reads from. */
  get plannedRows(): ReadonlyMap<string, string | null> {
    return this.rows;
  }

  /** LevelDB applies a batch in order, so a row planned twice ends at its last value, as here. */
  add(ops: readonly TableOp[]): void {
    for (const op of ops) {
      this.ops.push(op);
      this.rows.set(rowId(op.table, op.key), op.type === 'put' ? op.value : null);
    }
  }

  async get(table: Table, key: string): Promise<string | undefined> {
    const planned = this.rows.get(rowId(table, key));
    return planned === undefined ? this.tables.get(table, key) : (planned ?? undefined);
  }

  async getMany(table: Table, keys: string[]): Promise<(string | undefined)[]> {
    const live = await this.tables.getMany(table, keys);
    return keys.map((key, i) => {
      const planned = this.rows.get(rowId(table, key));
      return planned === undefined ? live[i] : (planned ?? undefined);
    });
  }

  /** A planned put under the prefix, or a live row under it that no planned delete removes. */
  async hasKeyWithPrefix(table: Table, prefix: string): Promise<boolean> {
    const start = rowId(table, prefix);
    let deletes = 0;
    for (const [id, value] of this.rows) {
      if (!id.startsWith(start)) continue;
      if (value !== null) return true;
      deletes += 1;
    }
    // Among the first deletes + 1 live rows, at least one survives unless all were deleted.
    const live = await this.tables.keysWithPrefix(table, prefix, deletes + 1);
    return live.some((key) => this.rows.get(rowId(table, key)) !== null);
  }
}

/**
 * Row lines written straight into one buffer, reused for the whole stream. A chunk gathered as
 * strings, or in a buffer of its own, lived across the LevelDB reads that filled it, so V8 moved it
 * to the old generation, where it stayed as garbage until a full collection: at 10 million images
 * a leader's heap and external memory grew by some 170 MiB while it built a file
 * (docs/operations.md, "Manager memory").
 */
class ChunkFiller {
  private buf: Buffer;
  private used = 0;

  /** `transient`: `take` hands out this buffer itself, written over by the next chunk. */
  constructor(
    private readonly chunkBytes: number,
    private readonly transient: boolean,
  ) {
    this.buf = Buffer.allocUnsafeSlow(chunkBytes + 64 * 1024);
  }

  /** Appends `line`. */
  add(line: string): void {
    // A UTF-16 unit is at most 3 bytes of UTF-8: only a line that may not fit is measured.
    if (this.used + 3 * line.length > this.buf.length) {
      const need = this.used + Buffer.byteLength(line, 'utf8');
      if (need > this.buf.length) this.grow(need);
    }
    this.used += this.buf.write(line, this.used, 'utf8');
  }

  get full(): boolean {
    return this.used >= this.chunkBytes;
  }

  /** The bytes since the last `take`: a copy, or the buffer itself when transient. */
  take(): Buffer {
    const chunk = this.transient
      ? this.buf.subarray(0, this.used)
      : Buffer.from(this.buf.subarray(0, this.used));
    this.used = 0;
    return chunk;
  }

  /** The bytes `from`.. the end, not copied: valid until the next `add`. */
  view(from: number): Buffer {
    return this.buf.subarray(from, this.used);
  }

  private grow(need: number): void {
    const bigger = Buffer.allocUnsafeSlow(Math.max(need, 2 * this.buf.length));
    this.buf.copy(bigger, 0, 0, this.used);
    this.buf = bigger;
  }
}

/** The chunks of a streamed snapshot of `opened` (closed when the stream ends or is dropped). */
async function* streamView(
  opened: Promise<TablesView>,
  chunkBytes: number,
  transient: boolean,
): AsyncGenerator<Buffer> {
  const view = await opened;
  try {
    const hash = createHash('sha256');
    let rows = 0;
    const out = new ChunkFiller(chunkBytes, transient);
    out.add(headerLine(await view.appliedIndex(), STREAM_FORMAT));
    // The row lines are hashed as the bytes written, a chunk's worth at a time (same digest).
    let hashedTo = out.view(0).length;
    for (const table of TABLES) {
      for await (const batch of view.scanBatches(table)) {
        for (const [key, value] of batch) {
          out.add(rowLine(table, key, value));
          rows += 1;
          if (out.full) {
            hash.update(out.view(hashedTo));
            hashedTo = 0;
            yield out.take();
          }
        }
      }
    }
    hash.update(out.view(hashedTo));
    out.add(trailerLine(rows, hash.digest('hex')));
    yield out.take();
  } finally {
    await view.close();
  }
}

/**
 * The storage half of the metadata state machine: generations, batches carrying the applied
 * index, snapshots, restore and digest. It knows nothing of the commands.
 */
export class MetadataTables {
  /** Whether `write` fsyncs each batch (see META_SYNCED_WRITES). */
  private synced = false;
  /**
   * The batch `writeBehind` started, until its write ends: its rows (by rowId, null for a delete),
   * which point reads answer from meanwhile, and the end of its write, which every other read and
   * write waits for. At most one at a time.
   */
  private landing: { rows: ReadonlyMap<string, string | null>; done: Promise<void> } | null = null;
  /** Why a batch written behind failed: every later read and write throws it. */
  private writeFailure: unknown = null;
  /** Told when a batch written behind fails (onWriteFailure). */
  private failureListener: ((err: unknown) => void) | null = null;

  private constructor(
    private readonly db: Db,
    private generation: number,
    private applied: number,
    private readonly restoreBatchBytes: number,
  ) {}

  /** `restoreBatchBytes`: bytes of rows per batch a restore writes (tests make it small). */
  static async open(dir: string, options: { restoreBatchBytes?: number } = {}): Promise<MetadataTables> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const db: Db = new ClassicLevel<string, string>(dir, {
      keyEncoding: 'utf8',
      valueEncoding: 'utf8',
      maxOpenFiles: TABLE_FILES_OPEN,
    });
    await db.open();
    const generation = Number((await db.get(META_GENERATION)) ?? '0');
    const applied = Number((await db.get(META_APPLIED)) ?? '0');
    // Leftovers of an interrupted restore (a newer generation) or of its cleanup (an older one).
    const live = generationPrefix(generation);
    // Older ones can never be written again; newer ones will be, so their rows go durably.
    await db.clear({ gte: DATA_ROOT, lt: live });
    await clearDurably(db, prefixEnd(live), prefixEnd(DATA_ROOT));
    return new MetadataTables(db, generation, applied, options.restoreBatchBytes ?? RESTORE_BATCH_BYTES);
  }

  /**
   * The index of the last batch written or being written (writeBehind): every read called from
   * now on sees at least its rows.
   */
  appliedIndex(): number {
    return this.applied;
  }

  /** Waits until the batch `writeBehind` started, if any, is written; throws if that write failed. */
  async landed(): Promise<void> {
    if (this.landing !== null) await this.landing.done;
    if (this.writeFailure !== null) throw this.writeFailure;
  }

  /** Calls `listener` once when a batch written behind fails, at once if one already did. */
  onWriteFailure(listener: (err: unknown) => void): void {
    this.failureListener = listener;
    if (this.writeFailure !== null) listener(this.writeFailure);
  }

  /** Why a batch written behind failed, or null: after one the tables may be torn (no clean stop). */
  failedWrite(): unknown {
    return this.writeFailure;
  }

  /** Whether the tables were written with `syncWrites(true)` since that was last turned off. */
  async writesWereSynced(): Promise<boolean> {
    return (await this.db.get(META_SYNCED_WRITES)) !== undefined;
  }

  /**
   * Turns fsyncing of every later write on or off, and records it durably: off, the marker is
   * removed first. On is set at open (metadataStateMachine.ts), when every earlier batch is
   * durable: LevelDB's open writes what it recovered from its logs to a synced table file.
   */
  async syncWrites(on: boolean): Promise<void> {
    if (on) await this.db.put(META_SYNCED_WRITES, '1', { sync: true });
    else await this.db.del(META_SYNCED_WRITES, { sync: true });
    this.synced = on;
  }

  /**
   * The applied index at the call, once its batch (and every earlier one) is written and durable,
   * though `writeBehind` may have started a later batch meanwhile. Only with
   * synced writes on (`syncWrites`), where each batch was fsynced on its own: one synced write
   * here would not make earlier unsynced batches durable (see META_SYNCED_WRITES).
   */
  async syncApplied(): Promise<number> {
    // Read before waiting: the batch in flight ends at exactly this index, and a batch started
    // while this waits (writeBehind's waiter resumes first) is not written yet.
    const applied = this.applied;
    await this.landed();
    await this.db.put(META_SYNCED, String(applied), { sync: true });
    return applied;
  }

  /**
   * A consistent read view. The live generation is read from the same LevelDB snapshot as the
   * rows: a restore's flip can land between taking the snapshot and this object noticing it.
   */
  async view(): Promise<TablesView> {
    // After the batch written behind, if any: a scan cannot be overlaid with its rows.
    if (this.landing !== null || this.writeFailure !== null) await this.landed();
    // Synchronous up to its return when no batch is being written: the view is taken at the call,
    // before the caller's next await (which `snapshot` relies on).
    const snap = this.db.snapshot();
    try {
      const generation = Number(this.db.getSync(META_GENERATION, { snapshot: snap }) ?? '0');
      return new TablesView(this.db, snap, generation);
    } catch (err) {
      await snap.close();
      throw err;
    }
  }

  /**
   * Point read of the live state (no snapshot needed for one key). A row of the batch being
   * written behind is answered from that batch: LevelDB holds either the state before it or the
   * one after, and the rows it does not touch are the same in both.
   */
  async get(table: Table, key: string): Promise<string | undefined> {
    if (this.writeFailure !== null) throw this.writeFailure;
    const landing = this.landing?.rows.get(rowId(table, key));
    if (landing !== undefined) return landing ?? undefined;
    return this.db.getSync(tablePrefix(this.generation, table) + key);
  }

  async getMany(table: Table, keys: string[]): Promise<(string | undefined)[]> {
    if (this.writeFailure !== null) throw this.writeFailure;
    const prefix = tablePrefix(this.generation, table);
    const rows = this.landing?.rows;
    return keys.map((k) => {
      const landing = rows?.get(rowId(table, k));
      return landing !== undefined ? (landing ?? undefined) : this.db.getSync(prefix + k);
    });
  }

  /** Whether any live row of `table` has a key starting with `prefix` (ASCII-ended): one seek. */
  async hasKeyWithPrefix(table: Table, prefix: string): Promise<boolean> {
    return (await this.keysWithPrefix(table, prefix, 1)).length > 0;
  }

  /** The first `limit` keys (relative to the table) of live rows starting with `prefix` (ASCII-ended). */
  async keysWithPrefix(table: Table, prefix: string, limit: number): Promise<string[]> {
    await this.landed();
    const base = tablePrefix(this.generation, table);
    const from = base + prefix;
    const keys = await this.db.keys({ gte: from, lt: prefixEnd(from), limit }).all();
    return keys.map((key) => key.slice(base.length));
  }

  /**
   * Records `ops` and the new applied index in ONE LevelDB batch, so the tables and the index that
   * says what they contain can never disagree after a crash. The state machine writes all the
   * entries of one apply call in one such batch (PendingWrites).
   *
   * Not fsynced, on purpose: the Raft log is the durable truth and is synced before any entry is
   * applied. A process crash loses nothing (the batch is in the OS's page cache); a machine crash
   * may lose a suffix of these batches, but LevelDB recovers a prefix of its write-ahead log, so
   * the recovered tables are exactly the state at the recovered applied index, and the driver
   * re-applies the rest from the log. Before the log is compacted past an index the driver keeps
   * the snapshot cut there and restores from it if this store is behind it (see
   * src/consensus/stateMachine.ts). A manager that compacts its log without writing a snapshot
   * file (`syncWrites(true)`) fsyncs each batch instead, one per apply call: the tables are then
   * its only copy of the compacted state, and must never be torn.
   */
  async write(ops: TableOp[], appliedIndex: number): Promise<void> {
    await this.landed();
    await this.startBatch(ops, appliedIndex);
    this.applied = appliedIndex;
  }

  /**
   * `write`, returning once the batch is started rather than written (after the previous one is
   * written: one at a time, in order). `appliedIndex()` moves at once; until the write ends, point
   * reads answer the batch's rows from `pending` and every other read waits (`landed`), so no read
   * called after this returned sees the tables without the batch. What the caller answers from it
   * may go out before the batch is on disk: the Raft log holds the entries, and syncApplied, which
   * waits, bounds what the log may drop. If the write fails, every later read and write throws,
   * and the `onWriteFailure` listener is told at once.
   */
  async writeBehind(pending: PendingWrites, appliedIndex: number): Promise<void> {
    await this.landed();
    const written = this.startBatch(pending.ops, appliedIndex);
    this.applied = appliedIndex;
    const landing = {
      rows: pending.plannedRows,
      done: written.then(
        () => {},
        (err: unknown) => {
          this.writeFailure = err ?? new Error('metadata tables: a batch write failed');
          this.failureListener?.(this.writeFailure);
        },
      ),
    };
    this.landing = landing;
    void landing.done.finally(() => {
      if (this.landing === landing) this.landing = null;
    });
  }

  private startBatch(ops: readonly TableOp[], appliedIndex: number): Promise<void> {
    if (appliedIndex <= this.applied) {
      throw new Error(`metadata tables: applied index must grow (${this.applied} -> ${appliedIndex})`);
    }
    const batch = this.db.batch();
    for (const op of ops) {
      const key = tablePrefix(this.generation, op.table) + op.key;
      if (op.type === 'put') batch.put(key, op.value);
      else batch.del(key);
    }
    batch.put(META_APPLIED, String(appliedIndex));
    return batch.write(this.synced ? { sync: true } : {});
  }

  /**
   * The whole state as one string: every row of every table and the applied index, read from one
   * LevelDB snapshot taken before this returns (StateMachine.snapshot: the Raft node goes on
   * applying while it is read), streamed table by table.
   */
  async snapshot(): Promise<string> {
    const view = await this.view();
    try {
      const hash = createHash('sha256');
      const parts: string[] = [
        `{"format":${JSON.stringify(SNAPSHOT_FORMAT)},"appliedIndex":${await view.appliedIndex()},"tables":{`,
      ];
      for (const [i, table] of TABLES.entries()) {
        parts.push(`${i === 0 ? '' : ','}${JSON.stringify(table)}:[`);
        let first = true;
        for await (const [key, value] of view.scan(table)) {
          digestRow(hash, table, key, value);
          parts.push(`${first ? '' : ','}[${JSON.stringify(key)},${JSON.stringify(value)}]`);
          first = false;
        }
        parts.push(']');
      }
      parts.push(`},"sha256":"${hash.digest('hex')}"}`);
      return parts.join('');
    } finally {
      await view.close();
    }
  }

  /**
   * The whole state as a stream of chunks (snapshotStream.ts), read from one LevelDB snapshot
   * taken before this returns, like `snapshot`; at most about `chunkBytes` is held at a time.
   * `transient`: every chunk is the same buffer, written over once the next is asked for, for a
   * consumer done with each chunk by then (a file write): nothing is left for V8 to collect.
   */
  snapshotChunks(
    chunkBytes = STREAM_CHUNK_BYTES,
    opts: { transient?: boolean } = {},
  ): AsyncIterableIterator<Buffer> {
    const opened = this.view();
    const rows = streamView(opened, chunkBytes, opts.transient ?? false);
    let started = false;
    // A generator returned before its first next() never runs its body, so its finally would not
    // close the view: a consumer that fails before reading (the temp file would not open) returns it.
    const closeUnstarted = async (): Promise<void> => {
      if (started) return;
      started = true;
      await (await opened).close();
    };
    const stream: AsyncIterableIterator<Buffer> = {
      next: () => {
        started = true;
        return rows.next();
      },
      return: async (value?: unknown) => {
        await closeUnstarted();
        return rows.return(value);
      },
      throw: async (err?: unknown) => {
        await closeUnstarted();
        return rows.throw(err);
      },
      [Symbol.asyncIterator]: () => stream,
    };
    return stream;
  }

  /**
   * Replaces every table with the snapshot's content and sets the applied index to `index`, all
   * or nothing across crashes (see the generation scheme at the top of this file). Throws on a
   * snapshot that is malformed, out of key order, taken at another index or whose rows do not
   * match its digest: installing a corrupt state would be worse than stopping.
   */
  async restore(data: string, index: number): Promise<void> {
    await this.landed();
    // '' is the state of a cluster's bootstrap snapshot (src/consensus/raftNode.ts): no rows.
    const snap = data === '' ? emptySnapshot(index) : snapshotSchema.parse(JSON.parse(data));
    if (snap.appliedIndex !== index) {
      throw new Error(`metadata snapshot is at index ${snap.appliedIndex}, restore asked for ${index}`);
    }
    const next = await this.beginGeneration();
    try {
      for (const table of TABLES)
        for (const [key, value] of snap.tables[table]) await next.put(table, key, value);
      await next.finish(snap.sha256);
    } catch (err) {
      await next.abandon();
      throw err;
    }
    await this.flip(next.generation, index);
  }

  /**
   * `restore` from a streamed snapshot (snapshotStream.ts), a line at a time: memory stays bounded
   * whatever its size. The new generation becomes live only after the trailer's digest matched;
   * a stream that fails, ends early or lies leaves the live tables as they were.
   */
  async restoreChunks(chunks: AsyncIterable<Uint8Array>, index: number): Promise<void> {
    await this.landed();
    // The lines of a chunk at a time: an await per row cost more than the row's own work.
    const batches = splitLineBatches(chunks, MAX_STREAM_LINE_BYTES);
    const next = await this.beginGeneration();
    try {
      let header: { format: string; appliedIndex: number } | null = null;
      let trailer: { rows: number; sha256: string } | null = null;
      for await (const lines of batches) {
        for (const line of lines) {
          if (header === null) {
            header = parseHeader(line);
            if (header.format !== STREAM_FORMAT)
              throw new Error(`metadata snapshot: unknown format ${header.format}`);
            if (header.appliedIndex !== index) {
              throw new Error(
                `metadata snapshot is at index ${header.appliedIndex}, restore asked for ${index}`,
              );
            }
            continue;
          }
          if (trailer !== null) throw new Error('metadata snapshot: data after the trailer');
          const parsed = parseLine(line);
          if (parsed.kind === 'trailer') trailer = parsed;
          else next.add(parsed.table, parsed.key, parsed.value, line);
        }
        if (next.full) await next.flush();
      }
      if (header === null) parseHeader(undefined);
      if (trailer === null) throw new Error('metadata snapshot: stream ended before its trailer');
      if (trailer.rows !== next.rows)
        throw new Error('metadata snapshot: row count does not match the trailer');
      await next.finish(trailer.sha256);
    } catch (err) {
      await batches.return(undefined);
      await next.abandon();
      throw err;
    }
    await this.flip(next.generation, index);
  }

  /** Clears generation g+1 (leftovers of an earlier attempt) and returns a writer into it. */
  private async beginGeneration(): Promise<GenerationWriter> {
    const next = this.generation + 1;
    const prefix = generationPrefix(next);
    await clearDurably(this.db, prefix, prefixEnd(prefix));
    return new GenerationWriter(this.db, next, this.synced, this.restoreBatchBytes);
  }

  /** From here on the new generation is the state, even across a power loss; then the old one goes. */
  private async flip(next: number, index: number): Promise<void> {
    await this.db.batch(
      [
        { type: 'put', key: META_GENERATION, value: String(next) },
        { type: 'put', key: META_APPLIED, value: String(index) },
      ],
      { sync: true },
    );
    const old = generationPrefix(this.generation);
    this.generation = next;
    this.applied = index;
    await this.db.clear({ gte: old, lt: prefixEnd(old) });
  }

  async digest(): Promise<TableDigest> {
    const view = await this.view();
    try {
      const hash = createHash('sha256');
      const appliedIndex = await view.appliedIndex();
      for (const table of TABLES) {
        for await (const [key, value] of view.scan(table)) digestRow(hash, table, key, value);
      }
      return { appliedIndex, sha256: hash.digest('hex') };
    } finally {
      await view.close();
    }
  }

  async close(): Promise<void> {
    if (this.landing !== null) await this.landing.done;
    await this.db.close();
  }
}
