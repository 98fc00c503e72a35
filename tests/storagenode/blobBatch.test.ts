// Many blobs in one body: the frame format on its own, and the worker's POST /blobs/batch that
// stores them (the receiving end of copy-batch).

import { randomBytes } from 'node:crypto';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import {
  encodeFrameHeader,
  FRAMES_CONTENT_TYPE,
  FrameError,
  FrameReader,
} from '../../src/storagenode/blobFrames.ts';
import { Prng } from '../sim/prng.ts';
import {
  AUTH,
  type JsonAnswer,
  makeDataDir,
  type RunningWorker,
  removeDir,
  sha256Of,
  startWorker,
} from './workerHarness.ts';

interface Blob {
  id: string;
  bytes: Buffer;
}

function framed(blobs: Blob[], sha256 = (b: Blob) => sha256Of(b.bytes)): Buffer {
  return Buffer.concat(
    blobs.flatMap((b) => [encodeFrameHeader({ id: b.id, size: b.bytes.length, sha256: sha256(b) }), b.bytes]),
  );
}

/** `bytes` cut into chunks of random sizes (1 byte up to `max`), as a socket might deliver them. */
function* chunked(bytes: Buffer, rng: Prng, max: number): Generator<Buffer> {
  for (let at = 0; at < bytes.length; ) {
    const n = Math.min(bytes.length - at, rng.range(1, max));
    yield bytes.subarray(at, at + n);
    at += n;
  }
}

async function* fromSync(chunks: Iterable<Buffer>): AsyncGenerator<Buffer> {
  yield* chunks;
}

describe('FrameReader', () => {
  it('reads back every blob whole, however the body is cut into chunks, and skips a blob left unread', async () => {
    const rng = new Prng(7);
    const blobs: Blob[] = [0, 1, 300, 70_000, 5, 0].map((size, i) => ({
      id: `b-${i}`,
      bytes: randomBytes(size),
    }));
    const body = framed(blobs);
    for (const max of [1, 3, 64, 1000, 100_000]) {
      const reader = new FrameReader(fromSync(chunked(body, rng, max)));
      for (const [i, blob] of blobs.entries()) {
        const header = await reader.header();
        expect(header).toEqual({ id: blob.id, size: blob.bytes.length, sha256: sha256Of(blob.bytes) });
        const frame = reader.body(header!.size);
        if (i === 3) {
          // A consumer that stops after one chunk: the rest is skipped, the next header still found.
          for await (const _ of frame) break;
        } else {
          const parts: Buffer[] = [];
          for await (const part of frame) parts.push(part);
          expect(Buffer.concat(parts).equals(blob.bytes)).toBe(true);
        }
        await frame.skipRest();
      }
      expect(await reader.header()).toBeNull();
    }
  });

  it('refuses a body cut inside a header or a blob, a header that is not one, and an endless line', async () => {
    const body = framed([{ id: 'a', bytes: randomBytes(100) }]);
    const cutInBlob = new FrameReader(fromSync([body.subarray(0, body.length - 10)]));
    const header = await cutInBlob.header();
    await expect(cutInBlob.body(header!.size).skipRest()).rejects.toThrow(FrameError);

    await expect(new FrameReader(fromSync([body.subarray(0, 20)])).header()).rejects.toThrow(
      /inside a frame header/,
    );
    await expect(new FrameReader(fromSync([Buffer.from('{"id":"a"}\n')])).header()).rejects.toThrow(
      /bad frame header/,
    );
    await expect(new FrameReader(fromSync([Buffer.from('not json\n')])).header()).rejects.toThrow(/not JSON/);
    await expect(new FrameReader(fromSync([Buffer.alloc(5000, 0x61)])).header()).rejects.toThrow(
      /over 1024 bytes/,
    );

    // A body that fails underneath (the sender went away) stays failed for every later read.
    async function* dies(): AsyncGenerator<Buffer> {
      yield body.subarray(0, 120);
      throw new Error('socket hang up');
    }
    const aborted = new FrameReader(dies());
    const first = await aborted.header();
    const blob = aborted.body(first!.size);
    await expect(blob.skipRest()).rejects.toMatchObject({ aborted: true });
    await expect(blob.skipRest()).rejects.toMatchObject({ aborted: true });
  });
});

describe('POST /blobs/batch', () => {
  let dir: string;
  let w: RunningWorker;

  beforeEach(async () => {
    dir = await makeDataDir();
    w = await startWorker(path.join(dir, 'w'), { maxBlobBytes: 100_000 });
  });
  afterEach(async () => {
    await w.stop();
    await removeDir(dir);
  });

  async function post(body: Buffer | AsyncIterable<Buffer>, headers: Record<string, string> = AUTH) {
    const res = await request(`${w.url}/blobs/batch`, {
      method: 'POST',
      body: body as Buffer,
      headers: { ...headers, 'content-type': FRAMES_CONTENT_TYPE },
    });
    return { status: res.statusCode, json: (await res.body.json()) as JsonAnswer };
  }

  it('stores each blob as a PUT would, and a refused blob does not stop the ones after it', async () => {
    const held = randomBytes(500);
    const put = await request(`${w.url}/blobs/held`, {
      method: 'PUT',
      body: held,
      headers: { ...AUTH, 'x-imgvault-sha256': sha256Of(held) },
    });
    expect(put.statusCode).toBe(201);
    await put.body.dump();

    const blobs: Blob[] = [
      { id: 'one', bytes: randomBytes(40_000) },
      { id: 'held', bytes: held },
      { id: 'held', bytes: randomBytes(500) },
      { id: 'corrupt', bytes: randomBytes(3_000) },
      { id: 'huge', bytes: randomBytes(150_000) },
      { id: '..', bytes: randomBytes(10) },
      { id: 'empty', bytes: Buffer.alloc(0) },
      { id: 'two', bytes: randomBytes(70_000) },
    ];
    const res = await post(framed(blobs, (b) => (b.id === 'corrupt' ? 'c'.repeat(64) : sha256Of(b.bytes))));
    expect(res.status).toBe(200);
    const results = res.json.results as JsonAnswer[];
    expect(results.map((r) => [r.id, r.ok ? r.status : r.error.code])).toEqual([
      ['one', 201],
      ['held', 200],
      ['held', 'BlobConflict'],
      ['corrupt', 'ChecksumMismatch'],
      ['huge', 'PayloadTooLarge'],
      ['..', 'InvalidBlobId'],
      ['empty', 201],
      ['two', 201],
    ]);
    for (const b of [blobs[0]!, blobs[1]!, blobs[6]!, blobs[7]!]) {
      const got = await request(`${w.url}/blobs/${b.id}`, { headers: AUTH });
      expect(Buffer.from(await got.body.arrayBuffer()).equals(b.bytes)).toBe(true);
    }
    for (const id of ['corrupt', 'huge']) expect((await w.store.stat(id)).ok).toBe(false);
    expect(await readdir(w.store.tmpDir)).toEqual([]);
    expect(w.store.counters()).toMatchObject({ blobCount: 4, reservedBytes: 0 });
  });

  it('commits in groups of 32, and commits a group early when its id comes again', async () => {
    const groups = vi.spyOn(w.store.index, 'record');
    const blobs: Blob[] = Array.from({ length: 71 }, (_, i) => ({
      id: `g-${i}`,
      bytes: randomBytes(1000 + i),
    }));
    blobs[10] = blobs[3]!;
    const res = await post(framed(blobs));
    expect(res.status).toBe(200);
    const results = res.json.results as JsonAnswer[];
    expect(results.map((r) => r.id)).toEqual(blobs.map((b) => b.id));
    expect(results.map((r) => r.status)).toEqual(blobs.map((_, i) => (i === 10 ? 200 : 201)));
    // Blobs 0-9, then 11-42, then 43-70: one index batch each.
    expect(groups.mock.calls.map(([entries]) => entries.length)).toEqual([10, 32, 28]);
    for (const b of blobs) {
      const got = await request(`${w.url}/blobs/${b.id}`, { headers: AUTH });
      expect(Buffer.from(await got.body.arrayBuffer()).equals(b.bytes)).toBe(true);
    }
    const pending = [];
    for await (const p of w.store.index.pendingWrites()) pending.push(p);
    expect(pending).toEqual([]);
    expect(await readdir(w.store.tmpDir)).toEqual([]);
    expect(w.store.counters()).toMatchObject({ blobCount: 70, reservedBytes: 0 });
  });

  it('keeps the blobs before a cut in the body whole and nothing of the one it cut', async () => {
    const first = { id: 'first', bytes: randomBytes(20_000) };
    const cut = { id: 'cut', bytes: randomBytes(60_000) };
    const body = framed([first, cut]);
    const res = await post(body.subarray(0, body.length - 1000));
    expect(res.status).toBe(400);
    expect(res.json.error.code).toBe('InvalidRequest');
    expect(res.json.error.results).toMatchObject([{ id: 'first', ok: true, status: 201 }]);
    expect((await w.store.stat('first')).ok).toBe(true);
    expect((await w.store.stat('cut')).ok).toBe(false);
    expect(await readdir(w.store.tmpDir)).toEqual([]);
    expect(w.store.counters()).toMatchObject({ blobCount: 1, reservedBytes: 0 });
  });

  it('refuses a bad header and a request without the cluster secret', async () => {
    const bad = await post(Buffer.from('{"id":"x","size":-1}\n'));
    expect(bad.status).toBe(400);
    expect(bad.json.error.code).toBe('InvalidRequest');
    const anonymous = await post(framed([{ id: 'x', bytes: randomBytes(10) }]), {});
    expect(anonymous.status).toBe(401);
    expect((await w.store.stat('x')).ok).toBe(false);
  });
});
