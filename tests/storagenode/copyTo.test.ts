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
  sha256Of,
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

async function copy(from: RunningWorker, id: string, body: unknown) {
  const res = await request(`${from.url}/blobs/${id}/copy-to`, {
    method: 'POST',
    body: JSON.stringify(body),
    headers: { ...AUTH, 'content-type': 'application/json' },
  });
  return { status: res.statusCode, json: (await res.body.json()) as JsonAnswer };
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

describe('POST /blobs/:id/copy-to', () => {
  it('streams a blob to another worker, which then serves the same bytes; a repeat is idempotent', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const size = 3 * 1024 * 1024 + 17;
    const sha256 = await putBlob(a, 'copied', size, 11);

    const first = await copy(a, 'copied', { target: b.url });
    expect(first).toEqual({
      status: 200,
      json: { id: 'copied', target: b.url, targetStatus: 201, size, sha256, crc32c: expect.any(String) },
    });
    const onB = await request(`${b.url}/blobs/copied`, { headers: AUTH });
    expect(onB.statusCode).toBe(200);
    expect(await sha256Stream(onB.body)).toEqual({ sha256, size });
    expect(b.store.counters()).toMatchObject({ blobCount: 1, blobBytes: size });

    const again = await copy(a, 'copied', { target: `${b.url}/` });
    expect(again.status).toBe(200);
    expect(again.json.targetStatus).toBe(200);
  });

  it('answers 404 for a blob it does not hold, without contacting the target', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const res = await copy(a, 'absent', { target: b.url });
    expect(res.status).toBe(404);
    expect(res.json.error.code).toBe('BlobNotFound');
    const inv = await request(`${b.url}/metrics`, { headers: AUTH });
    expect(await inv.body.text()).not.toContain('method="PUT"');
  });

  it('refuses with 409, sending nothing, when its copy is not the checksum the caller expects', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const held = await putBlob(a, 'other-bytes', 4096, 7);
    const res = await copy(a, 'other-bytes', { target: b.url, sha256: 'f'.repeat(64) });
    expect(res.status).toBe(409);
    expect(res.json.error.code).toBe('BlobConflict');
    expect((await b.store.stat('other-bytes')).ok).toBe(false);
    // The expected checksum given and right: the copy goes ahead.
    const ok = await copy(a, 'other-bytes', { target: b.url, sha256: held });
    expect(ok.status).toBe(200);
    expect((await b.store.stat('other-bytes')).ok).toBe(true);
  });

  it('validates the target URL', async () => {
    const a = await worker('a');
    await putBlob(a, 'blob', 10, 1);
    for (const body of [
      {},
      { target: '' },
      { target: 'not a url' },
      { target: 'ftp://127.0.0.1/' },
      { target: 'file:///etc/passwd' },
      { target: 'http://user:pw@127.0.0.1:1/' },
      { target: 42 },
    ]) {
      const res = await copy(a, 'blob', body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.json.error.code).toBe('InvalidRequest');
    }
    const notJson = await request(`${a.url}/blobs/blob/copy-to`, {
      method: 'POST',
      body: 'target=http://x',
      headers: { ...AUTH, 'content-type': 'application/json' },
    });
    expect(notJson.statusCode).toBe(400);
    await notJson.body.dump();
  });

  it('answers 502 naming the status of a target that refuses the blob', async () => {
    const a = await worker('a');
    const small = await worker('small', { maxBlobBytes: 1000 });
    const otherSecret = await worker('other', { secret: 'some-other-cluster' });
    await putBlob(a, 'refused', 5000, 3);

    const tooBig = await copy(a, 'refused', { target: small.url });
    expect(tooBig.status).toBe(502);
    expect(tooBig.json.error).toMatchObject({
      code: 'CopyTargetFailed',
      target: small.url,
      targetStatus: 413,
      targetError: 'PayloadTooLarge',
    });

    const unauthorised = await copy(a, 'refused', { target: otherSecret.url });
    expect(unauthorised.status).toBe(502);
    expect(unauthorised.json.error).toMatchObject({ targetStatus: 401, targetError: 'Unauthorized' });
  });

  it('answers 502 when the target cannot be reached', async () => {
    const a = await worker('a');
    await putBlob(a, 'lonely', 100, 4);
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', () => resolve()));
    const port = (closed.address() as AddressInfo).port;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const res = await copy(a, 'lonely', { target: `http://127.0.0.1:${port}` });
    expect(res.status).toBe(502);
    expect(res.json.error).toMatchObject({ code: 'CopyTargetFailed', targetStatus: null });
  });

  it('answers 502 when the target dies mid-stream, and the target keeps nothing', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const size = 8 * 1024 * 1024;
    await putBlob(a, 'interrupted', size, 5);
    const proxy = await cuttingProxy(b.port, 512 * 1024);

    const res = await copy(a, 'interrupted', { target: proxy.url });
    expect(res.status).toBe(502);
    expect(res.json.error).toMatchObject({ code: 'CopyTargetFailed', targetStatus: null, target: proxy.url });
    expect(proxy.cuts()).toBe(1);

    // The target saw the body end early (its handler answered BodyAborted to nobody): its temp
    // file went with it and nothing is indexed.
    const abortedOnTarget = async () =>
      (await b.worker.metrics.errors.get()).values.find((v) => v.labels.kind === 'BodyAborted')?.value ?? 0;
    await until('(await abortedOnTarget()) === 1', async () => (await abortedOnTarget()) === 1, 5000);
    expect(await readdir(b.store.tmpDir)).toEqual([]);
    const held = await request(`${b.url}/blobs/interrupted`, { method: 'HEAD', headers: AUTH });
    expect(held.statusCode).toBe(404);
    await held.body.dump();
    expect(b.store.counters()).toMatchObject({ blobCount: 0, blobBytes: 0, reservedBytes: 0 });

    // The source still holds its copy and can copy it once the path is healthy.
    const retry = await copy(a, 'interrupted', { target: b.url });
    expect(retry.status).toBe(200);
    expect(retry.json.targetStatus).toBe(201);
  });

  it('copies a small blob whose id needs no escaping but uses every allowed character', async () => {
    const a = await worker('a');
    const b = await worker('b');
    const id = 'Az09._-x';
    const body = Buffer.from('tiny');
    const put = await request(`${a.url}/blobs/${id}`, {
      method: 'PUT',
      body,
      headers: { ...AUTH, 'x-imgvault-sha256': sha256Of(body) },
    });
    expect(put.statusCode).toBe(201);
    await put.body.dump();
    expect((await copy(a, id, { target: b.url })).status).toBe(200);
    const got = await request(`${b.url}/blobs/${id}`, { headers: AUTH });
    expect(Buffer.from(await got.body.arrayBuffer()).toString()).toBe('tiny');
  });
});

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
