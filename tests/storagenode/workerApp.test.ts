import { appendFile, readdir, stat, truncate, unlink } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import path from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import type { StoreStats } from '../../src/storagenode/blobStore.ts';
import {
  AUTH,
  flipByte,
  type JsonAnswer,
  patternStream,
  type RunningWorker,
  retainedBytes,
  sha256Of,
  sha256Stream,
  type startWorker,
  useWorkerFolder,
} from './workerHarness.ts';

const SHA = 'x-imgvault-sha256';

const folder = useWorkerFolder();
const worker = (options: Parameters<typeof startWorker>[1] = {}) => folder.start('data', options);

async function put(w: RunningWorker, id: string, body: Buffer, sha = sha256Of(body)) {
  const res = await request(`${w.url}/blobs/${id}`, {
    method: 'PUT',
    body,
    headers: { ...AUTH, [SHA]: sha },
  });
  return { status: res.statusCode, json: (await res.body.json()) as JsonAnswer };
}

async function get(w: RunningWorker, id: string, headers: Record<string, string> = {}) {
  const res = await request(`${w.url}/blobs/${id}`, { headers: { ...AUTH, ...headers } });
  return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) };
}

async function inventoryIds(w: RunningWorker): Promise<string[]> {
  const res = await request(`${w.url}/inventory`, { headers: AUTH });
  expect(res.statusCode).toBe(200);
  const text = await res.body.text();
  return text
    .split('\n')
    .filter((line) => line !== '')
    .map((line) => JSON.parse(line).id as string);
}

async function tmpFiles(w: RunningWorker): Promise<string[]> {
  return readdir(w.store.tmpDir);
}

async function metricsText(w: RunningWorker): Promise<string> {
  const res = await request(`${w.url}/metrics`, { headers: AUTH });
  return res.body.text();
}

function metricValue(text: string, series: string): number {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? 0 : Number(line.slice(series.length + 1));
}

describe('PUT /blobs/:id', () => {
  it('stores new bytes with 201, answers a retry of the same bytes with 200 and other bytes with 409', async () => {
    const w = await worker();
    const first = Buffer.from('the first version of the bytes');
    expect(await put(w, 'img-1', first)).toEqual({
      status: 201,
      json: { id: 'img-1', size: first.length, sha256: sha256Of(first), crc32c: crc32cHex(first) },
    });
    expect((await put(w, 'img-1', first)).status).toBe(200);

    const other = Buffer.from('other bytes under the same id');
    const conflict = await put(w, 'img-1', other);
    expect(conflict.status).toBe(409);
    expect(conflict.json.error.code).toBe('BlobConflict');

    const stored = await get(w, 'img-1');
    expect(stored.body.equals(first)).toBe(true);
    expect(w.store.counters()).toMatchObject({ blobCount: 1, blobBytes: first.length });
    expect(await tmpFiles(w)).toEqual([]);
  });

  it('refuses a body that does not hash to the announced sha256 with 422 and keeps nothing', async () => {
    const w = await worker();
    const body = Buffer.from('bytes damaged on the way');
    const res = await put(w, 'img-2', body, sha256Of(Buffer.from('what was meant')));
    expect(res.status).toBe(422);
    expect(res.json.error).toMatchObject({ code: 'ChecksumMismatch', actualSha256: sha256Of(body) });
    expect(await tmpFiles(w)).toEqual([]);
    expect(await inventoryIds(w)).toEqual([]);
    expect((await get(w, 'img-2')).status).toBe(404);
    expect(w.store.counters()).toMatchObject({ blobCount: 0, blobBytes: 0 });
  });

  it('refuses a retry whose bytes do not match the stored blob with 422', async () => {
    const w = await worker();
    const body = Buffer.from('stored bytes');
    expect((await put(w, 'img-3', body)).status).toBe(201);
    const res = await put(w, 'img-3', Buffer.from('not the stored bytes'), sha256Of(body));
    expect(res.status).toBe(422);
    expect((await get(w, 'img-3')).body.equals(body)).toBe(true);
  });

  it('requires a well-formed sha256 header', async () => {
    const w = await worker();
    const missing = await request(`${w.url}/blobs/img`, { method: 'PUT', body: 'x', headers: AUTH });
    expect(missing.statusCode).toBe(400);
    expect(((await missing.body.json()) as JsonAnswer).error.code).toBe('InvalidRequest');
    expect((await put(w, 'img', Buffer.from('x'), 'not-a-digest')).status).toBe(400);
  });

  it('round-trips a 64 MiB blob streamed both ways without holding it in memory', async () => {
    const w = await worker();
    const size = 64 * 1024 * 1024;
    const { sha256 } = await sha256Stream(patternStream(size, 7));
    const baseline = await retainedBytes();
    let midUpload = 0;
    let sent = 0;
    const upload = (async function* () {
      for await (const chunk of patternStream(size, 7)) {
        sent += chunk.length;
        if (midUpload === 0 && sent >= size / 2) midUpload = await retainedBytes();
        yield chunk as Buffer;
      }
    })();
    const putRes = await request(`${w.url}/blobs/big-one`, {
      method: 'PUT',
      body: Readable.from(upload),
      headers: { ...AUTH, [SHA]: sha256, 'content-length': String(size) },
    });
    expect(putRes.statusCode).toBe(201);
    await putRes.body.dump();

    const getRes = await request(`${w.url}/blobs/big-one`, { headers: AUTH });
    expect(getRes.statusCode).toBe(200);
    expect(getRes.headers['content-length']).toBe(String(size));
    expect(getRes.headers.etag).toBe(`"${sha256}"`);
    let received = 0;
    let midDownload = 0;
    const hashed = await sha256Stream(
      (async function* () {
        for await (const chunk of getRes.body) {
          received += chunk.length;
          if (midDownload === 0 && received >= size / 2) midDownload = await retainedBytes();
          yield chunk as Uint8Array;
        }
      })(),
    );
    expect(hashed).toEqual({ sha256, size });
    // A body buffered whole would hold at least half the blob at the midpoint of either transfer.
    const bound = 16 * 1024 * 1024;
    expect(midUpload - baseline).toBeLessThan(bound);
    expect(midDownload - baseline).toBeLessThan(bound);
    expect(w.store.counters()).toMatchObject({ blobCount: 1, blobBytes: size });
  }, 60_000);

  it('serialises two concurrent PUTs of the same id: one creates, the other sees the same blob', async () => {
    const w = await worker();
    const body = Buffer.alloc(2 * 1024 * 1024, 0x5a);
    const results = await Promise.all([put(w, 'same', body), put(w, 'same', body)]);
    expect(results.map((r) => r.status).sort()).toEqual([200, 201]);
    expect((await get(w, 'same')).body.equals(body)).toBe(true);
    expect(w.store.counters()).toMatchObject({ blobCount: 1, blobBytes: body.length });
    expect(await tmpFiles(w)).toEqual([]);
  });

  it('lets exactly one of two concurrent PUTs with different bytes win; the other gets 409', async () => {
    const w = await worker();
    const a = Buffer.alloc(1024 * 1024, 0x01);
    const b = Buffer.alloc(1024 * 1024, 0x02);
    const results = await Promise.all([put(w, 'race', a), put(w, 'race', b)]);
    expect(results.map((r) => r.status).sort()).toEqual([201, 409]);
    const winner = results[0]?.status === 201 ? a : b;
    const stored = await get(w, 'race');
    expect(stored.body.equals(winner)).toBe(true);
    expect(stored.headers.etag).toBe(`"${sha256Of(winner)}"`);
    expect(w.store.counters()).toMatchObject({ blobCount: 1, blobBytes: winner.length });
    expect(await tmpFiles(w)).toEqual([]);
  });
});

describe('limits', () => {
  it('answers 413 from content-length before reading the body', async () => {
    const w = await worker({ maxBlobBytes: 1024 });
    const body = Buffer.alloc(4096, 1);
    const res = await put(w, 'too-big', body);
    expect(res.status).toBe(413);
    expect(res.json.error.code).toBe('PayloadTooLarge');
    expect(metricValue(await metricsText(w), 'imgvault_worker_bytes_received_total')).toBe(0);
    expect(await inventoryIds(w)).toEqual([]);
    expect(await tmpFiles(w)).toEqual([]);
  });

  it('answers 413 to a chunked body as soon as the count crosses the limit, without reading it whole', async () => {
    const w = await worker({ maxBlobBytes: 1024 * 1024 });
    let pulled = 0;
    const total = 1024 * 1024 * 1024;
    async function* endless() {
      for (let sent = 0; sent < total; sent += 64 * 1024) {
        pulled += 64 * 1024;
        yield Buffer.alloc(64 * 1024, 3);
      }
    }
    const res = await request(`${w.url}/blobs/chunked-big`, {
      method: 'PUT',
      body: Readable.from(endless()),
      headers: { ...AUTH, [SHA]: 'a'.repeat(64) },
    });
    expect(res.statusCode).toBe(413);
    expect(((await res.body.json()) as JsonAnswer).error.code).toBe('PayloadTooLarge');
    // Socket buffers let a few MiB through; reading the whole GiB would mean the limit did nothing.
    expect(pulled).toBeLessThan(64 * 1024 * 1024);
    expect(await inventoryIds(w)).toEqual([]);
    expect(await tmpFiles(w)).toEqual([]);
  });

  it('answers 507 over the quota, with content-length or chunked, and leaves nothing behind', async () => {
    const w = await worker({ quotaBytes: 100_000 });
    const first = Buffer.alloc(60_000, 1);
    expect((await put(w, 'fits', first)).status).toBe(201);
    const before = w.store.counters();

    const second = Buffer.alloc(60_000, 2);
    const withLength = await put(w, 'over-quota', second);
    expect(withLength.status).toBe(507);
    expect(withLength.json.error).toMatchObject({ code: 'InsufficientStorage', quotaBytes: 100_000 });

    const chunked = await request(`${w.url}/blobs/over-quota`, {
      method: 'PUT',
      body: Readable.from(
        (async function* () {
          for (let i = 0; i < 6; i++) yield second.subarray(i * 10_000, (i + 1) * 10_000);
        })(),
      ),
      headers: { ...AUTH, [SHA]: sha256Of(second) },
    });
    expect(chunked.statusCode).toBe(507);
    await chunked.body.dump();

    expect(await tmpFiles(w)).toEqual([]);
    expect(await inventoryIds(w)).toEqual(['fits']);
    expect((await get(w, 'over-quota')).status).toBe(404);
    expect(w.store.counters()).toEqual(before);
    const stats = (await (await request(`${w.url}/stats`, { headers: AUTH })).body.json()) as StoreStats;
    expect(stats).toMatchObject({ blobCount: 1, blobBytes: 60_000, quotaBytes: 100_000 });
  });
});

describe('GET and HEAD /blobs/:id', () => {
  const body = Buffer.from(Array.from({ length: 1000 }, (_, i) => i % 251));

  it('streams the whole blob with length, etag and accept-ranges', async () => {
    const w = await worker();
    await put(w, 'ranged', body);
    const res = await get(w, 'ranged');
    expect(res.status).toBe(200);
    expect(res.body.equals(body)).toBe(true);
    expect(res.headers).toMatchObject({
      'content-length': '1000',
      'accept-ranges': 'bytes',
      etag: `"${sha256Of(body)}"`,
    });
  });

  it.each([
    ['bytes=0-9', 0, 9],
    ['bytes=100-199', 100, 199],
    ['bytes=-10', 990, 999],
    ['bytes=995-', 995, 999],
    ['bytes=990-5000', 990, 999],
  ])('serves %s as 206 with content-range', async (range, start, end) => {
    const w = await worker();
    await put(w, 'ranged', body);
    const res = await get(w, 'ranged', { range });
    expect(res.status).toBe(206);
    expect(res.headers['content-range']).toBe(`bytes ${start}-${end}/1000`);
    expect(res.headers['content-length']).toBe(String(end - start + 1));
    expect(res.body.equals(body.subarray(start, end + 1))).toBe(true);
  });

  it('checks a whole small blob before its first byte: a rotten copy answers 500, and is removed', async () => {
    const w = await worker();
    await put(w, 'rotten-small', body);
    await flipByte(w.store.blobPath('rotten-small'), 500);
    const res = await get(w, 'rotten-small');
    expect(res.status).toBe(500);
    expect(JSON.parse(res.body.toString()).error.message).toMatch(/does not match its checksum/);
    const deadline = Date.now() + 10_000;
    while ((await w.store.stat('rotten-small')).ok && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    expect((await get(w, 'rotten-small')).status).toBe(404);
  });

  it('answers 500 to a copy cut short or grown, whole, streamed or ranged (404 to one whose file is gone), and removes and reports it at once', async () => {
    const w = await worker();
    const small = Buffer.from(Array.from({ length: 40_000 }, (_, i) => i % 253));
    const large = Buffer.alloc(2 * 1024 * 1024 + 5, 3);
    await put(w, 'cut-small', small);
    await put(w, 'cut-large', large);
    await put(w, 'cut-ranged', small);
    await put(w, 'grown', small);
    await put(w, 'rotten', small);
    await put(w, 'unlinked', small);
    const entries = [];
    for await (const entry of w.store.inventory()) entries.push(entry);
    const lost: string[] = [];
    w.store.onLost((id) => lost.push(id));
    for (const id of ['cut-small', 'cut-large', 'cut-ranged']) {
      const file = w.store.blobPath(id);
      await truncate(file, Math.floor((await stat(file)).size / 2));
    }
    await appendFile(w.store.blobPath('grown'), Buffer.alloc(10));
    await flipByte(w.store.blobPath('rotten'), 100);
    await unlink(w.store.blobPath('unlinked'));

    expect((await get(w, 'cut-small')).status).toBe(500);
    const streamed = await request(`${w.url}/blobs/cut-large`, { headers: AUTH });
    expect(streamed.statusCode).toBe(500);
    await streamed.body.dump();
    expect((await get(w, 'cut-ranged', { range: 'bytes=0-99' })).status).toBe(500);
    expect((await get(w, 'grown')).status).toBe(500);
    expect((await get(w, 'rotten')).status).toBe(500);
    expect((await get(w, 'unlinked')).status).toBe(404);

    // Removed and reported by the reads themselves, not left for the scrubber's next pass: a
    // read-back queued behind theirs (the id's lock) finds each gone.
    for (const entry of entries) expect([entry.id, await w.store.scrub(entry)]).toEqual([entry.id, 'gone']);
    expect(lost.sort()).toEqual(['cut-large', 'cut-ranged', 'cut-small', 'grown', 'rotten', 'unlinked']);
    for (const id of lost) expect((await get(w, id)).status).toBe(404);
    expect(metricValue(await metricsText(w), 'imgvault_worker_scrub_lost_total')).toBe(6);
  });

  it('streams a whole blob larger than a buffered read, checked as it goes', async () => {
    const w = await worker();
    const big = Buffer.alloc(3 * 1024 * 1024 + 17, 9);
    await put(w, 'big-read', big);
    const res = await get(w, 'big-read');
    expect(res.status).toBe(200);
    expect(res.body.equals(big)).toBe(true);
    expect(res.headers.etag).toBe(`"${sha256Of(big)}"`);
  });

  it('answers 416 with bytes */size to an unsatisfiable range', async () => {
    const w = await worker();
    await put(w, 'ranged', body);
    for (const range of ['bytes=1000-', 'bytes=5000-6000', 'bytes=-0']) {
      const res = await get(w, 'ranged', { range });
      expect(res.status, range).toBe(416);
      expect(res.headers['content-range']).toBe('bytes */1000');
      expect(JSON.parse(res.body.toString()).error.code).toBe('RangeNotSatisfiable');
    }
  });

  it('answers HEAD with the headers of GET and no body', async () => {
    const w = await worker();
    await put(w, 'ranged', body);
    const res = await request(`${w.url}/blobs/ranged`, { method: 'HEAD', headers: AUTH });
    expect(res.statusCode).toBe(200);
    expect(res.headers).toMatchObject({ 'content-length': '1000', etag: `"${sha256Of(body)}"` });
    expect((await res.body.arrayBuffer()).byteLength).toBe(0);
    const ranged = await request(`${w.url}/blobs/ranged`, {
      method: 'HEAD',
      headers: { ...AUTH, range: 'bytes=-4' },
    });
    expect(ranged.statusCode).toBe(206);
    expect(ranged.headers['content-range']).toBe('bytes 996-999/1000');
    await ranged.body.dump();
    const absent = await request(`${w.url}/blobs/absent`, { method: 'HEAD', headers: AUTH });
    expect(absent.statusCode).toBe(404);
    await absent.body.dump();
  });

  it('serves an empty blob', async () => {
    const w = await worker();
    expect((await put(w, 'empty', Buffer.alloc(0))).status).toBe(201);
    const res = await get(w, 'empty');
    expect(res.status).toBe(200);
    expect(res.body.length).toBe(0);
    expect(res.headers['content-length']).toBe('0');
  });
});

describe('DELETE /blobs/:id', () => {
  it('answers 204, then 404; the file and the index entry are gone', async () => {
    const w = await worker();
    const body = Buffer.from('to be deleted');
    await put(w, 'doomed', body);
    const file = w.store.blobPath('doomed');
    const del = await request(`${w.url}/blobs/doomed`, { method: 'DELETE', headers: AUTH });
    expect(del.statusCode).toBe(204);
    await del.body.dump();
    await expect(readdir(path.dirname(file))).resolves.not.toContain('doomed');
    expect(await inventoryIds(w)).toEqual([]);
    expect((await get(w, 'doomed')).status).toBe(404);
    expect(w.store.counters()).toMatchObject({ blobCount: 0, blobBytes: 0 });
    const again = await request(`${w.url}/blobs/doomed`, { method: 'DELETE', headers: AUTH });
    expect(again.statusCode).toBe(404);
    expect(((await again.body.json()) as JsonAnswer).error.code).toBe('BlobNotFound');
  });
});

describe('POST /blobs/:id/verify', () => {
  it('reads the copy back: intact with its checksum, missing, or rotten and then removed and reported', async () => {
    const w = await worker();
    const body = Buffer.from('bytes to prove'.repeat(100));
    await put(w, 'proved', body);
    await put(w, 'rots', body);
    await flipByte(w.store.blobPath('rots'), 3);
    const lost: string[] = [];
    w.store.onLost((id) => lost.push(id));
    const verify = async (id: string) => {
      const res = await request(`${w.url}/blobs/${id}/verify`, { method: 'POST', headers: AUTH });
      return { status: res.statusCode, json: (await res.body.json()) as JsonAnswer };
    };
    expect(await verify('proved')).toEqual({
      status: 200,
      json: { id: 'proved', state: 'intact', size: body.length, sha256: sha256Of(body) },
    });
    expect(await verify('never-stored')).toEqual({
      status: 200,
      json: { id: 'never-stored', state: 'missing' },
    });
    expect(await verify('rots')).toEqual({ status: 200, json: { id: 'rots', state: 'rotten' } });
    expect(lost).toEqual(['rots']);
    expect((await w.store.stat('rots')).ok).toBe(false);
    expect((await verify('..%2Fescape')).status).toBe(400);
  });
});

describe('authentication', () => {
  it('refuses every route but /healthz without the cluster secret or with a wrong one', async () => {
    const w = await worker();
    await put(w, 'secret-blob', Buffer.from('x'));
    const healthz = await request(`${w.url}/healthz`);
    expect(healthz.statusCode).toBe(200);
    await healthz.body.dump();
    const routes: Array<[string, string]> = [
      ['PUT', '/blobs/secret-blob'],
      ['GET', '/blobs/secret-blob'],
      ['HEAD', '/blobs/secret-blob'],
      ['DELETE', '/blobs/secret-blob'],
      ['POST', '/blobs/copy-batch'],
      ['POST', '/blobs/secret-blob/verify'],
      ['GET', '/inventory'],
      ['GET', '/stats'],
      ['GET', '/metrics'],
    ];
    for (const headers of [{}, { [CLUSTER_SECRET_HEADER]: 'wrong-secret' }]) {
      for (const [method, route] of routes) {
        const res = await request(`${w.url}${route}`, {
          method: method as 'GET',
          headers: { ...headers, [SHA]: sha256Of(Buffer.from('y')) },
          body: method === 'PUT' || method === 'POST' ? 'y' : undefined,
        });
        expect(res.statusCode, `${method} ${route}`).toBe(401);
        if (method !== 'HEAD')
          expect(((await res.body.json()) as JsonAnswer).error.code).toBe('Unauthorized');
        else await res.body.dump();
      }
    }
    expect((await get(w, 'secret-blob')).body.toString()).toBe('x');
  });
});

describe('hostile ids', () => {
  /** Raw paths, so no client normalises them before the server sees them. */
  function rawPut(w: RunningWorker, rawPath: string): Promise<number> {
    return new Promise((resolve, reject) => {
      const body = Buffer.from('payload');
      const req = httpRequest(
        {
          host: '127.0.0.1',
          port: w.port,
          method: 'PUT',
          path: rawPath,
          headers: { ...AUTH, [SHA]: sha256Of(body), 'content-length': body.length },
        },
        (res) => {
          res.resume();
          res.on('end', () => resolve(res.statusCode ?? 0));
        },
      );
      req.on('error', reject);
      req.end(body);
    });
  }

  it('refuses traversal, separators, NUL, oversize and empty ids; nothing is written anywhere', async () => {
    const w = await worker();
    const cases: Array<[string, number[]]> = [
      ['/blobs/..', [404]],
      ['/blobs/%2e%2e', [400, 404]],
      ['/blobs/%2e%2e%2f', [400]],
      ['/blobs/..%2f..%2fescaped', [400]],
      ['/blobs/%2e%2e%2f%2e%2e%2fescaped', [400]],
      ['/blobs/a/b', [404]],
      ['/blobs/a%2fb', [400]],
      ['/blobs/a%00b', [400]],
      ['/blobs/%00', [400]],
      [`/blobs/${'a'.repeat(129)}`, [400]],
      ['/blobs/', [404]],
      ['/blobs/.hidden', [400]],
      ['/blobs/%2Fetc%2Fpasswd', [400]],
    ];
    for (const [rawPath, allowed] of cases) {
      expect(allowed, rawPath).toContain(await rawPut(w, rawPath));
    }
    expect((await rawPut(w, `/blobs/${'a'.repeat(128)}`)).valueOf()).toBe(201);
    expect(await inventoryIds(w)).toEqual(['a'.repeat(128)]);
    // The data folder's parent holds only the data folder; the data folder only its three parts.
    expect(await readdir(folder.parent)).toEqual(['data']);
    expect((await readdir(w.dataDir)).sort()).toEqual(['blobs', 'index', 'tmp']);
    expect(await tmpFiles(w)).toEqual([]);
  });
});

describe('stats and metrics', () => {
  it('reports running counters, disk figures and per-route metrics without raw ids', async () => {
    const w = await worker({ quotaBytes: 10_000_000 });
    await put(w, 'm-1', Buffer.alloc(1000, 1));
    await put(w, 'm-2', Buffer.alloc(3000, 2));
    await request(`${w.url}/blobs/m-1`, { method: 'DELETE', headers: AUTH }).then((r) => r.body.dump());
    await get(w, 'm-2', { range: 'bytes=0-99' });

    const stats = (await (await request(`${w.url}/stats`, { headers: AUTH })).body.json()) as StoreStats;
    expect(stats).toMatchObject({ blobCount: 1, blobBytes: 3000, quotaBytes: 10_000_000 });
    expect(stats.diskTotalBytes).toBeGreaterThan(0);
    expect(stats.diskFreeBytes).toBeGreaterThan(0);
    expect(stats.diskUsedBytes).toBeGreaterThan(0);
    expect(stats.diskFreeBytes).toBeLessThanOrEqual(stats.diskTotalBytes);

    const text = await metricsText(w);
    expect(
      metricValue(text, 'imgvault_worker_requests_total{method="PUT",route="/blobs/:id",status="201"}'),
    ).toBe(2);
    expect(
      metricValue(text, 'imgvault_worker_requests_total{method="DELETE",route="/blobs/:id",status="204"}'),
    ).toBe(1);
    expect(metricValue(text, 'imgvault_worker_bytes_received_total')).toBe(4000);
    expect(metricValue(text, 'imgvault_worker_bytes_sent_total')).toBe(100);
    expect(metricValue(text, 'imgvault_worker_fsync_seconds_count{target="file"}')).toBe(2);
    expect(metricValue(text, 'imgvault_worker_blobs')).toBe(1);
    expect(text).not.toContain('m-1');
    expect(text).not.toContain('m-2');

    await get(w, 'never-stored');
    const after = await metricsText(w);
    expect(metricValue(after, 'imgvault_worker_errors_total{kind="BlobNotFound"}')).toBe(1);
  });

  it('keeps a separate registry per app instance', async () => {
    const a = await worker();
    const b = await folder.start('data-b');
    await put(a, 'only-in-a', Buffer.from('a'));
    expect(metricValue(await metricsText(b), 'imgvault_worker_bytes_received_total')).toBe(0);
    expect(metricValue(await metricsText(a), 'imgvault_worker_bytes_received_total')).toBe(1);
  });
});
