// The registration inventory spooled to the leader's disk: read back whole and in order, refused
// out of order with nothing left behind, and swept at start-up.

import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InventoryOutOfOrder, InventorySpool } from '../../src/manager/inventorySpool.ts';
import type { InventoryLine } from '../../src/protocol/workerSchemas.ts';

let dir: string;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'imgvault-spool-'));
});

afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const line = (i: number): InventoryLine => ({
  id: `img-${i.toString().padStart(6, '0')}`,
  size: i,
  sha256: i.toString(16).padStart(64, '0'),
});

async function* lines(ids: number[]): AsyncGenerator<InventoryLine> {
  for (const i of ids) yield line(i);
}

async function readAll(spool: InventorySpool): Promise<InventoryLine[]> {
  const out: InventoryLine[] = [];
  for await (const l of spool.lines()) out.push(l);
  return out;
}

describe('InventorySpool', () => {
  it('reads back every line in order, as often as asked, and removes its file', async () => {
    const ids = Array.from({ length: 20_000 }, (_, i) => i);
    const spool = await InventorySpool.write(dir, 'w1', lines(ids));
    expect(spool.count).toBe(20_000);
    const first = await readAll(spool);
    expect(first).toHaveLength(20_000);
    expect(first[12_345]).toEqual(line(12_345));
    expect(await readAll(spool)).toEqual(first);
    await spool.remove();
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses ids out of ascending order and leaves no file', async () => {
    await expect(InventorySpool.write(dir, 'w1', lines([1, 2, 2]))).rejects.toBeInstanceOf(
      InventoryOutOfOrder,
    );
    await expect(InventorySpool.write(dir, 'w1', lines([5, 3]))).rejects.toThrow(/must ascend/);
    expect(await readdir(dir)).toEqual([]);
  });

  it("removes a failed sender's partial file", async () => {
    async function* broken(): AsyncGenerator<InventoryLine> {
      yield line(1);
      throw new Error('connection reset');
    }
    await expect(InventorySpool.write(dir, 'w1', broken())).rejects.toThrow('connection reset');
    expect(await readdir(dir)).toEqual([]);
  });

  it('sweeps what a crash left at start-up', async () => {
    await writeFile(path.join(dir, 'w1.abc.ndjson'), '{"id":"x"}\n');
    await InventorySpool.prepare(dir);
    expect(await readdir(dir)).toEqual([]);
  });
});
