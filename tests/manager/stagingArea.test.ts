import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { withMinimumRate } from '../../src/http/requestBody.ts';
import { BranchStalled } from '../../src/manager/chunkFanOut.ts';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import { StagingArea } from '../../src/manager/stagingArea.ts';
import { collectGarbage } from '../../src/metadata/batchMemory.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { until } from '../helpers/until.ts';
import { mountTmpfs, unmount } from '../storagenode/workerHarness.ts';
import { type TiffOptions, tiffFile } from './tiffFiles.ts';

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

/** A format's leading bytes (file-type's detection rules, from real files) then zeros past the sniff. */
function rawPrefix(head: number[] | string): Buffer {
  const start = typeof head === 'string' ? Buffer.from(head, 'latin1') : Buffer.from(head);
  return Buffer.concat([start, Buffer.alloc(8192 - start.length)]);
}

const CR2 = [0x49, 0x49, 0x2a, 0x00, 0x10, 0x00, 0x00, 0x00, 0x43, 0x52, 0x02, 0x00];
const NEF = [0x4d, 0x4d, 0x00, 0x2a, 0x00, 0x00, 0x00, 0x08, 0x00, 0x1c, 0x00, 0xfe];
const CR3 = Buffer.concat([
  Buffer.from([0x00, 0x00, 0x00, 0x18]),
  Buffer.from('ftypcrx \0\0\0\x01crx isom', 'latin1'),
]);
const ORF = [0x49, 0x49, 0x52, 0x4f, 0x08, 0x00, 0x00, 0x00, 0x18];
const ORF_RS = [0x49, 0x49, 0x52, 0x53, 0x08, 0x00, 0x00, 0x00];
const RW2 = [0x49, 0x49, 0x55, 0x00, 0x18, 0x00, 0x00, 0x00, 0x88, 0xe7, 0x74, 0xd8];
const RW1 = [0x49, 0x49, 0x55, 0x00, 0x08, 0x00, 0x00, 0x00];
const RAF = 'FUJIFILMCCD-RAW 0201FF383501';
const BYTE = 1;

describe('StagingArea type detection', () => {
  let dir: string;
  let staging: StagingArea;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-staging-types-'));
    staging = await StagingArea.open(dir);
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  async function stagedType(bytes: Buffer): Promise<string> {
    const result = await staging.stage(chunked(bytes, 64 * 1024), 8 * 1024 * 1024);
    if (!result.ok) return result.error.code;
    // Buffer.equals: a deep toEqual over 720 KB is needlessly slow.
    expect((await readFile(result.staged.path)).equals(bytes)).toBe(true);
    return result.staged.contentType;
  }

  it.each<[string, TiffOptions]>([
    ['little-endian, IFD after the pixels', { order: 'II' }],
    ['big-endian, IFD after the pixels', { order: 'MM' }],
    ['little-endian LZW', { order: 'II', lzw: true }],
    ['big-endian LZW', { order: 'MM', lzw: true }],
    ['8-bit, IFD right after the header', { order: 'II', bitsPerSample: 8, ifdAt: 'front' }],
  ])('accepts a 400x300 TIFF, %s', async (_name, opts) => {
    const tiff = tiffFile(opts);
    if (!opts.lzw && opts.bitsPerSample === undefined) expect(tiff.length).toBeGreaterThan(720_000);
    expect(await stagedType(tiff)).toBe('image/tiff');
  });

  it.each([
    ['CR2', rawPrefix(CR2), 'image/x-canon-cr2'],
    ['CR3', rawPrefix(CR3.toString('latin1')), 'image/x-canon-cr3'],
    ['NEF', rawPrefix(NEF), 'image/x-nikon-nef'],
    ['ORF', rawPrefix(ORF), 'image/x-olympus-orf'],
    ['ORF (IIRS)', rawPrefix(ORF_RS), 'image/x-olympus-orf'],
    ['RW2', rawPrefix(RW2), 'image/x-panasonic-rw2'],
    ['Panasonic RAW (IIU)', rawPrefix(RW1), 'image/x-panasonic-rw2'],
    ['RAF', rawPrefix(RAF), 'image/x-fujifilm-raf'],
    ['X3F', rawPrefix([0x46, 0x4f, 0x56, 0x62, 0x00, 0x00, 0x02, 0x00]), 'image/x-sigma-x3f'],
    [
      'DNG',
      tiffFile({
        order: 'II',
        ifdAt: 'front',
        extraTags: [{ tag: 50706, type: BYTE, count: 4, value: 0x0401 }],
      }),
      'image/x-adobe-dng',
    ],
    [
      'ARW',
      tiffFile({ order: 'II', ifdAt: 'front', extraTags: [{ tag: 50341, type: BYTE, count: 4, value: 0 }] }),
      'image/x-sony-arw',
    ],
    ['PEF (a plain TIFF to file-type)', tiffFile({ order: 'MM', ifdAt: 'front' }), 'image/tiff'],
    [
      'DNG whose IFD is past the sniffed bytes',
      tiffFile({ order: 'MM', extraTags: [{ tag: 50706, type: BYTE, count: 4, value: 0x01040000 }] }),
      'image/tiff',
    ],
  ])('accepts %s', async (_name, bytes, mime) => {
    expect(await stagedType(bytes)).toBe(mime);
  });

  it.each([
    ['SVG', Buffer.from('<svg xmlns="http://www.w3.org/2000/svg">'.padEnd(8192, ' '))],
    ['HTML', Buffer.from('<!doctype html><html><body>hi</body></html>'.padEnd(8192, ' '))],
    ['zip', rawPrefix([0x50, 0x4b, 0x03, 0x04, 0x14, 0x00])],
    ['PDF', Buffer.from('%PDF-1.7\n'.padEnd(8192, ' '))],
    ['text after a TIFF byte order mark', Buffer.from('II hello, world'.padEnd(8192, ' '))],
    ['a TIFF cut short before its IFD', tiffFile({ order: 'II' }).subarray(0, 4000)],
  ])('refuses %s', async (_name, bytes) => {
    expect(await stagedType(bytes)).toBe('NotAnImage');
    expect(await readdir(dir)).toEqual([]);
  });
});

describe('StagingArea.tee with a copy that stops reading', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-staging-tee-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Reads `copy` to its end, pausing `pauseMs` after its first chunk; resolves with the bytes. */
  async function read(copy: AsyncIterable<Uint8Array>, pauseMs = 0): Promise<number> {
    let bytes = 0;
    for await (const chunk of copy) {
      if (bytes === 0) await sleep(pauseMs);
      bytes += chunk.byteLength;
    }
    return bytes;
  }

  it('fails the stalled copy, not the client, and stages the body whole', async () => {
    const staging = await StagingArea.open(dir);
    const body = Buffer.concat([PNG, Buffer.alloc(2 * 1024 * 1024 - PNG.length, 7)]);
    // The client sends everything at once; a window of 300 ms asks 300 bytes of it.
    const fast = withMinimumRate(chunked(body, 64 * 1024), { bytesPerSecond: 1_000, windowMs: 300 });
    const result = await staging.tee(fast, 1 << 26, body.length, 2, 150);
    if (!result.ok) throw new Error(result.error.message);
    const { teed } = result;
    const [prompt, stalled] = await Promise.allSettled([read(teed.copies[0]!), read(teed.copies[1]!, 1_000)]);
    const staged = await teed.staged;
    expect(staged.size).toBe(body.length);
    expect(staged.sha256).toBe(createHash('sha256').update(body).digest('hex'));
    expect(prompt).toEqual({ status: 'fulfilled', value: body.length });
    expect(stalled.status).toBe('rejected');
    if (stalled.status === 'rejected') expect(stalled.reason).toBeInstanceOf(BranchStalled);
    await staging.release(staged);
  });
});

describe('StagingArea.tee within its memory budget', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-staging-memory-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const body = (size: number) => Buffer.concat([PNG, Buffer.alloc(size - PNG.length, 5)]);
  const drain = async (copy: AsyncIterable<Uint8Array>) => {
    for await (const _ of copy);
  };

  it('holds a body that fits in memory, a body past the budget in a file, and frees both', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: 1_500_000 });
    const small = body(1_000_000);
    const large = body(600_000);
    const first = await staging.tee(chunked(small, 64 * 1024), 1 << 26, small.length, 1);
    const second = await staging.tee(chunked(large, 64 * 1024), 1 << 26, large.length, 1);
    if (!first.ok || !second.ok) throw new Error('refused');
    await Promise.all([drain(first.teed.copies[0]!), drain(second.teed.copies[0]!)]);
    const held = await first.teed.staged;
    const filed = await second.teed.staged;
    expect(held.path).toBeNull();
    expect(Buffer.concat(held.chunks ?? []).equals(small)).toBe(true);
    expect(held.sha256).toBe(createHash('sha256').update(small).digest('hex'));
    expect(staging.heldInMemory).toBe(4 * SLAB_BYTES);
    expect(filed.path).not.toBeNull();
    expect((await readFile(filed.path!)).equals(large)).toBe(true);
    await staging.release(held);
    await staging.release(held);
    await staging.release(filed);
    expect(staging.heldInMemory).toBe(0);
    expect(await readdir(dir)).toEqual([]);
  });

  it('counts the whole slabs a small body pins, so the budget bounds the memory held', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: 2 * SLAB_BYTES });
    const bodies = [body(20_000), body(20_000), body(20_000)];
    const teed = [];
    for (const bytes of bodies) {
      const result = await staging.tee(chunked(bytes, 8 * 1024), 1 << 26, bytes.length, 1);
      if (!result.ok) throw new Error('refused');
      teed.push(result.teed);
    }
    await Promise.all(teed.map((t) => drain(t.copies[0]!)));
    const staged = await Promise.all(teed.map((t) => t.staged));
    expect(staged.map((s) => s.path === null)).toEqual([true, true, false]);
    expect(staging.heldInMemory).toBe(2 * SLAB_BYTES);
    for (const s of staged) await staging.release(s);
    expect(staging.heldInMemory).toBe(0);
  });

  it('reuses the slabs of a body sent cleanly for the next one, and never those of another', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: 4 << 20 });
    const tee = async (bytes: Buffer, chunk: number) => {
      const result = await staging.tee(chunked(bytes, chunk), 1 << 26, bytes.length, 1);
      if (!result.ok) throw new Error('refused');
      const parts: Buffer[] = [];
      for await (const part of result.teed.copies[0]!) parts.push(Buffer.from(part));
      const staged = await result.teed.staged;
      expect(Buffer.concat(parts).equals(bytes)).toBe(true);
      expect(Buffer.concat(staged.chunks ?? []).equals(bytes)).toBe(true);
      return staged;
    };
    // 3 slabs of 256 KiB and a part of one, from chunks that straddle the slabs' edges.
    const first = await tee(body(SLAB_BYTES * 3 + 1_000), 100_000);
    await staging.release(first, { reuse: true });
    expect(staging.spareSlabs).toBe(4);
    const second = body(SLAB_BYTES * 2);
    second.fill(9, PNG.length);
    const again = await tee(second, SLAB_BYTES + 7);
    expect(staging.spareSlabs).toBe(2);
    await staging.release(again);
    expect(staging.spareSlabs).toBe(2);
    expect(staging.heldInMemory).toBe(0);
  });

  it('gives the room of a body that fails back, and refuses it as a file would be', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: 1 << 20 });
    const short = body(300_000);
    const result = await staging.tee(chunked(short, 64 * 1024), 1 << 26, short.length + 1, 1);
    if (!result.ok) throw new Error('refused');
    await drain(result.teed.copies[0]!).catch(() => {});
    await expect(result.teed.staged).rejects.toMatchObject({ error: { code: 'LengthMismatch' } });
    expect(staging.heldInMemory).toBe(0);
    expect(await readdir(dir)).toEqual([]);
  });

  it('lets go of the first chunks once they are copied, while the rest of the body is still arriving', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: 4 << 20 });
    const HEAD = 64 * 1024;
    let firstChunk: WeakRef<Uint8Array> | undefined;
    const first = () => {
      const chunk = body(HEAD);
      firstChunk = new WeakRef(chunk);
      return chunk;
    };
    let arrive!: () => void;
    const rest = new Promise<void>((resolve) => {
      arrive = resolve;
    });
    // Not a generator: a suspended one may keep a chunk it yielded in its frame.
    const chunks: Uint8Array[] = [first(), Buffer.alloc(SLAB_BYTES, 6)];
    let last: Uint8Array | null = Buffer.alloc(1_000, 7);
    const source: AsyncIterable<Uint8Array> = {
      [Symbol.asyncIterator]: () => ({
        next: async (): Promise<IteratorResult<Uint8Array>> => {
          const chunk = chunks.shift();
          if (chunk) return { value: chunk, done: false };
          await rest;
          const end = last;
          last = null;
          return end ? { value: end, done: false } : { value: undefined, done: true };
        },
      }),
    };
    const size = HEAD + SLAB_BYTES + 1_000;
    const result = await staging.tee(source, 1 << 26, size, 1);
    if (!result.ok) throw new Error('refused');
    const copy = result.teed.copies[0]!;
    // The first slab, the first chunk's bytes in it: forwarded while the body's end is yet to come.
    expect((await copy.next()).value?.byteLength).toBe(SLAB_BYTES);
    // A WeakRef's target is kept until the job that made it ends.
    await new Promise((resolve) => setImmediate(resolve));
    collectGarbage();
    expect(firstChunk!.deref()).toBeUndefined();
    arrive();
    await drain(copy);
    const staged = await result.teed.staged;
    expect(staged.size).toBe(size);
    await staging.release(staged);
  });

  it('gives each body teed at once the sha256 and CRC32C of its own bytes, held in slabs or filed', async () => {
    // Room for the first three (4, 2 and 3 slabs): the last goes to a file.
    const staging = await StagingArea.open(dir, { memoryBytes: 9 * SLAB_BYTES });
    const sizes = [4 * SLAB_BYTES, SLAB_BYTES + 7, 2 * SLAB_BYTES + 1_000, 3 * SLAB_BYTES];
    const bodies = sizes.map((size) => Buffer.concat([PNG, randomBytes(size - PNG.length)]));
    const teed = await Promise.all(
      bodies.map(async (bytes, i) => {
        const result = await staging.tee(chunked(bytes, 60_000 + i * 4_099), 1 << 26, bytes.length, 2);
        if (!result.ok) throw new Error('refused');
        return result.teed;
      }),
    );
    await Promise.all(teed.flatMap((t) => t.copies.map(drain)));
    const staged = await Promise.all(teed.map((t) => t.staged));
    expect(staged.map((s) => s.path === null)).toEqual([true, true, true, false]);
    for (const [i, bytes] of bodies.entries()) {
      const sums = { sha256: createHash('sha256').update(bytes).digest('hex'), crc32c: crc32cHex(bytes) };
      expect(staged[i]).toMatchObject({ size: bytes.length, ...sums });
      expect(teed[i]!.sums()).toEqual(sums);
    }
    for (const s of staged) await staging.release(s);
  });
});

describe('StagingArea.holdWhole', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-staging-whole-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const body = (size: number) => Buffer.concat([PNG, Buffer.alloc(size - PNG.length, 5)]);

  it('holds a body of one slab whole, as one chunk with its sums and type, and gives its room back', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: 2 * SLAB_BYTES });
    for (const size of [PNG.length, 100 * 1024, SLAB_BYTES]) {
      const bytes = body(size);
      const result = await staging.holdWhole(chunked(bytes, 64 * 1024), 1 << 26, bytes.length);
      if (!result?.ok) throw new Error('refused');
      const { staged } = result;
      expect(staged.path).toBeNull();
      expect(staged.chunks).toHaveLength(1);
      expect(Buffer.from(staged.chunks![0]!).equals(bytes)).toBe(true);
      expect(staged.sha256).toBe(createHash('sha256').update(bytes).digest('hex'));
      expect(staged.contentType).toBe('image/png');
      expect(staging.heldInMemory).toBe(SLAB_BYTES);
      await staging.release(staged, { reuse: true });
      expect(staging.heldInMemory).toBe(0);
    }
    expect(await readdir(dir)).toEqual([]);
  });

  it('answers null, the body unread, when the memory budget has no room for its slab', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: SLAB_BYTES });
    const first = await staging.holdWhole(chunked(body(1_000)), 1 << 26, 1_000);
    if (!first?.ok) throw new Error('refused');
    let read = false;
    const untouched = (async function* () {
      read = true;
      yield body(1_000);
    })();
    expect(await staging.holdWhole(untouched, 1 << 26, 1_000)).toBeNull();
    expect(read).toBe(false);
    await staging.release(first.staged);
    expect(staging.heldInMemory).toBe(0);
  });

  it('refuses a body that is no image from its first bytes, before the rest arrives', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: SLAB_BYTES });
    let pulled = 0;
    const text = (async function* () {
      for (;;) {
        pulled += 1;
        yield Buffer.alloc(8 * 1024, 0x41);
      }
    })();
    expect(await staging.holdWhole(text, 1 << 26, 200 * 1024)).toMatchObject({
      ok: false,
      error: { code: 'NotAnImage' },
    });
    expect(pulled).toBe(1);
    expect(staging.heldInMemory).toBe(0);
  });

  it('refuses a body shorter or longer than its Content-Length, or empty, and gives its room back', async () => {
    const staging = await StagingArea.open(dir, { memoryBytes: SLAB_BYTES });
    const bytes = body(50_000);
    for (const [chunks, size, code] of [
      [chunked(bytes, 8 * 1024), bytes.length + 1, 'LengthMismatch'],
      [chunked(bytes, 8 * 1024), bytes.length - 1, 'LengthMismatch'],
      [Readable.from([]), 10, 'EmptyBody'],
    ] as const) {
      expect(await staging.holdWhole(chunks, 1 << 26, size)).toMatchObject({ ok: false, error: { code } });
      expect(staging.heldInMemory).toBe(0);
    }
    expect(staging.spareSlabs).toBe(1);
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
    expect(result).toMatchObject({
      ok: false,
      error: { code: 'InsufficientStorage', message: expect.stringContaining('staging disk is full') },
    });
    expect(await readdir(join(root, 'staging'))).toEqual([]);
  });
});

describe('StagingArea on a disk full of uploads in progress', () => {
  // A real full disk: a 1 MiB tmpfs, skipped without the privilege to mount one.
  let root = '';
  let mounted = false;
  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-staging-busy-'));
    mounted = mountTmpfs(root, '1m');
  });
  /** Uploads held open, ended and awaited whatever happened, so no file stays open on the tmpfs. */
  const held: { end: () => void; staged: Promise<unknown> }[] = [];
  afterEach(async () => {
    for (const h of held.splice(0)) {
      h.end();
      await h.staged.catch(() => {});
    }
    if (mounted) unmount(root);
    await rm(root, { recursive: true, force: true });
  });

  /** A PNG body of `size` bytes whose last chunk waits for `end()`: its staged file stays meanwhile. */
  function heldOpen(size: number): { body: AsyncIterable<Uint8Array>; end: () => void } {
    let end!: () => void;
    const ended = new Promise<void>((resolve) => (end = resolve));
    const bytes = Buffer.concat([PNG, Buffer.alloc(size - PNG.length, 7)]);
    async function* body() {
      for (let i = 0; i < bytes.length - 1024; i += 64 * 1024)
        yield bytes.subarray(i, Math.min(i + 64 * 1024, bytes.length - 1024));
      await ended;
      yield bytes.subarray(bytes.length - 1024);
    }
    return { body: body(), end };
  }

  it('asks for a retry (StagingFull) while staged uploads fill it, and answers 507 only when they would not make room', async (ctx) => {
    if (!mounted) ctx.skip();
    const staging = await StagingArea.open(join(root, 'staging'));
    const big = Buffer.concat([PNG, Buffer.alloc(512 * 1024, 1)]);
    // An upload in progress holds three write batches (768 KiB) of the 1 MiB disk.
    const first = heldOpen(800 * 1024);
    const firstStaged = staging.stage(first.body, 1 << 24);
    held.push({ end: first.end, staged: firstStaged });
    await until('the first upload staged 768 KiB', async () => {
      const [name] = await readdir(join(root, 'staging'));
      return name !== undefined && (await readFile(join(root, 'staging', name))).length >= 768 * 1024;
    });
    const refused = await staging.stage(chunked(big, 64 * 1024), 1 << 24);
    expect(refused).toMatchObject({ ok: false, error: { code: 'StagingFull' } });
    // The first upload ends and its file goes: the same upload fits now.
    first.end();
    const done = await firstStaged;
    expect(done.ok).toBe(true);
    if (done.ok) await staging.release(done.staged);
    const second = await staging.stage(chunked(big, 64 * 1024), 1 << 24);
    expect(second.ok).toBe(true);
    if (second.ok) await staging.release(second.staged);
    // Something else fills the disk: no staged file would make room, so the refusal is final.
    await writeFile(join(root, 'other'), Buffer.alloc(900 * 1024));
    expect(await staging.stage(chunked(big, 64 * 1024), 1 << 24)).toMatchObject({
      ok: false,
      error: { code: 'InsufficientStorage' },
    });
    expect(await readdir(join(root, 'staging'))).toEqual([]);
  });
});
