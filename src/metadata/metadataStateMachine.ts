// The replicated metadata state machine: what the Raft node driver applies committed entries into
// (src/consensus/stateMachine.ts), plus the local, non-replicated queries the API and the leader's
// control loops read the tables with.

import type { AppliedResult, StateMachine } from '../consensus/stateMachine.ts';
import type { Entry, Index } from '../consensus/types.ts';
import { createLogger, type Logger } from '../logging.ts';
import { planCommand } from './applyCommand.ts';
import { collectGarbage } from './batchMemory.ts';
import { markCleanStop, takeCleanStopMarker } from './cleanStop.ts';
import {
  ACCESS_KEY_ID_PATTERN,
  type ApplyResult,
  BUCKET_PATTERN,
  decodeCommand,
  keyProblem,
  type NameView,
  NODE_ID_PATTERN,
  type NodeView,
  type ObjectView,
  type RemovedNodeRecord,
  reject,
  type S3KeyRecord,
} from './commands.ts';
import {
  DELIMITER_PATTERN,
  decodeCursor,
  listNamePage,
  MAX_NAME_PAGE,
  type NameListOptions,
  type NamePage,
} from './nameListing.ts';
import {
  bucketPrefix,
  CONTENT_COUNTER,
  type Counter,
  decodeBucket,
  decodeCounter,
  decodeName,
  decodeNode,
  decodeObject,
  decodeRemovedNode,
  decodeS3Key,
  MetadataTables,
  NAMES_COUNTER,
  NODE_COUNTER_PREFIX,
  nameKey,
  nodeIndexPrefix,
  PendingWrites,
  prefixEnd,
  type TableDigest,
  TOTAL_COUNTER,
} from './tables.ts';

/** Bound on one page of a listing. */
export const MAX_PAGE = 1000;
/** Bound on the objects one under-replication scan step reads. */
export const MAX_SCAN = 10_000;
/** Bound on the buckets ListBuckets returns. */
export const MAX_BUCKETS = 1000;
/** The id of named content (nameService.ts): `c` and its sha256. */
const CONTENT_ID = /^c[0-9a-f]{64}$/;
/** Rows one apply batch gathers before it is written (a Ready of many large entries). */
const MAX_PENDING_OPS = 10_000;
/** The design keeps every object on two live workers. */
export const REPLICATION_FACTOR = 2;

export interface PageOptions {
  /** 1..MAX_PAGE, default 100. */
  limit?: number;
  /** Start strictly after this id (the previous page's `next`). */
  after?: string;
}

export interface Page<T> {
  items: T[];
  /** Cursor for the next page, or null when this page reached the end. */
  next: string | null;
}

export interface MetadataStats {
  appliedIndex: Index;
  objects: number;
  /** Logical bytes: each object counted once, whatever its replica count. */
  bytes: number;
  /** Per node, from the object table (not the worker's own report, which is in the node record). */
  nodes: Record<string, Counter>;
}

export interface UnderReplicatedObject {
  object: ObjectView;
  /** Replicas on nodes in state `up`, in placement order. */
  liveReplicas: string[];
}

export interface UnderReplicatedOptions {
  after?: string;
  /** Objects read in this step, 1..MAX_SCAN, default 1000: bounds the work whatever it finds. */
  scanLimit?: number;
  /** Objects returned, 1..MAX_PAGE, default 100. */
  limit?: number;
  /** Live replicas an object needs, default REPLICATION_FACTOR. */
  minLive?: number;
}

function clampLimit(limit: number | undefined, fallback: number, max: number): number {
  if (limit === undefined || !Number.isFinite(limit)) return fallback;
  return Math.min(max, Math.max(1, Math.floor(limit)));
}

export interface MetadataOpenOptions {
  /**
   * Fsync every table write, so the tables are never torn and the Raft driver may compact its log
   * without writing them to a snapshot file (StateMachine.syncApplied). A manager with a snapshot
   * folder opens its tables this way.
   */
  syncedWrites?: boolean;
}

export class MetadataStateMachine implements StateMachine {
  /**
   * The node table, read once and kept until an applied entry or a restore changes it. Every
   * upload and every repair step ranks workers from it, and it changes only on registrations,
   * usage summaries and state changes, so this saves a LevelDB iterator per operation.
   */
  private nodesCache: Promise<NodeView[]> | null = null;
  /** Bumped by every change to the node table: a read that overlapped one is not cached. */
  private nodesVersion = 0;
  private syncedWrites = false;
  /** StateMachine.onWriteFailure's listener: the Raft driver, which stops on it. */
  private failureListener: ((err: unknown) => void) | null = null;

  private constructor(
    private readonly tables: MetadataTables,
    private readonly log: Logger,
    private readonly dir: string | null,
  ) {}

  /**
   * Opens (creating if needed) the tables in `dir`, a folder of the manager's data dir. After an
   * unclean stop (a crash or a power cut: see cleanStop.ts) tables written without synced writes
   * may be torn, so they are emptied down to applied index 0: the Raft driver then restores them
   * from its last snapshot and re-applies the committed log after it, and the manager never serves
   * tables that differ from the committed log. Tables last written with synced writes are kept.
   */
  static async open(
    dir: string,
    log: Logger = createLogger('metadata'),
    opts: MetadataOpenOptions = {},
  ): Promise<MetadataStateMachine> {
    const tables = await MetadataTables.open(dir);
    const sm = new MetadataStateMachine(tables, log, dir);
    tables.onWriteFailure((err) => sm.writeFailed(err));
    const clean = await takeCleanStopMarker(dir);
    const applied = tables.appliedIndex();
    // Tables whose every batch was fsynced (tables.ts, META_SYNCED_WRITES) cannot be torn.
    const torn = !clean && applied > 0 && !(await tables.writesWereSynced());
    if (!torn && !clean && applied > 0) {
      log.info(
        { event: 'metadata.kept_after_unclean_stop', applied },
        'synced tables kept after an unclean stop',
      );
    }
    if (torn) {
      log.warn(
        { event: 'metadata.rebuild_after_unclean_stop', applied },
        'tables were not closed cleanly and may be torn: rebuilding them from the Raft snapshot and log',
      );
      await tables.restore('', 0);
    }
    // After the rebuild: a crash during it must find the marker still absent.
    await tables.syncWrites(opts.syncedWrites === true);
    sm.syncedWrites = opts.syncedWrites === true;
    return sm;
  }

  /** Every read of the tables called from now on sees at least this index's state (`apply`). */
  appliedIndex(): Index {
    return this.tables.appliedIndex();
  }

  /** StateMachine.flush: the last apply's batch is written. */
  flush(): Promise<void> {
    return this.tables.landed();
  }

  /** StateMachine.onWriteFailure: a batch `apply` returned before failed. */
  onWriteFailure(onFailure: (err: unknown) => void): void {
    this.failureListener = onFailure;
    const failed = this.tables.failedWrite();
    if (failed !== null) onFailure(failed);
  }

  private writeFailed(err: unknown): void {
    this.log.error(
      { event: 'metadata.write_failed', err, applied: this.tables.appliedIndex() },
      'a table batch failed after its entries were answered: every later read fails, and the Raft driver stops',
    );
    this.failureListener?.(err);
  }

  /**
   * StateMachine.syncApplied: only with synced writes (MetadataOpenOptions), else null and the
   * driver keeps writing snapshot files.
   */
  async syncApplied(): Promise<Index | null> {
    return this.syncedWrites ? this.tables.syncApplied() : null;
  }

  /**
   * Applies the entries (one Ready's committed entries) in ONE batch with the last one's index,
   * each command planned against the rows of those before it (PendingWrites), so the tables and
   * results are those of applying them one by one, for one fsync with synced writes where a batch
   * per entry cost one each (see MetadataTables.write for why the batch is otherwise not fsynced).
   * Past MAX_PENDING_OPS rows a batch is written early, bounding its memory. Entries without a
   * command (the leader's empty entry, conf changes) change no table, but their index is recorded.
   *
   * Returns once the last batch is started, not written (MetadataTables.writeBehind): the results
   * go to the clients while the (synced) write runs, and the next apply is planned meanwhile. No
   * read called after the return sees the tables without the batch: point reads answer its rows
   * from memory, scans wait for the write. So an answered command is visible to every later read.
   */
  async apply(entries: Entry[]): Promise<AppliedResult[]> {
    const results: AppliedResult[] = [];
    let applied = this.tables.appliedIndex();
    let pending = new PendingWrites(this.tables);
    let nodesChanged = false;
    for (const entry of entries) {
      if (entry.index !== applied + 1) {
        throw new Error(`metadata: entry ${entry.index} applied out of order (expected ${applied + 1})`);
      }
      applied = entry.index;
      if (entry.type !== 'normal' || entry.data === '') continue;
      const decoded = decodeCommand(entry.data);
      let result: ApplyResult;
      let requestId: string | null;
      if (decoded.ok) {
        const plan = await planCommand(pending, decoded.command);
        pending.add(plan.ops);
        nodesChanged ||= plan.ops.some((op) => op.table === 'nodes');
        result = plan.result;
        requestId = decoded.command.requestId ?? null;
      } else {
        result = reject('InvalidCommand', decoded.message);
        requestId = decoded.requestId;
      }
      if (pending.ops.length >= MAX_PENDING_OPS) {
        await this.tables.write(pending.ops, applied);
        pending = new PendingWrites(this.tables);
      }
      if (!result.ok) {
        this.log.debug(
          { event: 'metadata.command_rejected', index: entry.index, code: result.code, requestId },
          result.message,
        );
      }
      results.push({ index: entry.index, requestId, result });
    }
    if (applied > this.tables.appliedIndex()) await this.tables.writeBehind(pending, applied);
    // Once the batch is started: a node table read called before is not cached (listNodes), and
    // one called after waits for the write (MetadataTables.view).
    if (nodesChanged) this.forgetNodes();
    return results;
  }

  snapshot(): Promise<string> {
    return this.tables.snapshot();
  }

  async restore(data: string, index: Index): Promise<void> {
    await this.tables.restore(data, index);
    this.forgetNodes();
    this.log.info({ event: 'metadata.snapshot_restored', index }, 'metadata tables restored from snapshot');
  }

  /**
   * A file's build starts with a full collection: a leader that has taken a long load holds far
   * more heap than it uses (the Raft log's entries, freed from the front, leave old-space pages
   * partly used), which V8 gives back only after a mark-compact, and the build's reads and
   * writes come on top of it (docs/operations.md, "Measured at 10M a third time"). One pause of
   * the loop, for a build that is rare (a new member, a follower behind the compacted log).
   */
  snapshotChunks(opts: { transient?: boolean } = {}): AsyncIterable<Uint8Array> {
    collectGarbage();
    return this.tables.snapshotChunks(undefined, opts);
  }

  async restoreChunks(chunks: AsyncIterable<Uint8Array>, index: Index): Promise<void> {
    await this.tables.restoreChunks(chunks, index);
    this.forgetNodes();
    this.log.info(
      { event: 'metadata.snapshot_restored', index },
      'metadata tables restored from a streamed snapshot',
    );
  }

  /** sha256 over every row of every table, with the applied index it describes. */
  tableDigest(): Promise<TableDigest> {
    return this.tables.digest();
  }

  async close(): Promise<void> {
    await this.tables.close();
    // A failed batch may have left a torn record behind: the tables are rebuilt at the next open.
    if (this.dir !== null && this.tables.failedWrite() === null) await markCleanStop(this.dir);
  }

  // ---- Queries: local reads, not replicated ------------------------------------------------

  async getObject(id: string): Promise<ObjectView | null> {
    const raw = await this.tables.get('objects', id);
    return raw === undefined ? null : { id, ...decodeObject(raw) };
  }

  /** Several objects in one LevelDB read, null where there is none (a rejoin's batch of lines). */
  async getObjects(ids: readonly string[]): Promise<(ObjectView | null)[]> {
    const raws = await this.tables.getMany('objects', [...ids]);
    return raws.map((raw, i) => (raw === undefined ? null : { id: ids[i]!, ...decodeObject(raw) }));
  }

  /** Objects in id order. */
  async listObjects(opts: PageOptions = {}): Promise<Page<ObjectView>> {
    const limit = clampLimit(opts.limit, 100, MAX_PAGE);
    const view = await this.tables.view();
    try {
      const items: ObjectView[] = [];
      let more = false;
      for await (const [id, value] of view.scan('objects', { after: opts.after, limit: limit + 1 })) {
        if (items.length === limit) {
          more = true;
          break;
        }
        items.push({ id, ...decodeObject(value) });
      }
      return { items, next: more ? items[items.length - 1]!.id : null };
    } finally {
      await view.close();
    }
  }

  /** Ids of the objects with a replica on `nodeId`, in id order, from the node index. */
  async objectsOnNode(nodeId: string, opts: PageOptions = {}): Promise<Page<string>> {
    if (!NODE_ID_PATTERN.test(nodeId)) return { items: [], next: null };
    const limit = clampLimit(opts.limit, 100, MAX_PAGE);
    const prefix = nodeIndexPrefix(nodeId);
    const view = await this.tables.view();
    try {
      const items: string[] = [];
      let more = false;
      const after = opts.after === undefined ? undefined : prefix + opts.after;
      for await (const [key] of view.scan('nodeIndex', { prefix, after, limit: limit + 1 })) {
        if (items.length === limit) {
          more = true;
          break;
        }
        items.push(key.slice(prefix.length));
      }
      return { items, next: more ? items[items.length - 1]! : null };
    } finally {
      await view.close();
    }
  }

  async getNode(nodeId: string): Promise<NodeView | null> {
    const raw = await this.tables.get('nodes', nodeId);
    return raw === undefined ? null : { nodeId, ...decodeNode(raw) };
  }

  /** A worker removed for good (`removeWorker`), or null: its id never registers again. */
  async getRemovedNode(nodeId: string): Promise<RemovedNodeRecord | null> {
    if (!NODE_ID_PATTERN.test(nodeId)) return null;
    const raw = await this.tables.get('removedNodes', nodeId);
    return raw === undefined ? null : decodeRemovedNode(raw);
  }

  /**
   * Every registered worker, in id order (a cluster has tens of workers, not millions). Served
   * from the cache when nothing changed the table since it was read; callers get their own copy.
   */
  async listNodes(): Promise<NodeView[]> {
    if (this.nodesCache === null) {
      const version = this.nodesVersion;
      const read = this.readNodes();
      this.nodesCache = read;
      read.then(
        () => {
          // A change applied while the read ran may or may not be in it: read again next time.
          if (this.nodesVersion !== version && this.nodesCache === read) this.nodesCache = null;
        },
        () => {
          if (this.nodesCache === read) this.nodesCache = null;
        },
      );
    }
    return (await this.nodesCache).map((n) => ({ ...n }));
  }

  /** Changes with every change to the node table: a key for caches of what is derived from it. */
  nodeTableVersion(): number {
    return this.nodesVersion;
  }

  private forgetNodes(): void {
    this.nodesVersion += 1;
    this.nodesCache = null;
  }

  private async readNodes(): Promise<NodeView[]> {
    const view = await this.tables.view();
    try {
      const nodes: NodeView[] = [];
      for await (const [nodeId, value] of view.scan('nodes')) nodes.push({ nodeId, ...decodeNode(value) });
      return nodes;
    } finally {
      await view.close();
    }
  }

  /** The counters table: the object-count and disk-usage tables of docs/seed-flow.md. */
  async stats(): Promise<MetadataStats> {
    const view = await this.tables.view();
    try {
      const appliedIndex = await view.appliedIndex();
      const totalRaw = await view.get('counters', TOTAL_COUNTER);
      const total = totalRaw === undefined ? { objects: 0, bytes: 0 } : decodeCounter(totalRaw);
      const nodes: Record<string, Counter> = {};
      for await (const [key, value] of view.scan('counters', { prefix: NODE_COUNTER_PREFIX })) {
        nodes[key.slice(NODE_COUNTER_PREFIX.length)] = decodeCounter(value);
      }
      return { appliedIndex, objects: total.objects, bytes: total.bytes, nodes };
    } finally {
      await view.close();
    }
  }

  // ---- Names ------------------------------------------------------------------------------

  async getName(bucket: string, key: string): Promise<NameView | null> {
    if (!BUCKET_PATTERN.test(bucket) || keyProblem(key) !== null) return null;
    const raw = await this.tables.get('names', nameKey(bucket, key));
    return raw === undefined ? null : { bucket, key, ...decodeName(raw) };
  }

  /** The object holding named content with this sha256, from the content index. */
  async contentObject(sha256: string): Promise<string | null> {
    if (!/^[0-9a-f]{64}$/.test(sha256)) return null;
    return (await this.tables.get('content', sha256)) ?? null;
  }

  /**
   * `names`: how many names and the bytes they name (shared content once per name); `content`: the
   * distinct objects they point at. names.bytes - content.bytes is what deduplication saves.
   */
  async nameStats(): Promise<{ names: Counter; content: Counter }> {
    const [names, content] = await this.tables.getMany('counters', [NAMES_COUNTER, CONTENT_COUNTER]);
    const decode = (raw: string | undefined) =>
      raw === undefined ? { objects: 0, bytes: 0 } : decodeCounter(raw);
    return { names: decode(names), content: decode(content) };
  }

  /**
   * One page of a bucket's names in key order (see nameListing.ts). Throws RangeError on a
   * malformed prefix, delimiter or cursor: callers validate those at their edge.
   */
  async listNames(bucket: string, opts: NameListOptions = {}): Promise<NamePage> {
    if (!BUCKET_PATTERN.test(bucket)) throw new RangeError('invalid bucket');
    if (opts.delimiter !== undefined && !DELIMITER_PATTERN.test(opts.delimiter)) {
      throw new RangeError('delimiter must be 1-16 printable ASCII characters');
    }
    if (opts.prefix !== undefined && Buffer.from(opts.prefix, 'utf8').toString('utf8') !== opts.prefix) {
      throw new RangeError('prefix is not well-formed Unicode');
    }
    const cursorKey = opts.cursor === undefined ? null : decodeCursor(opts.cursor);
    if (opts.cursor !== undefined && cursorKey === null) throw new RangeError('invalid cursor');
    const limit = clampLimit(opts.limit, MAX_NAME_PAGE, MAX_NAME_PAGE);
    const view = await this.tables.view();
    try {
      return await listNamePage(view, bucket, { ...opts, limit, cursorKey });
    } finally {
      await view.close();
    }
  }

  // ---- Buckets and S3 keys -----------------------------------------------------------------

  /** A bucket exists once created, or while it holds a name. */
  async bucketExists(bucket: string): Promise<boolean> {
    if (!BUCKET_PATTERN.test(bucket)) return false;
    if ((await this.tables.get('buckets', bucket)) !== undefined) return true;
    return this.tables.hasKeyWithPrefix('names', bucketPrefix(bucket));
  }

  /**
   * Every bucket in name order, created ones with their creation time and the ones only names
   * made with that of their first name in key order (a stand-in: S3 clients only show it). Bounded
   * by MAX_BUCKETS; each bucket made by names costs one seek past its names.
   */
  async listBuckets(): Promise<{ bucket: string; createdAt: number }[]> {
    const view = await this.tables.view();
    try {
      const found = new Map<string, number>();
      for await (const [bucket, value] of view.scan('buckets', { limit: MAX_BUCKETS })) {
        found.set(bucket, decodeBucket(value));
      }
      let gte = '';
      while (found.size < MAX_BUCKETS) {
        let next: [string, string] | undefined;
        for await (const row of view.range('names', { gte, prefix: '', limit: 1 })) next = row;
        if (next === undefined) break;
        const bucket = next[0].slice(0, next[0].indexOf('/'));
        if (!found.has(bucket)) found.set(bucket, decodeName(next[1]).updatedAt);
        gte = prefixEnd(bucketPrefix(bucket));
      }
      return [...found.entries()]
        .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
        .map(([bucket, createdAt]) => ({ bucket, createdAt }));
    } finally {
      await view.close();
    }
  }

  async getS3Key(accessKeyId: string): Promise<S3KeyRecord | null> {
    if (!ACCESS_KEY_ID_PATTERN.test(accessKeyId)) return null;
    const raw = await this.tables.get('s3keys', accessKeyId);
    return raw === undefined ? null : decodeS3Key(raw);
  }

  /** Access key ids with their creation time; never the secrets. */
  async listS3Keys(): Promise<{ accessKeyId: string; createdAt: number }[]> {
    const view = await this.tables.view();
    try {
      const keys: { accessKeyId: string; createdAt: number }[] = [];
      for await (const [accessKeyId, value] of view.scan('s3keys', { limit: MAX_PAGE })) {
        keys.push({ accessKeyId, createdAt: decodeS3Key(value).createdAt });
      }
      return keys;
    } finally {
      await view.close();
    }
  }

  /**
   * One bounded step of the sweep for named content no name took: objects with a content id
   * (`c<sha256>`, reserved for names) that no name refers to and that were created before
   * `createdBefore`. Such an object is what an upload for a name leaves when its name was never
   * committed (its leader died between the two commits). `next` as in underReplicated.
   */
  async unnamedContent(opts: {
    after?: string;
    createdBefore: number;
    scanLimit?: number;
  }): Promise<Page<ObjectView>> {
    const scanLimit = clampLimit(opts.scanLimit, 1000, MAX_SCAN);
    const view = await this.tables.view();
    try {
      const items: ObjectView[] = [];
      let lastId: string | null = null;
      let scanned = 0;
      let more = false;
      const after = opts.after !== undefined && opts.after >= 'c' ? opts.after : undefined;
      for await (const [id, value] of view.scan('objects', {
        prefix: 'c',
        ...(after !== undefined ? { after } : {}),
        limit: scanLimit + 1,
      })) {
        if (scanned === scanLimit) {
          more = true;
          break;
        }
        scanned++;
        lastId = id;
        if (!CONTENT_ID.test(id)) continue;
        const record = decodeObject(value);
        if (record.createdAt >= opts.createdBefore) continue;
        if ((await view.get('refs', id)) !== undefined) continue;
        items.push({ id, ...record });
      }
      return { items, next: more ? lastId : null };
    } finally {
      await view.close();
    }
  }

  /**
   * One bounded step of the under-replication scan: objects (in id order, after `after`) with
   * fewer than `minLive` replicas on nodes in state `up`. Repair is level-triggered: the leader
   * walks the whole table step by step, following `next` until it is null, then starts over.
   * `next` is set whenever the step stopped before the end of the table.
   */
  async underReplicated(opts: UnderReplicatedOptions = {}): Promise<Page<UnderReplicatedObject>> {
    const scanLimit = clampLimit(opts.scanLimit, 1000, MAX_SCAN);
    const limit = clampLimit(opts.limit, 100, MAX_PAGE);
    const minLive = opts.minLive ?? REPLICATION_FACTOR;
    const view = await this.tables.view();
    try {
      const up = new Set<string>();
      for await (const [nodeId, value] of view.scan('nodes')) {
        if (decodeNode(value).state === 'up') up.add(nodeId);
      }
      const items: UnderReplicatedObject[] = [];
      let scanned = 0;
      let lastId: string | null = null;
      let more = false;
      for await (const [id, value] of view.scan('objects', { after: opts.after, limit: scanLimit + 1 })) {
        if (scanned === scanLimit || items.length === limit) {
          more = true;
          break;
        }
        scanned++;
        lastId = id;
        const record = decodeObject(value);
        const liveReplicas = record.replicas.filter((n) => up.has(n));
        if (liveReplicas.length < minLive) items.push({ object: { id, ...record }, liveReplicas });
      }
      return { items, next: more ? lastId : null };
    } finally {
      await view.close();
    }
  }
}
