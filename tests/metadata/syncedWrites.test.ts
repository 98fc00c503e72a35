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
import { MetadataTables, type TableOp } from '../../src/metadata/tables.ts';

const folders: string[] = [];
const opened: MetadataTables[] = [];

afterEach(async () => {
  vi.restoreAllMocks();
  for (const t of opened.splice(0)) await t.close();
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function openTables(synced: boolean): Promise<MetadataTables> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-synced-'));
  folders.push(dir);
  const tables = await MetadataTables.open(dir);
  opened.push(tables);
  await tables.syncWrites(synced);
  return tables;
}

/** Records the options of every batch classic-level writes (chained and array batches) from now on. */
async function watchBatches(): Promise<{ sync: boolean; ops: number }[]> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-synced-probe-'));
  folders.push(dir);
  const probe = new ClassicLevel<string, string>(dir);
  await probe.open();
  const chained = Object.getPrototypeOf(probe.batch()) as {
    _write(options: { sync?: boolean }): Promise<void>;
  };
  await probe.close();
  const seen: { sync: boolean; ops: number }[] = [];
  const write = chained._write;
  vi.spyOn(chained, '_write').mockImplementation(function (this: { length: number }, options) {
    seen.push({ sync: options.sync === true, ops: this.length });
    return write.call(this, options);
  });
  const proto = ClassicLevel.prototype as unknown as {
    _batch(operations: unknown[], options: { sync?: boolean }): Promise<void>;
  };
  const batch = proto._batch;
  vi.spyOn(proto, '_batch').mockImplementation(function (this: unknown, operations, options) {
    seen.push({ sync: options.sync === true, ops: operations.length });
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
    for await (const chunk of source.snapshotChunks(64 * 1024)) streamed.push(chunk);
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
      // 2,500 rows in batches of at most 1,000, then the flip: every one fsynced.
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
    // At least one batch of 1,000 rows written, then deleted again: all of it synced.
    expect(seen.filter((b) => b.ops === 1000).length).toBeGreaterThanOrEqual(2);
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
