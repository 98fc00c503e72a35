// The scrubber and the read-back checks against a real blob store on a temp folder: rotten, short
// and missing files are found, removed and announced; a whole-blob read of a rotten file is cut
// off, never completed; a failed report to the leader is kept and retried; the rate is kept.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, open, rm, truncate, unlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { BlobStore } from '../../src/storagenode/blobStore.ts';
import { LostCopyReporter } from '../../src/storagenode/lostCopyReporter.ts';
import { Scrubber } from '../../src/storagenode/scrubber.ts';
import { until } from '../helpers/until.ts';
import { flipByte } from './workerHarness.ts';

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

/** One byte of the blob's file flipped in place. */
async function rot(id: string): Promise<void> {
  await flipByte(store.blobPath(id), 10);
}

function scrubber(bytesPerSecond = 1 << 30): Scrubber {
  return new Scrubber({ store, bytesPerSecond, pauseMs: 60_000, log });
}

describe('Scrubber', () => {
  it('removes and announces rotten, short and missing blobs, and leaves intact ones alone', async () => {
    for (const id of ['a-intact', 'b-rotten', 'c-short', 'd-missing']) await put(id, 4096);
    await rot('b-rotten');
    await truncate(store.blobPath('c-short'), 100);
    await unlink(store.blobPath('d-missing'));
    const announced: string[] = [];
    store.onLost((id) => announced.push(id));
    const s = scrubber();

    const first = await s.pass();
    expect(first.checked).toBe(4);
    expect(first.lost).toEqual(['b-rotten', 'c-short', 'd-missing']);
    expect(announced).toEqual(['b-rotten', 'c-short', 'd-missing']);
    for (const id of first.lost) {
      expect((await store.stat(id)).ok).toBe(false);
      await expect(open(store.blobPath(id))).rejects.toMatchObject({ code: 'ENOENT' });
    }
    expect((await store.stat('a-intact')).ok).toBe(true);
    expect(store.counters()).toMatchObject({ blobCount: 1, blobBytes: 4096 });

    const second = await s.pass();
    expect(second).toEqual({ checked: 1, bytes: 4096, lost: [] });
    expect(announced).toHaveLength(3);
  });

  it('cuts off a whole-blob read of a rotten file and removes the blob; a range read is served', async () => {
    await put('rotten-read', 600 * 1024);
    await rot('rotten-read');
    const announced: string[] = [];
    store.onLost((id) => announced.push(id));

    const range = await store.openForRead('rotten-read', { start: 0, end: 99 });
    if (!range.ok) throw new Error(range.error.message);
    let ranged = 0;
    for await (const chunk of range.value.stream) ranged += (chunk as Buffer).byteLength;
    expect(ranged).toBe(100);

    const whole = await store.openForRead('rotten-read');
    if (!whole.ok) throw new Error(whole.error.message);
    let received = 0;
    await expect(
      (async () => {
        for await (const chunk of whole.value.stream) received += (chunk as Buffer).byteLength;
      })(),
    ).rejects.toThrow(/does not match its checksum/);
    expect(received).toBeLessThan(600 * 1024);
    await until('the loss announced', () => announced.length === 1);
    expect(announced).toEqual(['rotten-read']);
    expect((await store.stat('rotten-read')).ok).toBe(false);
  });

  it('serves an intact whole blob completely', async () => {
    await put('fine', 600 * 1024);
    const whole = await store.openForRead('fine');
    if (!whole.ok) throw new Error(whole.error.message);
    const hash = createHash('sha256');
    for await (const chunk of whole.value.stream) hash.update(chunk as Buffer);
    expect(hash.digest('hex')).toBe(whole.value.record.sha256);
  });

  it('walks the index a page at a time and misses nothing across pages', async () => {
    for (let i = 0; i < 7; i++) await put(`p-${i}`, 1024);
    await rot('p-2');
    await rot('p-5');
    const paged = new Scrubber({ store, bytesPerSecond: 1 << 30, pauseMs: 60_000, log, pageSize: 2 });
    const summary = await paged.pass();
    expect(summary.checked).toBe(7);
    expect(summary.lost).toEqual(['p-2', 'p-5']);
  });

  it('reads no faster than its rate', async () => {
    for (let i = 0; i < 4; i++) await put(`r-${i}`, 64 * 1024);
    const started = performance.now();
    const summary = await scrubber(512 * 1024).pass();
    const seconds = (performance.now() - started) / 1000;
    expect(summary.bytes).toBe(256 * 1024);
    // 256 KiB at 512 KiB/s: the last blob is due at 0.5 s.
    expect(seconds).toBeGreaterThanOrEqual(0.45);
  });

  it('stops between two blobs when asked', async () => {
    for (let i = 0; i < 20; i++) await put(`s-${i.toString().padStart(2, '0')}`, 64 * 1024);
    const s = scrubber(256 * 1024);
    s.start();
    await new Promise((r) => setTimeout(r, 300));
    const started = performance.now();
    await s.stop();
    expect(performance.now() - started).toBeLessThan(2_000);
  });
});

describe('LostCopyReporter', () => {
  it('batches the losses, and keeps and retries a report no manager took', async () => {
    const sent: string[][] = [];
    let refuse = true;
    const reporter = new LostCopyReporter({
      report: async (ids) => {
        if (refuse) throw new Error('no leader');
        sent.push(ids);
      },
      log,
      batchDelayMs: 20,
      retryMs: 100,
    });
    try {
      reporter.note('x1');
      reporter.note('x2');
      await new Promise((r) => setTimeout(r, 60));
      expect(sent).toEqual([]);
      expect(reporter.unreported()).toEqual(['x1', 'x2']);
      refuse = false;
      await until('the report sent', () => sent.length === 1);
      expect(sent).toEqual([['x1', 'x2']]);
      expect(reporter.unreported()).toEqual([]);
    } finally {
      await reporter.stop();
    }
  });
});
