import { readdir } from 'node:fs/promises';
import { type AddressInfo, connect, createServer, type Server, type Socket } from 'node:net';
import { request } from 'undici';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { until } from '../helpers/until.ts';
import {
  AUTH,
  flipByte,
  type JsonAnswer,
  patternStream,
  type RunningWorker,
  sha256Stream,
  type startWorker,
  useWorkerFolder,
} from './workerHarness.ts';

const folder = useWorkerFolder();
const worker = (name: string, options: Parameters<typeof startWorker>[1] = {}) => folder.start(name, options);
let servers: Server[] = [];

beforeEach(() => {
  servers = [];
});

// Runs before the folder's hook (after-hooks run last registered first): servers, then workers.
afterEach(async () => {
  for (const s of servers) await new Promise<void>((resolve) => s.close(() => resolve()));
});

async function putBlob(w: RunningWorker, id: string, size: number, seed: number): Promise<string> {
  const { sha256 } = await sha256Stream(patternStream(size, seed));
  const res = await request(`${w.url}/blobs/${id}`, {
    method: 'PUT',
    body: patternStream(size, seed),
    headers: { ...AUTH, 'x-imgvault-sha256': sha256, 'content-length': String(size) },
  });
  expect(res.statusCode).toBe(201);
  await res.body.dump();
  return sha256;
}

/**
 * A TCP proxy to `targetPort` that forwards the first `cutAfter` bytes of each request and then
 * destroys both sockets: a target that dies in the middle of receiving a blob.
 */
async function cuttingProxy(
  targetPort: number,
  cutAfter: number,
): Promise<{ url: string; cuts: () => number }> {
  let cuts = 0;
  const server = createServer((client: Socket) => {
    const upstream = connect(targetPort, '127.0.0.1');
    let forwarded = 0;
    client.on('data', (chunk: Buffer) => {
      const room = cutAfter - forwarded;
      if (chunk.length >= room) {
        upstream.write(chunk.subarray(0, room), () => {
          cuts += 1;
          upstream.destroy();
          client.destroy();
        });
        forwarded = cutAfter;
        client.pause();
        return;
      }
      forwarded += chunk.length;
      upstream.write(chunk);
    });
    upstream.on('data', (chunk: Buffer) => client.write(chunk));
    client.on('error', () => upstream.destroy());
    upstream.on('error', () => client.destroy());
    client.on('close', () => upstream.destroy());
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, cuts: () => cuts };
}

async function copyBatch(from: RunningWorker, body: unknown) {
  const res = await request(`${from.url}/blobs/copy-batch`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { ...AUTH, 'content-type': 'application/json' },
  });
  return { status: res.statusCode, json: (await res.body.json()) as JsonAnswer };
}

describe('POST /blobs/copy-batch', () => {
  it('copies many blobs to one target in one request, with one result per blob in request order', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const shas: string[] = [];
    for (let i = 0; i < 9; i++) shas.push(await putBlob(a, `batch-${i}`, 100_000 + i, 20 + i));
    const held = await putBlob(a, 'mismatch', 2048, 40);

    const res = await copyBatch(a, {
      target: b.url,
      blobs: [
        ...shas.map((sha256, i) => ({ id: `batch-${i}`, sha256 })),
        { id: 'absent' },
        { id: 'mismatch', sha256: 'e'.repeat(64) },
        { id: '../escape' },
      ],
    });
    expect(res.status).toBe(200);
    expect(res.json.target).toBe(b.url);
    const results = res.json.results as JsonAnswer[];
    expect(results.map((r) => [r.id, r.ok])).toEqual([
      ...shas.map((_, i) => [`batch-${i}`, true]),
      ['absent', false],
      ['mismatch', false],
      ['../escape', false],
    ]);
    results.slice(0, 9).forEach((r, i) => {
      expect(r).toEqual({
        ok: true,
        id: `batch-${i}`,
        target: b.url,
        targetStatus: 201,
        size: 100_000 + i,
        sha256: shas[i],
      });
    });
    expect(results[9]!.error.code).toBe('BlobNotFound');
    expect(results[10]!.error).toMatchObject({ code: 'BlobConflict', sha256: held });
    expect(results[11]!.error.code).toBe('InvalidBlobId');

    for (let i = 0; i < 9; i++) {
      const got = await request(`${b.url}/blobs/batch-${i}`, { headers: AUTH });
      expect(await sha256Stream(got.body)).toEqual({ sha256: shas[i], size: 100_000 + i });
    }
    expect((await b.store.stat('mismatch')).ok).toBe(false);
    expect(b.store.counters()).toMatchObject({ blobCount: 9 });
  });

  it('sends a rotten blob as it lies: only it fails, at the target, and the holder then removes it', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const shas: string[] = [];
    for (let i = 0; i < 3; i++) shas.push(await putBlob(a, `rot-${i}`, 300_000, 50 + i));
    await flipByte(a.store.blobPath('rot-1'), 1000);
    const lost: string[] = [];
    a.store.onLost((id) => lost.push(id));

    const res = await copyBatch(a, {
      target: b.url,
      blobs: shas.map((sha256, i) => ({ id: `rot-${i}`, sha256 })),
    });
    expect(res.status).toBe(200);
    const results = res.json.results as JsonAnswer[];
    expect(results.map((r) => [r.id, r.ok])).toEqual([
      ['rot-0', true],
      ['rot-1', false],
      ['rot-2', true],
    ]);
    expect(results[1]!.error).toMatchObject({ code: 'CopyTargetFailed', targetError: 'ChecksumMismatch' });
    expect(lost).toEqual(['rot-1']);
    expect((await a.store.stat('rot-1')).ok).toBe(false);
    expect((await b.store.stat('rot-1')).ok).toBe(false);
    for (const i of [0, 2]) {
      const got = await request(`${b.url}/blobs/rot-${i}`, { headers: AUTH });
      expect(await sha256Stream(got.body)).toEqual({ sha256: shas[i], size: 300_000 });
    }
  });

  it('fails every blob when the target dies mid-batch; the target keeps only whole blobs', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const ids = ['m-0', 'm-1', 'm-2', 'm-3'];
    for (const [i, id] of ids.entries()) await putBlob(a, id, 300_000, 60 + i);
    const proxy = await cuttingProxy(b.port, 700_000);

    const res = await copyBatch(a, { target: proxy.url, blobs: ids.map((id) => ({ id })) });
    expect(res.status).toBe(200);
    for (const r of res.json.results as JsonAnswer[]) {
      expect(r).toMatchObject({ ok: false, error: { code: 'CopyTargetFailed', targetStatus: null } });
    }
    // Two blobs fit in the first 700 kB; the third was cut: whole or absent, never partial.
    const abortedOnTarget = async () =>
      (await b.worker.metrics.errors.get()).values.find((v) => v.labels.kind === 'BodyAborted')?.value ?? 0;
    await until('(await abortedOnTarget()) === 1', async () => (await abortedOnTarget()) === 1, 5000);
    expect(await readdir(b.store.tmpDir)).toEqual([]);
    for (const id of ids) {
      const held = await b.store.stat(id);
      if (held.ok) expect(held.value.size).toBe(300_000);
    }
    expect((await b.store.stat('m-2')).ok).toBe(false);
    expect(b.store.counters()).toMatchObject({ reservedBytes: 0 });

    const retry = await copyBatch(a, { target: b.url, blobs: ids.map((id) => ({ id })) });
    expect((retry.json.results as JsonAnswer[]).every((r) => r.ok === true)).toBe(true);
  });

  it('validates the target URL', async () => {
    const a = await worker('a');
    await putBlob(a, 'blob', 10, 1);
    for (const target of [
      undefined,
      '',
      'not a url',
      'ftp://127.0.0.1/',
      'file:///etc/passwd',
      'http://user:pw@127.0.0.1:1/',
      42,
    ]) {
      const res = await copyBatch(a, { target, blobs: [{ id: 'blob' }] });
      expect(res.status, JSON.stringify(target)).toBe(400);
      expect(res.json.error.code).toBe('InvalidRequest');
    }
    const notJson = await request(`${a.url}/blobs/copy-batch`, {
      method: 'POST',
      body: 'target=http://x',
      headers: { ...AUTH, 'content-type': 'application/json' },
    });
    expect(notJson.statusCode).toBe(400);
    await notJson.body.dump();
  });

  it('reports a target that refuses or cannot be reached on every blob, and validates the body', async () => {
    const a = await worker('a');
    const small = await worker('small', { maxBlobBytes: 1000 });
    await putBlob(a, 'big', 5000, 3);
    await putBlob(a, 'fits', 500, 4);

    const mixed = await copyBatch(a, { target: small.url, blobs: [{ id: 'big' }, { id: 'fits' }] });
    expect(mixed.status).toBe(200);
    expect((mixed.json.results as JsonAnswer[])[0]).toMatchObject({
      id: 'big',
      ok: false,
      error: { code: 'CopyTargetFailed', targetStatus: 413, targetError: 'PayloadTooLarge' },
    });
    expect((mixed.json.results as JsonAnswer[])[1]).toMatchObject({
      id: 'fits',
      ok: true,
      targetStatus: 201,
    });

    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const unreachable = await copyBatch(a, { target: `http://127.0.0.1:${port}`, blobs: [{ id: 'fits' }] });
    expect((unreachable.json.results as JsonAnswer[])[0]).toMatchObject({
      ok: false,
      error: { code: 'CopyTargetFailed', targetStatus: null },
    });

    for (const body of [
      { target: small.url },
      { target: small.url, blobs: [] },
      { target: small.url, blobs: [{ id: 'fits' }, { id: 'fits' }] },
      { target: small.url, blobs: Array.from({ length: 257 }, (_, i) => ({ id: `b${i}` })) },
      { target: 'ftp://127.0.0.1/', blobs: [{ id: 'fits' }] },
      { target: small.url, blobs: [{ id: 'fits', sha256: 'xyz' }] },
    ]) {
      const res = await copyBatch(a, body);
      expect(res.status, JSON.stringify(body).slice(0, 80)).toBe(400);
      expect(res.json.error.code).toBe('InvalidRequest');
    }
  });
});
