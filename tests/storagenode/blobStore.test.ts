import fsp, { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, expect, it, vi } from 'vitest';
import { ReadBuffers } from '../../src/http/readBuffers.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { BLOB_ID_PATTERN, blobRelativePath, isValidBlobId } from '../../src/storagenode/blobId.ts';
import { BlobIndex } from '../../src/storagenode/blobIndex.ts';
import { LAYOUT_MARKER } from '../../src/storagenode/blobLayout.ts';
import { BlobStore } from '../../src/storagenode/blobStore.ts';
import { resolveRange } from '../../src/storagenode/workerApp.ts';
import { flipByte, sha256Of, useBlobStoreFolder } from './workerHarness.ts';

const folder = useBlobStoreFolder();
const openStore = folder.open;
const closeStore = folder.close;

async function write(store: BlobStore, id: string, body: Buffer, maxBytes = 1 << 30) {
  return store.writeAtomically(id, Readable.from([body]), sha256Of(body), maxBytes);
}

async function readAll(
  store: BlobStore,
  id: string,
  range?: { start: number; end: number },
): Promise<Buffer> {
  const read = await store.openForRead(id, range);
  if (!read.ok) throw read.error;
  const chunks: Buffer[] = [];
  for await (const chunk of read.value.stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

async function ids(store: BlobStore): Promise<string[]> {
  const out: string[] = [];
  for await (const entry of store.inventory()) out.push(entry.id);
  return out;
}

describe('blob ids', () => {
  it('accepts the public id pattern and nothing that could leave its folder', () => {
    for (const id of ['a', 'A', '0', 'img-1.jpg', 'a..b', 'x_y-z.Q', 'a'.repeat(128)]) {
      expect(isValidBlobId(id), id).toBe(true);
    }
    for (const id of [
      '',
      '.',
      '..',
      '../x',
      'a/b',
      'a\\b',
      '/abs',
      'a\0b',
      '-lead',
      '.hidden',
      'a'.repeat(129),
      'é',
    ]) {
      expect(isValidBlobId(id), JSON.stringify(id)).toBe(false);
    }
    expect(isValidBlobId(42)).toBe(false);
    expect(BLOB_ID_PATTERN.source).toBe('^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$');
  });

  it('fans blobs out over one level of 256 folders from the hash of the id', () => {
    const rel = blobRelativePath('img-1');
    expect(rel).toMatch(/^blobs\/[0-9a-f]{2}\/img-1$/);
    expect(blobRelativePath('img-1')).toBe(rel);
    const folders = new Set(
      Array.from({ length: 4000 }, (_, i) => path.dirname(blobRelativePath(`id-${i}`))),
    );
    // 4000 ids over 256 folders: every folder used; a constant fan-out would not be.
    expect(folders.size).toBe(256);
    expect(() => blobRelativePath('../etc')).toThrow(/invalid blob id/);
  });
});

describe('resolveRange', () => {
  it('follows RFC 9110 for one range and ignores what it does not serve', () => {
    expect(resolveRange(undefined, 100)).toEqual({ kind: 'full' });
    expect(resolveRange('bytes=0-0', 100)).toEqual({ kind: 'partial', start: 0, end: 0 });
    expect(resolveRange('bytes=10-', 100)).toEqual({ kind: 'partial', start: 10, end: 99 });
    expect(resolveRange('bytes=-200', 100)).toEqual({ kind: 'partial', start: 0, end: 99 });
    expect(resolveRange('bytes=50-1000', 100)).toEqual({ kind: 'partial', start: 50, end: 99 });
    expect(resolveRange('bytes=100-', 100)).toEqual({ kind: 'unsatisfiable' });
    expect(resolveRange('bytes=-0', 100)).toEqual({ kind: 'unsatisfiable' });
    expect(resolveRange('bytes=0-', 0)).toEqual({ kind: 'unsatisfiable' });
    expect(resolveRange('bytes=5-1', 100)).toEqual({ kind: 'full' });
    expect(resolveRange('bytes=0-1,5-6', 100)).toEqual({ kind: 'full' });
    expect(resolveRange('items=0-1', 100)).toEqual({ kind: 'full' });
    expect(resolveRange('bytes=-', 100)).toEqual({ kind: 'full' });
  });
});

describe('BlobStore', () => {
  it('writes, reads ranges, deletes, and keeps its counters', async () => {
    const store = await openStore();
    const body = Buffer.from('0123456789');
    expect(await write(store, 'n1', body)).toEqual({
      ok: true,
      value: { status: 'created', id: 'n1', size: 10, sha256: sha256Of(body), crc32c: crc32cHex(body) },
    });
    expect((await readAll(store, 'n1', { start: 3, end: 5 })).toString()).toBe('345');
    expect(store.counters()).toEqual({ blobCount: 1, blobBytes: 10, reservedBytes: 0 });
    const deleted = await store.delete('n1');
    expect(deleted.ok).toBe(true);
    expect(store.counters()).toEqual({ blobCount: 0, blobBytes: 0, reservedBytes: 0 });
    const again = await store.delete('n1');
    expect(again.ok ? 'ok' : again.error.code).toBe('BlobNotFound');
  });

  it('reads a blob for a copy in bounded reads, refuses one cut short on disk, and never keeps a descriptor', async () => {
    const store = await openStore();
    const openFds = async () => (await readdir('/proc/self/fd')).length;
    // Larger than one read, so the copy takes two and comes back byte for byte.
    const big = Buffer.alloc(1024 * 1024 + 5);
    for (let i = 0; i < big.length; i++) big[i] = (i * 7) % 251;
    expect((await write(store, 'c1', big)).ok).toBe(true);
    expect((await write(store, 'c2', Buffer.from('short blob'))).ok).toBe(true);
    expect((await write(store, 'c3', Buffer.from('another short blob'))).ok).toBe(true);
    const fdsBefore = await openFds();

    const read = await store.openForCopy('c1');
    if (!read.ok) throw read.error;
    const chunks: Buffer[] = [];
    for await (const chunk of read.value.chunks) chunks.push(chunk);
    expect(chunks.map((c) => c.length)).toEqual([1024 * 1024, 5]);
    expect(Buffer.concat(chunks).equals(big)).toBe(true);
    expect(read.value.record).toEqual({ size: big.length, sha256: sha256Of(big), crc32c: crc32cHex(big) });

    // Opened but never read (the copy refused it): release alone closes it, twice is harmless.
    const unread = await store.openForCopy('c2');
    if (!unread.ok) throw unread.error;
    await unread.value.release();
    await unread.value.release();

    // A blob that fits one read comes in one chunk; a file one byte longer than its bytes and
    // trailer is refused before a byte of it is sent, as a shorter one is (below).
    const small = await store.openForCopy('c3');
    if (!small.ok) throw small.error;
    const smallChunks: Buffer[] = [];
    for await (const chunk of small.value.chunks) smallChunks.push(chunk);
    expect(smallChunks).toEqual([Buffer.from('another short blob')]);
    await small.value.release();
    const c3File = path.join(folder.dataDir, blobRelativePath('c3'));
    await writeFile(c3File, Buffer.concat([await readFile(c3File), Buffer.from([0])]));
    const longer = await store.openForCopy('c3');
    expect(longer.ok ? 'ok' : longer.error.code).toBe('Internal');
    // The refused read had the copy read back and removed: a read-back queued behind it finds it gone.
    expect(await store.scrub({ id: 'c3', ...small.value.record })).toBe('gone');

    // A file shorter than its index entry is refused before a byte of it is sent.
    await writeFile(path.join(folder.dataDir, blobRelativePath('c2')), 'short');
    const cut = await store.openForCopy('c2');
    expect(cut.ok ? 'ok' : cut.error.code).toBe('Internal');
    const missing = await store.openForCopy('nope');
    expect(missing.ok ? 'ok' : missing.error.code).toBe('BlobNotFound');
    expect(await openFds()).toBe(fdsBefore);
  });

  it('reads a small blob whole, and refuses one whose file is longer or shorter than its entry and trailer', async () => {
    const store = await openStore();
    const openFds = async () => (await readdir('/proc/self/fd')).length;
    const body = Buffer.alloc(300_001);
    for (let i = 0; i < body.length; i++) body[i] = (i * 13) % 251;
    expect((await write(store, 'w1', body)).ok).toBe(true);
    const fdsBefore = await openFds();

    const whole = await store.readWhole('w1', 1024 * 1024);
    if (!whole.ok || whole.value === 'tooLarge') throw new Error('expected the whole blob');
    expect(whole.value.bytes.equals(body)).toBe(true);
    expect(whole.value.record.size).toBe(body.length);
    expect((await store.readWhole('w1', 1000)).ok && 'tooLarge').toBe('tooLarge');

    const entry = { id: 'w1', ...whole.value.record };
    const file = path.join(folder.dataDir, blobRelativePath('w1'));
    const stored = await readFile(file);
    // One byte more than bytes and trailer: the read that fills its buffer finds it.
    await writeFile(file, Buffer.concat([stored, Buffer.from([0])]));
    const longer = await store.readWhole('w1', 1024 * 1024);
    expect(longer.ok ? 'ok' : longer.error.code).toBe('Internal');
    // The refused read had the copy read back and removed: a read-back queued behind it finds it gone.
    expect(await store.scrub(entry)).toBe('gone');
    expect((await store.stat('w1')).ok).toBe(false);
    // A byte of the trailer missing.
    expect((await write(store, 'w1', body)).ok).toBe(true);
    await writeFile(file, stored.subarray(0, stored.length - 1));
    const shorter = await store.readWhole('w1', 1024 * 1024);
    expect(shorter.ok ? 'ok' : shorter.error.code).toBe('Internal');
    expect(await store.scrub(entry)).toBe('gone');
    expect(await openFds()).toBe(fdsBefore);
  });

  it('reads a whole blob into a leased buffer, and hands the lease back on every other outcome', async () => {
    const store = await openStore();
    const pool = new ReadBuffers(64 * 1024, 4);
    const body = Buffer.alloc(40_000, 7);
    expect((await write(store, 'p1', body)).ok).toBe(true);
    expect((await write(store, 'p2', Buffer.alloc(80_000, 9))).ok).toBe(true);

    const whole = await store.readWhole('p1', 1024 * 1024, pool);
    if (!whole.ok || whole.value === 'tooLarge') throw new Error('expected the whole blob');
    expect(whole.value.bytes.equals(body)).toBe(true);
    // Out until the caller is done with the bytes.
    expect(pool.idleCount).toBe(0);
    whole.value.release?.();
    expect(pool.idleCount).toBe(1);

    // Larger than the pool's buffers: a buffer of its own, nothing to hand back.
    const large = await store.readWhole('p2', 1024 * 1024, pool);
    if (!large.ok || large.value === 'tooLarge') throw new Error('expected the whole blob');
    expect(large.value.release).toBeUndefined();
    expect(pool.idleCount).toBe(1);

    // A copy with other bytes than its checksum, and one of the wrong size: refused, lease back.
    const file = path.join(folder.dataDir, blobRelativePath('p1'));
    await flipByte(file, 100);
    const rotten = await store.readWhole('p1', 1024 * 1024, pool);
    expect(rotten.ok ? 'ok' : rotten.error.code).toBe('Internal');
    expect(pool.idleCount).toBe(1);
    expect((await write(store, 'p3', body)).ok).toBe(true);
    const file3 = path.join(folder.dataDir, blobRelativePath('p3'));
    await writeFile(file3, (await readFile(file3)).subarray(1));
    const short = await store.readWhole('p3', 1024 * 1024, pool);
    expect(short.ok ? 'ok' : short.error.code).toBe('Internal');
    expect(pool.idleCount).toBe(1);
  });

  it('refuses invalid ids before building any path', async () => {
    const store = await openStore();
    for (const id of ['..', '../../x', 'a/b', '']) {
      const res = await write(store, id, Buffer.from('x'));
      expect(res.ok ? 'ok' : res.error.code).toBe('InvalidBlobId');
      const read = await store.openForRead(id);
      expect(read.ok ? 'ok' : read.error.code).toBe('InvalidBlobId');
    }
  });

  it('reports a body that fails midway as BodyAborted and keeps nothing of it', async () => {
    const store = await openStore();
    const failing = () =>
      new Readable({
        read() {
          this.push(Buffer.alloc(64 * 1024, 1));
          this.destroy(Object.assign(new Error('aborted'), { code: 'ECONNRESET' }));
        },
      });
    const res = await store.writeAtomically('cut', failing(), 'a'.repeat(64), 1 << 20);
    expect(res.ok ? 'ok' : res.error.code).toBe('BodyAborted');
    expect(await readdir(store.tmpDir)).toEqual([]);
    expect(store.counters()).toEqual({ blobCount: 0, blobBytes: 0, reservedBytes: 0 });
    expect(await ids(store)).toEqual([]);
  });

  it('fsyncs the blob file and its folder on every new blob', async () => {
    const store = await openStore();
    const seen: string[] = [];
    store.onFsync((target) => seen.push(target));
    await write(store, 'synced', Buffer.from('durable'));
    expect(seen.filter((t) => t === 'file')).toHaveLength(1);
    expect(seen.filter((t) => t === 'dir').length).toBeGreaterThanOrEqual(1);
  });

  it('serialises concurrent writes of one id: one creates, the others see the same blob', async () => {
    const store = await openStore();
    const body = Buffer.alloc(256 * 1024, 9);
    const results = await Promise.all(Array.from({ length: 5 }, () => write(store, 'hot', body)));
    const statuses = results.map((r) => (r.ok ? r.value.status : r.error.code)).sort();
    expect(statuses).toEqual(['created', 'unchanged', 'unchanged', 'unchanged', 'unchanged']);
    expect(store.counters()).toMatchObject({ blobCount: 1, blobBytes: body.length });
    expect((await readAll(store, 'hot')).equals(body)).toBe(true);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('verifies a trailing-checksum copy of a blob it holds without asking the quota for room', async () => {
    const store = await openStore({ quotaBytes: 150_000 });
    const held = Buffer.alloc(100_000, 3);
    expect((await write(store, 'held', held)).ok).toBe(true);
    const sums = { sha256: sha256Of(held), crc32c: crc32cHex(held) };
    const again = (bytes: Buffer, sent = sums) =>
      store.writeAtomically('held', Readable.from([bytes]), '', 1 << 20, {
        declaredLength: bytes.length,
        sumsAfterBody: () => sent,
      });
    // A second 100 KB would not fit the quota: the copy it already has must still answer unchanged.
    const same = await again(held);
    expect(same.ok && same.value).toMatchObject({
      status: 'unchanged',
      sha256: sums.sha256,
      crc32c: sums.crc32c,
    });
    const other = Buffer.alloc(100_000, 4);
    const conflict = await again(other, { sha256: sha256Of(other), crc32c: crc32cHex(other) });
    expect(!conflict.ok && conflict.error.code).toBe('BlobConflict');
    const bent = await again(held, { sha256: sums.sha256, crc32c: '00000000' });
    expect(!bent.ok && bent.error.code).toBe('ChecksumMismatch');
    expect(store.counters()).toMatchObject({ blobCount: 1, blobBytes: held.length, reservedBytes: 0 });
    expect(await readdir(store.tmpDir)).toEqual([]);
  });

  it('counts in-flight writes against the quota so two concurrent writes cannot both overflow it', async () => {
    const store = await openStore({ quotaBytes: 150_000 });
    const a = Buffer.alloc(100_000, 1);
    const b = Buffer.alloc(100_000, 2);
    // Chunked bodies without a declared length, interleaved on the event loop.
    const slow = (buf: Buffer) =>
      Readable.from(
        (async function* () {
          for (let i = 0; i < buf.length; i += 10_000) {
            yield buf.subarray(i, i + 10_000);
            await new Promise((resolve) => setImmediate(resolve));
          }
        })(),
      );
    const results = await Promise.all([
      store.writeAtomically('qa', slow(a), sha256Of(a), 1 << 20),
      store.writeAtomically('qb', slow(b), sha256Of(b), 1 << 20),
    ]);
    const codes = results.map((r) => (r.ok ? r.value.status : r.error.code));
    expect(codes.filter((c) => c === 'created').length).toBeLessThanOrEqual(1);
    expect(codes).toContain('InsufficientStorage');
    expect(store.counters().blobBytes).toBeLessThanOrEqual(150_000);
    expect(store.counters().reservedBytes).toBe(0);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });
});

describe('write path', () => {
  it('makes the 256 blob folders with the data folder; a new blob fsyncs only its file and its folder', async () => {
    const store = await openStore();
    const top = (await readdir(path.join(folder.dataDir, 'blobs'))).filter((n) => n !== LAYOUT_MARKER);
    expect(top).toHaveLength(256);
    expect(top).toContain('00');
    expect(top).toContain('ff');
    expect(await readdir(path.join(folder.dataDir, 'blobs'))).toContain(LAYOUT_MARKER);

    const seen: string[] = [];
    store.onFsync((target) => seen.push(target));
    for (const id of ['first', 'second', 'third']) {
      await write(store, id, Buffer.from(id));
      expect(seen.sort(), id).toEqual(['dir', 'file']);
      seen.length = 0;
      expect((await readAll(store, id)).toString()).toBe(id);
      expect(await readdir(path.dirname(store.blobPath(id)))).toContain(id);
    }
  });

  it.each([
    ['direct', true],
    ['buffered', false],
  ])(
    'stores bodies of many odd-sized chunks and of chunks larger than a write batch byte for byte (%s)',
    async (_, directWrites) => {
      const store = await openStore({ directWrites });
      const big = Buffer.alloc(3 * 1024 * 1024 + 12345);
      for (let i = 0; i < big.length; i++) big[i] = (i * 7919) & 0xff;
      const chunked = (buf: Buffer, sizes: number[]) =>
        Readable.from(
          (function* () {
            let off = 0;
            for (let i = 0; off < buf.length; i++) {
              const n = sizes[i % sizes.length]!;
              yield buf.subarray(off, off + n);
              off += n;
            }
          })(),
        );
      const cases: Array<[string, Readable]> = [
        ['tiny-chunks', chunked(big, [1, 999, 4096, 65_536, 7])],
        ['huge-chunks', chunked(big, [2 * 1024 * 1024 + 1])],
      ];
      for (const [id, body] of cases) {
        const res = await store.writeAtomically(id, body, sha256Of(big), 1 << 30);
        expect(res.ok ? res.value : res.error.code).toMatchObject({ status: 'created', size: big.length });
        expect((await readAll(store, id)).equals(big)).toBe(true);
      }
      expect(await readdir(store.tmpDir)).toEqual([]);
    },
  );

  it('leaves no pending marker: after commits, and when a concurrent write finds the id stored', async () => {
    const store = await openStore();
    const body = Buffer.alloc(300 * 1024, 3);
    const results = await Promise.all(Array.from({ length: 4 }, () => write(store, 'racy', body)));
    expect(results.map((r) => (r.ok ? r.value.status : r.error.code)).sort()).toEqual([
      'created',
      'unchanged',
      'unchanged',
      'unchanged',
    ]);
    await write(store, 'plain', Buffer.from('plain'));
    const pending = [];
    for await (const p of store.index.pendingWrites()) pending.push(p);
    expect(pending).toEqual([]);
    expect(await ids(store)).toEqual(['plain', 'racy']);
  });

  it('commits a group of received blobs with one index batch and no marker, refusing alone one stored meanwhile', async () => {
    const store = await openStore();
    const markers = vi.spyOn(store.index, 'markPendingMany');
    const batches = vi.spyOn(store.index, 'record');
    const bodies = ['alpha', 'beta', 'gamma'].map((s) => Buffer.from(s.repeat(1000)));
    const received = [];
    for (const [i, body] of bodies.entries()) {
      const receipt = await store.receive(`grp-${i}`, Readable.from([body]), sha256Of(body), 1 << 20);
      if (!receipt.ok || receipt.value.kind !== 'received') throw new Error('not received');
      received.push(receipt.value.blob);
    }
    // Nothing is visible before the commit; then another writer stores grp-1 with other bytes.
    expect(await ids(store)).toEqual([]);
    expect(store.counters().reservedBytes).toBe(bodies.reduce((n, b) => n + b.length, 0));
    expect((await write(store, 'grp-1', Buffer.from('other'))).ok).toBe(true);
    batches.mockClear();

    const outcomes = await store.commitReceived(received);
    expect(outcomes.map((o) => (o.ok ? o.value.status : o.error.code))).toEqual([
      'created',
      'BlobConflict',
      'created',
    ]);
    expect(batches.mock.calls.map(([entries]) => entries.map((e) => e.id))).toEqual([['grp-0', 'grp-2']]);
    expect(markers).not.toHaveBeenCalled();
    expect((await readAll(store, 'grp-0')).equals(bodies[0]!)).toBe(true);
    expect((await readAll(store, 'grp-1')).toString()).toBe('other');
    expect((await readAll(store, 'grp-2')).equals(bodies[2]!)).toBe(true);
    const pending = [];
    for await (const p of store.index.pendingWrites()) pending.push(p);
    expect(pending).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
    expect(store.counters()).toEqual({
      blobCount: 3,
      blobBytes: bodies[0]!.length + 5 + bodies[2]!.length,
      reservedBytes: 0,
    });
  });

  it('refuses a group naming one id twice, and a discarded blob leaves nothing', async () => {
    const store = await openStore();
    const receive = async (id: string, body: Buffer) => {
      const receipt = await store.receive(id, Readable.from([body]), sha256Of(body), 1 << 20);
      if (!receipt.ok || receipt.value.kind !== 'received') throw new Error('not received');
      return receipt.value.blob;
    };
    const twice = [await receive('dup', Buffer.from('one')), await receive('dup', Buffer.from('two'))];
    await expect(store.commitReceived(twice)).rejects.toThrow(/at most once/);
    await store.discardReceived([await receive('dropped', Buffer.from('gone'))]);
    expect(await ids(store)).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
    expect(store.counters()).toEqual({ blobCount: 0, blobBytes: 0, reservedBytes: 0 });
  });

  it('refuses a body that does not hash to the expected sha256 without fsyncing it', async () => {
    const store = await openStore();
    const seen: string[] = [];
    store.onFsync((target) => seen.push(target));
    const res = await store.writeAtomically('bad', Readable.from([Buffer.from('abc')]), 'a'.repeat(64), 100);
    expect(res.ok ? 'ok' : res.error.code).toBe('ChecksumMismatch');
    expect(seen).toEqual([]);
    expect(await readdir(store.tmpDir)).toEqual([]);
  });
});

describe('checksums', () => {
  const body = Buffer.from('bytes checked with CRC32C on the way in and at rest');

  it('with a CRC32C, checks the body against it alone and records the sha256 as the sender names it', async () => {
    const store = await openStore();
    const label = sha256Of(body);
    const written = await store.writeAtomically('crc', Readable.from([body]), label, 1 << 20, {
      expectedCrc32c: crc32cHex(body),
    });
    expect(written).toEqual({
      ok: true,
      value: { status: 'created', id: 'crc', size: body.length, sha256: label, crc32c: crc32cHex(body) },
    });
    expect(await store.stat('crc')).toEqual({
      ok: true,
      value: { size: body.length, sha256: label, crc32c: crc32cHex(body) },
    });
    const wrong = await store.writeAtomically('crc-bad', Readable.from([body]), label, 1 << 20, {
      expectedCrc32c: crc32cHex(Buffer.from('other bytes')),
    });
    expect(wrong.ok ? 'ok' : wrong.error.code).toBe('ChecksumMismatch');
    expect(await ids(store)).toEqual(['crc']);
    expect(await readdir(store.tmpDir)).toEqual([]);
    // A retry of the same bytes is verified by its CRC32C; other bytes under the id are refused.
    const retry = await store.writeAtomically('crc', Readable.from([body]), label, 1 << 20, {
      expectedCrc32c: crc32cHex(body),
    });
    expect(retry.ok && retry.value.status).toBe('unchanged');
    const other = Buffer.from('other bytes, same label');
    const conflict = await store.writeAtomically('crc', Readable.from([other]), label, 1 << 20, {
      expectedCrc32c: crc32cHex(other),
    });
    expect(conflict.ok ? 'ok' : conflict.error.code).toBe('BlobConflict');
  });

  it('without a CRC32C, hashes the body with sha256 and still indexes its CRC32C', async () => {
    const store = await openStore();
    await write(store, 'old-sender', body);
    expect(await store.stat('old-sender')).toEqual({
      ok: true,
      value: { size: body.length, sha256: sha256Of(body), crc32c: crc32cHex(body) },
    });
  });

  it('reads and scrubs with the CRC32C: a flipped byte on disk cuts the read and loses the blob', async () => {
    const store = await openStore();
    await store.writeAtomically('rots', Readable.from([body]), sha256Of(body), 1 << 20, {
      expectedCrc32c: crc32cHex(body),
    });
    const file = store.blobPath('rots');
    const rotten = Buffer.from(body);
    rotten[7]! ^= 0x01;
    await writeFile(file, rotten);
    await expect(readAll(store, 'rots')).rejects.toThrow(/checksum/);
    // The cut-off read has its own read-back remove the blob; a scrub now finds it lost or gone.
    const verdict = await store.scrub({ id: 'rots', size: body.length, sha256: sha256Of(body) });
    expect(['lost', 'gone']).toContain(verdict);
    expect(await ids(store)).toEqual([]);
  });

  it('checks a blob indexed before CRC32C with its sha256', async () => {
    let store = await openStore();
    await write(store, 'legacy', body);
    await write(store, 'legacy-rotten', body);
    // As an older worker indexed them: no crc32c.
    await store.index.record([
      { id: 'legacy', size: body.length, sha256: sha256Of(body) },
      { id: 'legacy-rotten', size: body.length, sha256: sha256Of(body) },
    ]);
    await closeStore(store);
    store = await openStore();
    expect((await readAll(store, 'legacy')).equals(body)).toBe(true);
    expect(await store.scrub({ id: 'legacy', size: body.length, sha256: sha256Of(body) })).toBe('intact');
    const rotten = Buffer.from(body);
    rotten[3]! ^= 0x40;
    await writeFile(store.blobPath('legacy-rotten'), rotten);
    expect(await store.scrub({ id: 'legacy-rotten', size: body.length, sha256: sha256Of(body) })).toBe(
      'lost',
    );
  });
});

describe('start-up check', () => {
  it('removes stale temp files and drops index entries whose file is missing', async () => {
    let store = await openStore();
    await write(store, 'kept', Buffer.from('kept bytes'));
    await write(store, 'lost', Buffer.from('bytes that vanish'));
    // Entries that point at no file at all, as left by a crash between unlink and index delete.
    await store.index.record([
      { id: 'ghost-1', size: 5, sha256: 'a'.repeat(64) },
      { id: 'ghost-2', size: 7, sha256: 'b'.repeat(64) },
    ]);
    const lostFile = store.blobPath('lost');
    await closeStore(store);
    await (await import('node:fs/promises')).rm(lostFile);
    await writeFile(path.join(folder.dataDir, 'tmp', 'crashed.0011223344556677.tmp'), 'half a blob');
    await writeFile(path.join(folder.dataDir, 'tmp', 'other.tmp'), 'another half');

    store = await openStore();
    expect(store.startupReport).toMatchObject({
      tempFilesRemoved: 2,
      missingDropped: 3,
      blobCount: 1,
      blobBytes: 'kept bytes'.length,
    });
    expect(await readdir(store.tmpDir)).toEqual([]);
    expect(await ids(store)).toEqual(['kept']);
    expect(store.counters()).toMatchObject({ blobCount: 1, blobBytes: 'kept bytes'.length });
    expect((await readAll(store, 'kept')).toString()).toBe('kept bytes');
  });

  it('drops an entry whose file has the wrong size, and removes the file', async () => {
    let store = await openStore();
    await write(store, 'torn', Buffer.from('full length content'));
    const file = store.blobPath('torn');
    await closeStore(store);
    await writeFile(file, 'short');
    store = await openStore();
    expect(store.startupReport.corruptDropped).toBe(1);
    expect(await ids(store)).toEqual([]);
    await expect(stat(file)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('adopts a blob renamed into place before a crash kept its index entry from being written', async () => {
    const body = Buffer.from('renamed but not yet indexed');
    const id = 'crash-after-rename';
    await mkdir(folder.dataDir, { recursive: true });
    const index = await BlobIndex.open(path.join(folder.dataDir, 'index'));
    await index.markPending({ id, size: body.length, sha256: sha256Of(body) });
    await index.markPending({ id: 'crash-before-rename', size: 3, sha256: sha256Of(Buffer.from('abc')) });
    await index.markPending({ id: 'crash-torn', size: 10, sha256: sha256Of(Buffer.from('0123456789')) });
    await index.close();
    const file = path.join(folder.dataDir, blobRelativePath(id));
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, body);
    const torn = path.join(folder.dataDir, blobRelativePath('crash-torn'));
    await mkdir(path.dirname(torn), { recursive: true });
    await writeFile(torn, '01234');

    // The crash may have come before the folder fsync that made the name durable: adopting the
    // blob syncs its folder first (fsyncPath opens it).
    const opened: string[] = [];
    const realOpen = fsp.open.bind(fsp);
    vi.spyOn(fsp, 'open').mockImplementation(((
      p: string,
      ...rest: Parameters<typeof fsp.open> extends [unknown, ...infer R] ? R : never
    ) => {
      opened.push(path.resolve(String(p)));
      return realOpen(p, ...rest);
    }) as typeof fsp.open);
    const store = await openStore();
    vi.restoreAllMocks();
    expect(opened).toContain(path.dirname(file));
    expect(store.startupReport).toMatchObject({ pendingAdopted: 1, pendingDropped: 2, blobCount: 1 });
    expect(await ids(store)).toEqual([id]);
    expect((await readAll(store, id)).equals(body)).toBe(true);
    await expect(stat(torn)).rejects.toMatchObject({ code: 'ENOENT' });
    const pendingLeft = [];
    for await (const p of store.index.pendingWrites()) pendingLeft.push(p);
    expect(pendingLeft).toEqual([]);
  });

  it('keeps every committed blob across a close and reopen, and counts them again', async () => {
    let store = await openStore();
    for (let i = 0; i < 20; i++) await write(store, `r-${i}`, Buffer.alloc(i * 10, i));
    await store.delete('r-3');
    await closeStore(store);
    store = await openStore();
    expect(store.startupReport.missingDropped).toBe(0);
    expect(store.counters().blobCount).toBe(19);
    expect(store.counters().blobBytes).toBe(
      Array.from({ length: 20 }, (_, i) => i * 10).reduce((a, b) => a + b) - 30,
    );
    expect((await readAll(store, 'r-7')).equals(Buffer.alloc(70, 7))).toBe(true);
    expect((await readFile(store.blobPath('r-19'))).subarray(0, 190).equals(Buffer.alloc(190, 19))).toBe(
      true,
    );
  });

  it('refuses a second store on the same data folder', async () => {
    await openStore();
    await expect(BlobStore.open(folder.dataDir)).rejects.toThrow();
  });
});
