// The streamed tee (StagingArea.tee + replicateUpload): an upload goes to both chosen workers while
// it arrives, against real workers over real HTTP, and a copy that fails is replaced from the
// staged file.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { withMinimumRate } from '../../src/http/requestBody.ts';
import { createLogger } from '../../src/logging.ts';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import { replicateUpload } from '../../src/manager/replicateUpload.ts';
import { StageFailed, StagingArea, type TeedUpload } from '../../src/manager/stagingArea.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { listenOnLoopback } from '../helpers/loopbackServer.ts';
import { until } from '../helpers/until.ts';
import { AUTH, type RunningWorker, SECRET, sha256Of, startTempWorker } from '../storagenode/workerHarness.ts';
import { candidate } from './uploadCandidates.ts';

const log = createLogger('test');
const PNG_HEAD = Buffer.from('89504e470d0a1a0a0000000d49484452', 'hex');
const CHUNK = 64 * 1024;

function image(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 31 + seed) & 0xff;
  PNG_HEAD.copy(bytes, 0);
  return bytes;
}

/** `bytes` in CHUNK pieces; `after(offset)` runs before the piece at `offset` is handed out. */
async function* chunksOf(
  bytes: Buffer,
  after: (offset: number) => Promise<void> = async () => {},
): AsyncGenerator<Uint8Array> {
  for (let offset = 0; offset < bytes.length; offset += CHUNK) {
    await after(offset);
    yield bytes.subarray(offset, offset + CHUNK);
  }
}

const cleanups: (() => Promise<void>)[] = [];
let staging: StagingArea;
let stagingDir: string;
let client: WorkerClient;
let workers: Record<string, RunningWorker>;

beforeEach(async () => {
  stagingDir = await mkdtemp(join(tmpdir(), 'imgvault-tee-'));
  staging = await StagingArea.open(stagingDir);
  client = new WorkerClient({ secret: SECRET, idleTimeoutMs: 10_000 });
  workers = {};
  for (const id of ['w1', 'w2', 'w3']) workers[id] = await startTempWorker((undo) => cleanups.push(undo));
});

afterEach(async () => {
  await client.close();
  for (const undo of cleanups.splice(0)) await undo();
  await rm(stagingDir, { recursive: true, force: true });
});

/** w1 (least used) is the primary, w2 (another zone) the secondary, w3 the next target. */
function directory(urls: Record<string, string> = {}) {
  const nodes = [candidate('w1', 'z1', 10), candidate('w2', 'z2', 10), candidate('w3', 'z1', 50)];
  return {
    candidates: () => nodes,
    urlOf: (id: string) => urls[id] ?? workers[id]?.url,
  };
}

async function tee(body: AsyncIterable<Uint8Array>, size: number): Promise<TeedUpload> {
  const result = await staging.tee(body, 1 << 26, size, 2);
  if (!result.ok) throw new Error(`tee refused: ${result.error.message}`);
  return result.teed;
}

async function blobOn(worker: RunningWorker, id: string): Promise<{ status: number; bytes: Buffer }> {
  const res = await fetch(`${worker.url}/blobs/${id}`, { headers: AUTH });
  return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
}

it('stores the bytes of the upload on both workers while it arrives, checked by both', async () => {
  const bytes = image(1_500_000, 1);
  const teed = await tee(chunksOf(bytes), bytes.length);
  const result = await replicateUpload({ id: 'tee-both', teed, workers: directory(), client, log });
  const staged = await teed.staged;
  expect(result.replicas).toEqual(['w1', 'w2']);
  expect(staged).toMatchObject({ size: bytes.length, sha256: sha256Of(bytes), crc32c: crc32cHex(bytes) });
  expect(staged.contentType).toBe('image/png');
  for (const id of ['w1', 'w2']) {
    const copy = await blobOn(workers[id]!, 'tee-both');
    expect(copy.status).toBe(200);
    expect(copy.bytes.equals(bytes)).toBe(true);
  }
  expect((await blobOn(workers.w3!, 'tee-both')).status).toBe(404);
  await staging.release(staged);
  expect(await readdir(stagingDir)).toEqual([]);
});

it('replaces a worker that fails mid-stream by the next target, sent from the staged file', async () => {
  const bytes = image(2_000_000, 2);
  const fallbacks: string[] = [];
  const teed = await tee(
    chunksOf(bytes, async (offset) => {
      if (offset === 8 * CHUNK) await workers.w1!.stop();
    }),
    bytes.length,
  );
  const result = await replicateUpload({
    id: 'tee-failover',
    teed,
    workers: directory(),
    client,
    log,
    onFallback: (nodeId) => fallbacks.push(nodeId),
  });
  expect(fallbacks).toEqual(['w1']);
  expect(result.replicas).toEqual(['w3', 'w2']);
  for (const id of ['w2', 'w3'])
    expect((await blobOn(workers[id]!, 'tee-failover')).bytes.equals(bytes)).toBe(true);
  await staging.release(await teed.staged);
});

it('replaces a failed worker from the body held in memory, and gives its room back', async () => {
  const inMemory = await StagingArea.open(stagingDir, { memoryBytes: 4_000_000 });
  const bytes = image(2_000_000, 5);
  const result = await inMemory.tee(
    chunksOf(bytes, async (offset) => {
      if (offset === 8 * CHUNK) await workers.w1!.stop();
    }),
    1 << 26,
    bytes.length,
    2,
  );
  if (!result.ok) throw new Error(result.error.message);
  // 2,000,000 bytes pin 8 whole slabs of 256 KiB, and count as much.
  expect(inMemory.heldInMemory).toBe(8 * SLAB_BYTES);
  const replicated = await replicateUpload({
    id: 'tee-memory',
    teed: result.teed,
    workers: directory(),
    client,
    log,
  });
  expect(replicated.replicas).toEqual(['w3', 'w2']);
  for (const id of ['w2', 'w3'])
    expect((await blobOn(workers[id]!, 'tee-memory')).bytes.equals(bytes)).toBe(true);
  expect(await readdir(stagingDir)).toEqual([]);
  await inMemory.release(await result.teed.staged);
  expect(inMemory.heldInMemory).toBe(0);
});

/**
 * A worker reached through a proxy that answers another CRC32C than the one its worker computed:
 * a copy whose answer does not name the leader's checksums.
 */
async function lyingProxy(target: RunningWorker) {
  const proxy = await listenOnLoopback((req, res) => {
    const forward = httpRequest(
      `${target.url}${req.url}`,
      { method: req.method, headers: req.headers },
      async (answer) => {
        const parts: Buffer[] = [];
        for await (const part of answer) parts.push(part as Buffer);
        const text = Buffer.concat(parts).toString('utf8');
        const lie = text.replace(/"crc32c":"[0-9a-f]{8}"/, '"crc32c":"00000000"');
        res.writeHead(answer.statusCode ?? 500, { 'content-type': 'application/json' }).end(lie);
      },
    );
    req.pipe(forward);
  });
  cleanups.push(() => proxy.close());
  return proxy.url;
}

it('does not count a copy whose worker answers another CRC32C, and places it elsewhere', async () => {
  const bytes = image(700_000, 3);
  const teed = await tee(chunksOf(bytes), bytes.length);
  const result = await replicateUpload({
    id: 'tee-lie',
    teed,
    workers: directory({ w1: await lyingProxy(workers.w1!) }),
    client,
    log,
  });
  expect(result.replicas).toEqual(['w3', 'w2']);
  // The stray copy stays on w1, unrecorded: reconciliation removes it after its grace period.
  expect((await blobOn(workers.w1!, 'tee-lie')).status).toBe(200);
  for (const id of ['w2', 'w3'])
    expect((await blobOn(workers[id]!, 'tee-lie')).bytes.equals(bytes)).toBe(true);
  await staging.release(await teed.staged);
});

it('fails an upload whose body is cut short, leaving no copy and no staged file', async () => {
  const bytes = image(1_000_000, 4);
  const cut = new Error('the client went away');
  const teed = await tee(
    chunksOf(bytes, async (offset) => {
      if (offset === 6 * CHUNK) throw cut;
    }),
    bytes.length,
  );
  await expect(replicateUpload({ id: 'tee-cut', teed, workers: directory(), client, log })).rejects.toBe(cut);
  await expect(teed.staged).rejects.toBe(cut);
  expect(await readdir(stagingDir)).toEqual([]);
  for (const id of ['w1', 'w2', 'w3']) {
    expect((await blobOn(workers[id]!, 'tee-cut')).status).toBe(404);
    // The worker's temp file of the aborted copy goes once it sees the request end.
    await until(
      'no temp file left',
      async () => (await readdir(join(workers[id]!.dataDir, 'tmp'))).length === 0,
      10_000,
    );
  }
});

it('refuses a body that is no image from its first bytes, before any consumer exists', async () => {
  const text = Buffer.alloc(200_000, 'a');
  let handedOut = 0;
  const result = await staging.tee(
    chunksOf(text, async (offset) => {
      handedOut = offset + CHUNK;
    }),
    1 << 26,
    text.length,
    2,
  );
  expect(result.ok).toBe(false);
  if (!result.ok) expect(result.error.code).toBe('NotAnImage');
  expect(handedOut).toBe(CHUNK);
  expect(await readdir(stagingDir)).toEqual([]);
});

it('fails a body longer than the Content-Length it announced, before any copy is kept', async () => {
  const bytes = image(300_000, 5);
  const teed = await tee(chunksOf(bytes), 200_000);
  await expect(replicateUpload({ id: 'tee-long', teed, workers: directory(), client, log })).rejects.toThrow(
    /longer/,
  );
  // A client's fault, answered 400 LengthMismatch, not an internal error.
  await expect(teed.staged).rejects.toMatchObject({ error: { code: 'LengthMismatch' } });
  await expect(teed.staged).rejects.toBeInstanceOf(StageFailed);
  expect(await readdir(stagingDir)).toEqual([]);
  for (const id of ['w1', 'w2']) expect((await blobOn(workers[id]!, 'tee-long')).status).toBe(404);
});

it('keeps the copies of a body slower than the answer timeout, and replaces a worker that never answers', async () => {
  const patient = new WorkerClient({ secret: SECRET, idleTimeoutMs: 10_000, putAnswerTimeoutMs: 2_000 });
  cleanups.push(() => patient.close());
  // Takes every byte, answers nothing: only the bound from the last byte ends its copy.
  const silent = await listenOnLoopback((req) => req.resume());
  cleanups.push(() => silent.close());
  const bytes = image(600_000, 6);
  const fallbacks: string[] = [];
  const teed = await tee(
    chunksOf(bytes, async (offset) => {
      if (offset > 0) await sleep(600);
    }),
    bytes.length,
  );
  const result = await replicateUpload({
    id: 'tee-slow',
    teed,
    workers: directory({ w1: silent.url }),
    client: patient,
    log,
    onFallback: (nodeId) => fallbacks.push(nodeId),
  });
  // The body took over 5 s, more than twice the answer timeout: the secondary's copy stood.
  expect(fallbacks).toEqual(['w1']);
  expect(result.replicas).toEqual(['w3', 'w2']);
  for (const id of ['w2', 'w3'])
    expect((await blobOn(workers[id]!, 'tee-slow')).bytes.equals(bytes)).toBe(true);
  await staging.release(await teed.staged);
});

it('reads the body whole while a worker stops reading, then replaces that copy', async () => {
  // An answer bound far past the test: only the stall limit frees the body from the stuck worker.
  const patient = new WorkerClient({ secret: SECRET, idleTimeoutMs: 120_000, putAnswerTimeoutMs: 120_000 });
  cleanups.push(() => patient.close());
  // Reads the headers, then nothing: its socket fills and the copy's writes wait for a drain.
  const stuck = await listenOnLoopback((req) => req.pause());
  cleanups.push(() => stuck.close());
  const bytes = image(12 * 1024 * 1024, 7);
  const fallbacks: string[] = [];
  // The client sends at once; a 300 ms window asks 300 bytes of it.
  const body = withMinimumRate(chunksOf(bytes), { bytesPerSecond: 1_000, windowMs: 300 });
  const result = await staging.tee(body, 1 << 26, bytes.length, 2, 150);
  if (!result.ok) throw new Error(result.error.message);
  const { teed } = result;
  const replicated = replicateUpload({
    id: 'tee-stuck',
    teed,
    workers: directory({ w1: stuck.url }),
    client: patient,
    log,
    onFallback: (nodeId) => fallbacks.push(nodeId),
  });
  replicated.catch(() => {});
  const patience = new AbortController();
  const held = sleep(20_000, undefined, { signal: patience.signal }).then(() => {
    throw new Error('the body was held back by the stuck worker');
  });
  held.catch(() => {});
  const staged = await Promise.race([teed.staged, held]).finally(() => patience.abort());
  expect(staged.sha256).toBe(sha256Of(bytes));
  // The stuck worker's copy ends when its connection does; it is placed on w3 from the staged file.
  await stuck.close();
  expect((await replicated).replicas).toEqual(['w3', 'w2']);
  expect(fallbacks).toEqual(['w1']);
  for (const id of ['w2', 'w3'])
    expect((await blobOn(workers[id]!, 'tee-stuck')).bytes.equals(bytes)).toBe(true);
  await staging.release(staged);
});
