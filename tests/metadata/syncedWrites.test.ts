// Tables opened with synced writes (MetadataOpenOptions.syncedWrites) are kept after a power cut
// without a rebuild, so every batch they take must be fsynced on its own: LevelDB closes its log
// at a memtable switch without an fsync, and a later synced write does not make an earlier
// unsynced one durable (src/metadata/tables.ts, META_SYNCED_WRITES). Real LevelDB in temp folders;
// the writes are observed on classic-level's own batch methods, which still run.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Command } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { MetadataTables, type TableOp } from '../../src/metadata/tables.ts';
import { EntryLog, recordCmd, registerCmd, SHA_A, SHA_B } from './metadataFixture.ts';

const folders: string[] = [];
const opened: (MetadataTables | MetadataStateMachine)[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const t of opened.splice(0)) await t.close();
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function openMachine(): Promise<MetadataStateMachine> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-synced-'));
  folders.push(dir);
  const sm = await MetadataStateMachine.open(dir, undefined, { syncedWrites: true });
  opened.push(sm);
  return sm;
}

async function openTables(synced: boolean): Promise<MetadataTables> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-synced-'));
  folders.push(dir);
  // Batches of a few hundred rows, so the restores below write several.
  const tables = await MetadataTables.open(dir, { restoreBatchBytes: 16 * 1024 });
  opened.push(tables);
  await tables.syncWrites(synced);
  return tables;
}

/** Records the options of every batch classic-level writes (chained and array batches) from now on. */
async function watchBatches(): Promise<{ sync: boolean; ops: number; rows: boolean }[]> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-synced-probe-'));
  folders.push(dir);
  const probe = new ClassicLevel<string, string>(dir);
  await probe.open();
  const chained = Object.getPrototypeOf(probe.batch()) as {
    _write(options: { sync?: boolean }): Promise<void>;
  };
  await probe.close();
  // `rows`: a chained batch, as the restore writes its rows (the clears are array batches).
  const seen: { sync: boolean; ops: number; rows: boolean }[] = [];
  const write = chained._write;
  vi.spyOn(chained, '_write').mockImplementation(function (this: { length: number }, options) {
    seen.push({ sync: options.sync === true, ops: this.length, rows: true });
    return write.call(this, options);
  });
  const proto = ClassicLevel.prototype as unknown as {
    _batch(operations: unknown[], options: { sync?: boolean }): Promise<void>;
  };
  const batch = proto._batch;
  vi.spyOn(proto, '_batch').mockImplementation(function (this: unknown, operations, options) {
    seen.push({ sync: options.sync === true, ops: operations.length, rows: false });
    return batch.call(this, operations, options);
  });
  return seen;
}

async function* replay(chunks: Buffer[]): AsyncGenerator<Buffer> {
  yield* chunks;
}

const objectRows = (n: number): TableOp[] =>
  Array.from({ length: n }, (_, i) => ({
    type: 'put' as const,
    table: 'objects' as const,
    key: `img-${String(i).padStart(6, '0')}`,
    value: JSON.stringify({ n: i }),
  }));

describe('tables with synced writes', () => {
  it('write a restored snapshot, streamed or whole, in synced batches only', async () => {
    const source = await openTables(false);
    await source.write(objectRows(2500), 7);
    const streamed: Buffer[] = [];
    for await (const chunk of source.snapshotChunks(8 * 1024)) streamed.push(chunk);
    const whole = await source.snapshot();
    const expected = await source.digest();

    for (const restore of [
      (t: MetadataTables) => t.restoreChunks(replay(streamed), 7),
      (t: MetadataTables) => t.restore(whole, 7),
    ]) {
      const target = await openTables(true);
      await target.write(objectRows(10), 3);
      const seen = await watchBatches();
      await restore(target);
      vi.restoreAllMocks();
      expect(await target.digest()).toEqual(expected);
      // 2,500 rows in batches of 16 KiB, then the flip: every one fsynced.
      expect(seen.filter((b) => b.ops > 0).length).toBeGreaterThanOrEqual(4);
      expect(seen.filter((b) => !b.sync && b.ops > 0)).toEqual([]);
    }
  });

  it('clear the leftovers of a failed restore in synced batches before writing that generation again', async () => {
    const source = await openTables(false);
    await source.write(objectRows(1500), 5);
    const streamed: Buffer[] = [];
    for await (const chunk of source.snapshotChunks(16 * 1024)) streamed.push(chunk);

    const target = await openTables(true);
    async function* cutShort(): AsyncGenerator<Buffer> {
      yield* streamed.slice(0, -1);
      throw new Error('connection lost');
    }
    const seen = await watchBatches();
    await expect(target.restoreChunks(cutShort(), 5)).rejects.toThrow('connection lost');
    // Batches of rows written, then deleted again: all of it synced.
    const ops = (rows: boolean) => seen.filter((b) => b.rows === rows).reduce((n, b) => n + b.ops, 0);
    expect(seen.filter((b) => b.rows && b.ops > 0).length).toBeGreaterThanOrEqual(2);
    expect(ops(true)).toBeGreaterThanOrEqual(1000);
    expect(ops(false)).toBe(ops(true));
    expect(seen.filter((b) => !b.sync && b.ops > 0)).toEqual([]);
    expect(target.appliedIndex()).toBe(0);
    await target.restoreChunks(replay(streamed), 5);
    vi.restoreAllMocks();
    expect(await target.digest()).toEqual(await source.digest());
  });

  it('without synced writes, restore batches stay unsynced (the driver rebuilds torn tables)', async () => {
    const source = await openTables(false);
    await source.write(objectRows(1200), 4);
    const target = await openTables(false);
    const seen = await watchBatches();
    await target.restore(await source.snapshot(), 4);
    vi.restoreAllMocks();
    // The row batches are not synced; the flip is.
    expect(seen.filter((b) => !b.sync).length).toBeGreaterThanOrEqual(2);
    expect(seen.filter((b) => b.sync).length).toBe(1);
  });
});

const putName = (bucket: string, key: string, sha256: string, objectId?: string): Command => ({
  type: 'putName',
  bucket,
  key,
  sha256,
  ...(objectId ? { objectId } : {}),
  mtime: 5000,
  at: 6000,
});

/**
 * Commands that read what the ones before them in the same call wrote: a bucket emptied and
 * deleted, one refused while a name is still in it, content named then released, a node registered
 * and then holding an object, an undecodable entry and entries without a command among them.
 */
function readsItsOwnWrites(log: EntryLog) {
  const bucket = (type: 'createBucket' | 'deleteBucket', name: string): Command =>
    type === 'createBucket' ? { type, bucket: name, at: 7000 } : { type, bucket: name };
  return [
    log.command(registerCmd('w1')),
    log.command(registerCmd('w2')),
    log.command(recordCmd(`c${SHA_A}`, ['w1', 'w2'], 100, SHA_A)),
    log.command(recordCmd(`c${SHA_B}`, ['w1', 'w2'], 200, SHA_B)),
    log.command(bucket('createBucket', 'photos')),
    log.command(putName('photos', 'a.png', SHA_A, `c${SHA_A}`)),
    log.command(putName('photos', 'b.png', SHA_B, `c${SHA_B}`)),
    log.empty(),
    log.command(bucket('deleteBucket', 'photos')),
    log.command({ type: 'deleteName', bucket: 'photos', key: 'a.png' }),
    log.raw('{"type":"noSuchCommand"}'),
    log.command({ type: 'deleteName', bucket: 'photos', key: 'b.png' }),
    log.command({ type: 'deleteObject', id: `c${SHA_B}` }),
    log.command(bucket('deleteBucket', 'photos')),
    log.confChange(),
    log.command(bucket('deleteBucket', 'photos')),
    log.command(putName('raw', 'x', SHA_A)),
    log.command(bucket('createBucket', 'raw')),
  ];
}

describe('an apply call with synced writes', () => {
  it('writes all its entries in one synced batch, with the tables and results of one at a time', async () => {
    const log = new EntryLog();
    const entries = readsItsOwnWrites(log);
    const oneByOne = await openMachine();
    const expected = [];
    for (const entry of entries) expected.push(...(await oneByOne.apply([entry])));

    let results: typeof expected = [];
    // Whole, and split where the second call deletes names and a bucket the first one wrote.
    for (const calls of [[entries], [entries.slice(0, 8), entries.slice(8)]]) {
      const together = await openMachine();
      const seen = await watchBatches();
      results = [];
      for (const call of calls) results.push(...(await together.apply(call)));
      vi.restoreAllMocks();
      expect(seen.filter((b) => b.ops > 0)).toEqual(
        calls.map(() => ({ sync: true, ops: expect.any(Number), rows: expect.any(Boolean) })),
      );
      expect(results).toEqual(expected);
      expect(together.appliedIndex()).toBe(entries.length);
      expect(await together.tableDigest()).toEqual(await oneByOne.tableDigest());
      expect((await together.listNodes()).map((n) => n.nodeId)).toEqual(['w1', 'w2']);
    }
    // The sequence met both outcomes of the checks that read earlier writes, or it tested little.
    const codes = results.map(({ result }) => {
      const r = result as { ok: boolean; code?: string };
      return r.ok ? 'ok' : r.code;
    });
    expect(codes).toContain('BucketNotEmpty');
    expect(codes).toContain('BucketNotFound');
    expect(codes).toContain('InvalidCommand');
  });
});
