// The scrubber against a real blob store on a temp folder: rotten, short and missing files are
// found, removed and reported; a failed report is kept for the next pass; the rate is kept.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { BlobStore } from '../../src/storagenode/blobStore.ts';
import { Scrubber } from '../../src/storagenode/scrubber.ts';

const log = createLogger('scrubber-test', { level: 'silent' });
let dir: string;
let store: BlobStore;

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'imgvault-scrub-'));
  store = await BlobStore.open(dir, { logger: log });
});

afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function put(id: string, size: number): Promise<void> {
  const bytes = randomBytes(size);
  const sha = createHash('sha256').update(bytes).digest('hex');
  expect((await store.writeAtomically(id, Readable.from([bytes]), sha, 1 << 24)).ok).toBe(true);
}

/** Flips one byte in place: same size, other bytes, as a rotten sector would. */
async function rot(id: string): Promise<void> {
  const file = await open(store.blobPath(id), 'r+');
  try {
    const one = Buffer.alloc(1);
    await file.read(one, 0, 1, 10);
    one[0] = one[0]! ^ 0xff;
    await file.write(one, 0, 1, 10);
  } finally {
    await file.close();
  }
}

function scrubber(report: (ids: string[]) => Promise<void>, bytesPerSecond = 1 << 30): Scrubber {
  return new Scrubber({ store, bytesPerSecond, pauseMs: 60_000, report, log });
}

describe('Scrubber', () => {
  it('removes and reports rotten, short and missing blobs, and leaves intact ones alone', async () => {
    for (const id of ['a-intact', 'b-rotten', 'c-short', 'd-missing']) await put(id, 4096);
    await rot('b-rotten');
    await truncate(store.blobPath('c-short'), 100);
    await unlink(store.blobPath('d-missing'));
    const reported: string[][] = [];
    const s = scrubber(async (ids) => {
      reported.push(ids);
    });

    const first = await s.pass();
    expect(first.checked).toBe(4);
    expect(first.lost).toEqual(['b-rotten', 'c-short', 'd-missing']);
    expect(reported).toEqual([['b-rotten', 'c-short', 'd-missing']]);
    for (const id of first.lost) {
      expect((await store.stat(id)).ok).toBe(false);
      await expect(open(store.blobPath(id))).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect((await store.stat('a-intact')).ok).toBe(true);
    expect(store.counters()).toMatchObject({ blobCount: 1, blobBytes: 4096 });

    const second = await s.pass();
    expect(second).toEqual({ checked: 1, bytes: 4096, lost: [] });
    expect(reported).toHaveLength(1);
  });

  it('keeps what it could not report and reports it after the next pass', async () => {
    await put('rotten', 2048);
    await rot('rotten');
    let refuse = true;
    const reported: string[][] = [];
    const s = scrubber(async (ids) => {
      if (refuse) throw new Error('no leader');
      reported.push(ids);
    });
    expect((await s.pass()).lost).toEqual(['rotten']);
    expect(reported).toEqual([]);
    refuse = false;
    expect((await s.pass()).lost).toEqual([]);
    expect(reported).toEqual([['rotten']]);
  });

  it('reads no faster than its rate', async () => {
    for (let i = 0; i < 4; i++) await put(`r-${i}`, 64 * 1024);
    const started = performance.now();
    const summary = await scrubber(async () => {}, 512 * 1024).pass();
    const seconds = (performance.now() - started) / 1000;
    expect(summary.bytes).toBe(256 * 1024);
    // 256 KiB at 512 KiB/s: the last blob is due at 0.5 s.
    expect(seconds).toBeGreaterThanOrEqual(0.45);
  });

  it('stops between two blobs when asked', async () => {
    for (let i = 0; i < 20; i++) await put(`s-${i.toString().padStart(2, '0')}`, 64 * 1024);
    const s = scrubber(async () => {}, 256 * 1024);
    s.start();
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    await s.stop();
    expect(performance.now() - started).toBeLessThan(2_000);
  });
});
