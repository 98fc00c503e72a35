// A restore's memory does not grow with the snapshot: classic-level frees a written batch's native
// copy of its rows only when V8 collects the batch's object, which a restore seldom makes it do,
// so without the tables' collections (src/metadata/batchMemory.ts) every batch written piled up
// outside the heap. Real LevelDB in a temp folder, in a child process run as a manager runs (the
// launcher's heap flags and MALLOC_ARENA_MAX); its anonymous RSS is read from /proc (Linux).

import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { CHILD_ENV, HEAP_FLAGS } from '../../src/cli/localProcess.ts';
import { collectGarbage } from '../../src/metadata/batchMemory.ts';

const MiB = 1024 * 1024;
/** Rows in the snapshot: eight times what the tables let pile up between two collections. */
const ROW_MIB = 256;
/**
 * Growth allowed: the written batches between two collections (32 MiB), the ones being gathered
 * and written, the decoded chunks, LevelDB's memtables and caches. Without the collections the
 * written batches alone took more than the rows' whole size.
 */
const MOST_GROWTH_MIB = 160;

const folders: string[] = [];
afterEach(async () => {
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

function runChild(dir: string): Promise<{ before: number; peak: number }> {
  const fixture = new URL('./fixtures/restoreMemory.ts', import.meta.url).pathname;
  const child = spawn(process.execPath, [...HEAP_FLAGS, '--import', 'tsx', fixture, dir, String(ROW_MIB)], {
    env: { ...process.env, ...CHILD_ENV },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code === 0) resolve(JSON.parse(out) as { before: number; peak: number });
      else reject(new Error(`restore child exited with ${code}`));
    });
  });
}

describe.runIf(process.platform === 'linux')('a restore of many batches', () => {
  it('holds a bounded share of them in memory', { timeout: 300_000 }, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-restore-memory-'));
    folders.push(dir);
    const { before, peak } = await runChild(dir);
    expect(peak).toBeGreaterThan(before);
    expect((peak - before) / MiB).toBeLessThan(MOST_GROWTH_MIB);
  });
});

describe('collectGarbage', () => {
  it('collects what nothing refers to any more, without --expose-gc', async () => {
    const unreferenced = new WeakRef({ rows: new Array(1000).fill('row') });
    // A WeakRef's target is kept until the job that made it ends.
    await new Promise((resolve) => setImmediate(resolve));
    collectGarbage();
    expect(unreferenced.deref()).toBeUndefined();
  });
});
