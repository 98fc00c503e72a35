// LevelDB maps its table files for reads and unmaps one only when it leaves the table cache, so the
// tables' maxOpenFiles (TABLE_FILES_OPEN) is what bounds the file pages a full scan leaves in the
// manager's RSS (src/metadata/tables.ts). Real LevelDB in a temp folder, with more table files than
// that cache keeps, read whole through the tables' own scan; the mappings are the process's own
// (/proc/self/maps, Linux).

import { randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { MetadataTables, TABLE_FILES_OPEN, type TableOp } from '../../src/metadata/tables.ts';

const folders: string[] = [];
const opened: MetadataTables[] = [];

afterEach(async () => {
  for (const t of opened.splice(0)) await t.close();
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

/** LevelDB keeps maxOpenFiles - 10 table files in its cache (kNumNonTableCacheFiles). */
const CACHED_TABLE_FILES = TABLE_FILES_OPEN - 10;
/** Incompressible rows filling about twice as many 2 MiB table files as the cache keeps. */
const ROW_BYTES = 4096;
const ROWS = Math.ceil((CACHED_TABLE_FILES * 2 * 2 * 1024 * 1024) / ROW_BYTES);

async function mappedTableFiles(dir: string): Promise<number> {
  const maps = await readFile('/proc/self/maps', 'utf8');
  const files = new Set(
    maps
      .split('\n')
      .map((line) => line.slice(line.indexOf('/')))
      .filter((path) => path.startsWith(`${dir}/`) && path.endsWith('.ldb')),
  );
  return files.size;
}

describe.runIf(process.platform === 'linux')('table files mapped by a full scan', () => {
  it('stay within the table cache, however many the tables hold', { timeout: 300_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-mapped-'));
    folders.push(dir);
    let tables = await MetadataTables.open(dir);
    opened.push(tables);
    for (let i = 0; i < ROWS; i += 500) {
      const ops: TableOp[] = [];
      for (let j = i; j < Math.min(i + 500, ROWS); j++) {
        const key = `img-${String(j).padStart(8, '0')}`;
        ops.push({ type: 'put', table: 'objects', key, value: randomBytes(ROW_BYTES / 2).toString('hex') });
      }
      await tables.write(ops, i + 1);
    }
    await tables.close();
    opened.pop();
    tables = await MetadataTables.open(dir);
    opened.push(tables);

    const tableFiles = (await readdir(dir)).filter((name) => name.endsWith('.ldb')).length;
    expect(tableFiles).toBeGreaterThan(CACHED_TABLE_FILES);
    const view = await tables.view();
    let rows = 0;
    let mostMapped = 0;
    try {
      for await (const _ of view.scan('objects')) {
        rows += 1;
        if (rows % 5000 === 0) mostMapped = Math.max(mostMapped, await mappedTableFiles(dir));
      }
    } finally {
      await view.close();
    }
    expect(rows).toBe(ROWS);
    expect(mostMapped).toBeGreaterThan(0);
    // A table evicted from the cache stays mapped while an iterator still reads it, and a
    // background compaction opens its inputs and output through the same cache: a file or two
    // over the cache's size for a moment (65 seen), against every table file without the bound.
    expect(mostMapped).toBeLessThanOrEqual(CACHED_TABLE_FILES + 2);
  });
});
