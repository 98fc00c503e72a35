// The trivial replicated state machine of this stage: a key -> value map. The object and node
// tables of later stages live beside it with the same recording discipline.

import { ClassicLevel } from 'classic-level';
import { z } from 'zod';
import { type AppliedResult, type StateMachine, snapshotAsChunks } from '../consensus/stateMachine.ts';
import type { Entry, Index } from '../consensus/types.ts';
import { createLogger, type Logger } from '../logging.ts';
import { markCleanStop, takeCleanStopMarker } from './cleanStop.ts';

export const KV_KEY_MAX = 256;
export const KV_VALUE_MAX = 64 * 1024;

export const kvKeySchema = z.string().min(1).max(KV_KEY_MAX);

export const kvPutCommandSchema = z.object({
  op: z.literal('put'),
  key: kvKeySchema,
  value: z.string().max(KV_VALUE_MAX),
  requestId: z.string().min(1).max(128),
});
export type KvPutCommand = z.infer<typeof kvPutCommandSchema>;

export interface KvPutResult {
  key: string;
  index: Index;
}

const snapshotSchema = z.object({ applied: z.number().int().min(0), kv: z.record(z.string(), z.string()) });

const APPLIED_KEY = 'm:applied';
const VALUE_PREFIX = 'v:';
/** The first key after every `v:` key. */
const VALUE_PREFIX_END = 'v;';
/** Rows one LevelDB read of a streamed snapshot hands over, and characters gathered per chunk. */
const SNAPSHOT_ROWS_PER_READ = 1000;
const SNAPSHOT_CHUNK_CHARS = 256 * 1024;
/** How long applied changes wait to join one batch, and how many rows make a batch start at once. */
const WRITE_BEHIND_MS = 20;
const WRITE_BEHIND_MAX_OPS = 2048;

type BatchOp = { type: 'del'; key: string } | { type: 'put'; key: string; value: string };

/**
 * Durability: the map lives in its own LevelDB (`dir`), and every batch of applied entries is one
 * LevelDB batch holding both the changes and the new applied index. Those batches are not fsynced:
 * the Raft log is the durable truth (synced before anything is applied). A power cut may tear
 * LevelDB's own log (keep a later batch, drop an earlier one), so after any unclean stop the map
 * is emptied and the driver restores it from the last Raft snapshot and re-applies the log. Keeping the map out of
 * the log's database keeps the two stores' owners independent.
 */
export class KvStateMachine implements StateMachine {
  private readonly map = new Map<string, string>();
  private applied: Index = 0;
  /** Changes applied and not yet handed to LevelDB (see apply). */
  private queued: BatchOp[] = [];
  /** The applied index of the last batch handed to LevelDB (what it holds once that is written). */
  private handedOver: Index = 0;
  private writeTimer: NodeJS.Timeout | null = null;
  private writeSoon: NodeJS.Immediate | null = null;
  /** The batch LevelDB is writing. */
  private writing: Promise<void> | null = null;
  /** Why a batch failed: every later apply throws it, and close marks no clean stop. */
  private writeFailure: unknown = null;
  /** StateMachine.onWriteFailure's listener: the Raft driver, which stops on it. */
  private failureListener: ((err: unknown) => void) | null = null;

  private constructor(
    private readonly db: ClassicLevel<string, string>,
    private readonly dir: string,
    private readonly log: Logger,
  ) {}

  /** After an unclean stop the map may be torn (cleanStop.ts): it is emptied and rebuilt from the Raft log. */
  static async open(dir: string, log: Logger = createLogger('kv')): Promise<KvStateMachine> {
    const db = new ClassicLevel<string, string>(dir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
    await db.open();
    const sm = new KvStateMachine(db, dir, log);
    for await (const [key, value] of db.iterator()) {
      if (key === APPLIED_KEY) sm.applied = sm.handedOver = Number(value);
      else if (key.startsWith(VALUE_PREFIX)) sm.map.set(key.slice(VALUE_PREFIX.length), value);
    }
    const clean = await takeCleanStopMarker(dir);
    if (!clean && sm.applied > 0) await sm.restore('', 0);
    return sm;
  }

  appliedIndex(): Index {
    return this.applied;
  }

  get(key: string): string | undefined {
    return this.map.get(key);
  }

  size(): number {
    return this.map.size;
  }

  /**
   * Returns before the changes are written, or even handed to LevelDB: reads are served from the
   * map, which already holds them, and the batches exist only so a clean restart need not replay
   * the log (etcd answers once bbolt is changed in memory, its backend commits every 100 ms). The
   * applies of WRITE_BEHIND_MS are joined into one batch with the applied index they reach, so at
   * concurrency 1 a commit no longer costs every manager a LevelDB call and its threadpool round
   * trip. One batch at a time, in order; past WRITE_BEHIND_MAX_OPS queued rows an apply waits for
   * the batch in flight, which bounds the memory.
   */
  async apply(entries: Entry[]): Promise<AppliedResult[]> {
    if (entries.length === 0) return [];
    while (this.queued.length >= WRITE_BEHIND_MAX_OPS && this.writing !== null) await this.writing;
    if (this.writeFailure !== null) throw this.writeFailure;
    const results: AppliedResult[] = [];
    let expected = this.applied + 1;
    for (const entry of entries) {
      if (entry.index !== expected) {
        throw new Error(`kv state machine: entry ${entry.index} applied out of order (expected ${expected})`);
      }
      expected++;
      if (entry.type !== 'normal' || entry.data === '') continue;
      const parsed = parseCommand(entry.data);
      if (!parsed.ok) {
        results.push({ index: entry.index, requestId: parsed.requestId, result: { error: parsed.error } });
        continue;
      }
      const cmd = parsed.command;
      this.map.set(cmd.key, cmd.value);
      this.queued.push({ type: 'put', key: VALUE_PREFIX + cmd.key, value: cmd.value });
      results.push({
        index: entry.index,
        requestId: cmd.requestId,
        result: { key: cmd.key, index: entry.index },
      });
    }
    this.applied = entries[entries.length - 1]!.index;
    this.scheduleWrite();
    return results;
  }

  /** Arms the next batch: after WRITE_BEHIND_MS, or in the next turn once the queue is full. */
  private scheduleWrite(): void {
    // The batch in flight arms the next when it ends.
    if (this.writing !== null || this.writeFailure !== null) return;
    if (this.queued.length >= WRITE_BEHIND_MAX_OPS) {
      if (this.writeTimer !== null) clearTimeout(this.writeTimer);
      this.writeTimer = null;
      // Still a turn later: the answers the apply's results resolve go out before its LevelDB call.
      this.writeSoon ??= setImmediate(() => this.startWrite());
    } else if (this.writeTimer === null && this.writeSoon === null) {
      this.writeTimer = setTimeout(() => this.startWrite(), WRITE_BEHIND_MS);
      // A process that exits without close() stops uncleanly: the map is rebuilt from the log.
      this.writeTimer.unref();
    }
  }

  /** Hands every queued change and the applied index they reach to LevelDB as one batch. */
  private startWrite(): void {
    if (this.writeTimer !== null) clearTimeout(this.writeTimer);
    if (this.writeSoon !== null) clearImmediate(this.writeSoon);
    this.writeTimer = null;
    this.writeSoon = null;
    if (this.writing !== null || this.writeFailure !== null || this.applied === this.handedOver) return;
    const ops = this.queued;
    this.queued = [];
    ops.push({ type: 'put', key: APPLIED_KEY, value: String(this.applied) });
    this.handedOver = this.applied;
    const writing = this.db.batch(ops).then(
      () => {},
      (err: unknown) => this.writeFailed(err ?? new Error('kv: a batch write failed')),
    );
    this.writing = writing;
    void writing.finally(() => {
      if (this.writing !== writing) return;
      this.writing = null;
      if (this.applied !== this.handedOver) this.scheduleWrite();
    });
  }

  /** StateMachine.flush: everything applied so far is written; throws if a batch failed. */
  async flush(): Promise<void> {
    for (;;) {
      if (this.writeFailure !== null) throw this.writeFailure;
      if (this.writing !== null) await this.writing;
      else if (this.applied !== this.handedOver) this.startWrite();
      else return;
    }
  }

  /** StateMachine.onWriteFailure: a batch `apply` returned before failed. */
  onWriteFailure(onFailure: (err: unknown) => void): void {
    this.failureListener = onFailure;
    if (this.writeFailure !== null) onFailure(this.writeFailure);
  }

  private writeFailed(err: unknown): void {
    this.writeFailure = err;
    this.log.error(
      { event: 'kv.write_failed', err, applied: this.applied },
      'a kv batch failed after its entries were answered: the Raft driver stops',
    );
    this.failureListener?.(err);
  }

  async snapshot(): Promise<string> {
    return JSON.stringify({ applied: this.applied, kv: Object.fromEntries(this.map) });
  }

  /**
   * The same JSON as `snapshot`, read from a LevelDB snapshot taken before this returns and handed
   * out a few hundred KiB at a time: one JSON.stringify of the whole map held every manager's loop
   * for 65-150 ms at 50,000 keys, and all three hit the same applied index together, so every
   * commit in flight waited for it (docs/measurements.md, "The p99 at concurrency 64: the KV
   * snapshots"). The driver flushes before it calls this, so LevelDB holds exactly `applied`.
   */
  snapshotChunks(): AsyncIterable<Uint8Array> {
    // The driver flushes first; a caller that did not, or after a batch failed (LevelDB then lacks
    // entries the map holds), gets the map's copy, exact at `applied`.
    if (this.writing !== null || this.applied !== this.handedOver || this.writeFailure !== null)
      return snapshotAsChunks(this.snapshot());
    const snap = this.db.snapshot();
    const rows = streamKv(this.db, snap, this.applied);
    let started = false;
    // A generator returned before its first next() never runs its body, so its finally would not
    // close the snapshot: a consumer that fails before reading (its file would not open) returns it.
    const stream: AsyncIterableIterator<Uint8Array> = {
      next: () => {
        started = true;
        return rows.next();
      },
      return: async (value?: unknown) => {
        if (!started) await snap.close();
        started = true;
        return rows.return(value);
      },
      [Symbol.asyncIterator]: () => stream,
    };
    return stream;
  }

  async restore(data: string, index: Index): Promise<void> {
    // '' is the empty state of a founding member's bootstrap snapshot.
    const parsed = data === '' ? { applied: 0, kv: {} } : snapshotSchema.parse(JSON.parse(data));
    await this.flush();
    // One batch deletes the old state and writes the new, so a crash never leaves a mixture.
    const ops: BatchOp[] = [];
    for (const key of this.map.keys()) ops.push({ type: 'del', key: VALUE_PREFIX + key });
    for (const [key, value] of Object.entries(parsed.kv))
      ops.push({ type: 'put', key: VALUE_PREFIX + key, value });
    ops.push({ type: 'put', key: APPLIED_KEY, value: String(index) });
    await this.db.batch(ops);
    this.map.clear();
    for (const [key, value] of Object.entries(parsed.kv)) this.map.set(key, value);
    this.applied = this.handedOver = index;
  }

  async close(): Promise<void> {
    // A failed batch is already reported (onWriteFailure) and leaves no clean-stop marker below.
    await this.flush().catch(() => {});
    await this.db.close();
    // A failed batch may have left a torn record behind: the map is rebuilt at the next open.
    if (this.writeFailure === null) await markCleanStop(this.dir);
  }
}

/** The JSON of `snapshot`, from a LevelDB snapshot, in chunks of about SNAPSHOT_CHUNK_CHARS. */
async function* streamKv(
  db: ClassicLevel<string, string>,
  snap: ReturnType<ClassicLevel<string, string>['snapshot']>,
  applied: Index,
): AsyncGenerator<Uint8Array> {
  const it = db.iterator({ gte: VALUE_PREFIX, lt: VALUE_PREFIX_END, snapshot: snap });
  try {
    let text = `{"applied":${applied},"kv":{`;
    let first = true;
    for (;;) {
      const rows = await it.nextv(SNAPSHOT_ROWS_PER_READ);
      if (rows.length === 0) break;
      for (const [key, value] of rows) {
        text += `${first ? '' : ','}${JSON.stringify(key.slice(VALUE_PREFIX.length))}:${JSON.stringify(value)}`;
        first = false;
      }
      if (text.length >= SNAPSHOT_CHUNK_CHARS) {
        yield Buffer.from(text, 'utf8');
        text = '';
      }
    }
    yield Buffer.from(`${text}}}`, 'utf8');
  } finally {
    await it.close();
    await snap.close();
  }
}

type ParsedCommand =
  | { ok: true; command: KvPutCommand }
  | { ok: false; requestId: string | null; error: string };

function parseCommand(data: string): ParsedCommand {
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return { ok: false, requestId: null, error: 'command is not JSON' };
  }
  const result = kvPutCommandSchema.safeParse(raw);
  if (result.success) return { ok: true, command: result.data };
  const requestId =
    typeof raw === 'object' && raw !== null && typeof (raw as { requestId?: unknown }).requestId === 'string'
      ? (raw as { requestId: string }).requestId
      : null;
  return { ok: false, requestId, error: result.error.message };
}
