import { createHash } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { mountTmpfs, unmount } from '../storagenode/workerHarness.ts';

// A real 1x1 PNG: the signature, IHDR, IDAT and IEND chunks.
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
);

function chunked(buf: Buffer, chunk = 3): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buf.length; i += chunk) parts.push(buf.subarray(i, i + chunk));
  return Readable.from(parts);
}

describe('StagingArea', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-staging-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stages an image with its size, sha256 and sniffed type', async () => {
    const staging = await StagingArea.open(dir);
    const result = await staging.stage(chunked(PNG), 1024);
    expect(result.ok).toBe(true);
    if (!result.ok) return;
    expect(result.staged.size).toBe(PNG.length);
    expect(result.staged.sha256).toBe(createHash('sha256').update(PNG).digest('hex'));
    expect(result.staged.contentType).toBe('image/png');
    expect(await readFile(result.staged.path)).toEqual(PNG);
  });

  it('refuses content that is not an image and leaves nothing behind', async () => {
    const staging = await StagingArea.open(dir);
    const result = await staging.stage(
      Readable.from([Buffer.from('<svg xmlns="http://www.w3.org/2000/svg"/>')]),
      1024,
    );
    expect(result).toMatchObject({ ok: false, error: { code: 'NotAnImage' } });
    expect(await readdir(dir)).toEqual([]);
  });

  it('refuses an empty body', async () => {
    const staging = await StagingArea.open(dir);
    expect(await staging.stage(Readable.from([]), 1024)).toMatchObject({
      ok: false,
      error: { code: 'EmptyBody' },
    });
    expect(await readdir(dir)).toEqual([]);
  });

  it('stops reading at the size limit and removes the partial file', async () => {
    const staging = await StagingArea.open(dir);
    let produced = 0;
    const endless = new Readable({
      read() {
        produced += 1024;
        this.push(
          produced === 1024 ? Buffer.concat([PNG, Buffer.alloc(1024 - PNG.length)]) : Buffer.alloc(1024),
        );
      },
    });
    const result = await staging.stage(endless, 10_000);
    expect(result).toMatchObject({ ok: false, error: { code: 'TooLarge', limit: 10_000 } });
    expect(produced).toBeLessThan(100_000);
    expect(await readdir(dir)).toEqual([]);
  });

  it('sweeps files left by a crash when opened', async () => {
    await writeFile(join(dir, 'left-by-crash.part'), 'x');
    await StagingArea.open(dir);
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('StagingArea on a full disk', () => {
  // A real full disk: a 64 KiB tmpfs. Mounting needs root with CAP_SYS_ADMIN; without it the test
  // is skipped rather than faked.
  let root = '';
  let mounted = false;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-staging-full-'));
    mounted = mountTmpfs(root, '64k');
  });
  afterEach(async () => {
    if (mounted) unmount(root);
    await rm(root, { recursive: true, force: true });
  });

  it('refuses with InsufficientStorage and leaves no partial file', async (ctx) => {
    if (!mounted) ctx.skip();
    const staging = await StagingArea.open(join(root, 'staging'));
    const big = Buffer.concat([PNG, Buffer.alloc(512 * 1024, 1)]);
    const result = await staging.stage(chunked(big, 16 * 1024), 1024 * 1024);
    expect(result).toEqual({
      ok: false,
      error: { code: 'InsufficientStorage', message: "the leader's staging disk is full" },
    });
    expect(await readdir(join(root, 'staging'))).toEqual([]);
  });
});
