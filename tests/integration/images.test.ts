// The image API end to end, on real processes: three managers and three workers on 127.0.0.1.
// Upload through a follower, read from every manager, both copies on distinct workers, identical
// tables on every manager, the error statuses, a worker that refuses writes, kill -9 of the leader
// in the middle of uploads, delete, the command-line client, and an image whose every copy is on a
// stopped worker.

import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageJson } from '../../src/cli/clientCommands.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ImageCluster, type ManagerProc, metric, pngImage, runCli, until } from './imageCluster.ts';

const MAX_IMAGE_BYTES = 256 * 1024;

interface ErrorJson {
  error: { code: string; message: string };
}

let cluster: ImageCluster;
/** Every image the cluster should hold right now: id -> bytes. */
const stored = new Map<string, Buffer>();

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/**
 * Blob bodies: fetch can send one again when it follows a follower's 307, and the caller's Buffer
 * is copied rather than handed over (fetch detaches a Buffer it sends).
 */
async function send(
  method: 'POST' | 'PUT' | 'DELETE',
  url: string,
  body?: Buffer | string,
  timeoutMs = 10_000,
): Promise<{ status: number; headers: Headers; json: unknown }> {
  const res = await fetch(url, {
    method,
    ...(body !== undefined ? { body: new Blob([body]) } : {}),
    signal: AbortSignal.timeout(timeoutMs),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, json: text ? JSON.parse(text) : null };
}

async function get(url: string, headers: Record<string, string> = {}, method = 'GET') {
  const res = await fetch(url, { method, headers, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

function errorCode(json: unknown): string {
  return (json as ErrorJson).error.code;
}

async function listAll(m: ManagerProc): Promise<ImageJson[]> {
  const items: ImageJson[] = [];
  let after: string | null = null;
  for (let page = 0; page < 100; page++) {
    const q: string = after ? `&after=${encodeURIComponent(after)}` : '';
    const res = await get(`${m.url}/v1/images?limit=50${q}`);
    expect(res.status).toBe(200);
    const body = JSON.parse(res.bytes.toString()) as { items: ImageJson[]; next: string | null };
    items.push(...body.items);
    if (!body.next) return items;
    after = body.next;
  }
  throw new Error('listing did not end within 100 pages');
}

/**
 * Every running manager has applied the same index and holds the same tables, its counters match
 * `stored`, and no staged file is left behind.
 */
async function expectConsistent(): Promise<void> {
  const managers = cluster.running();
  const digests = await until(
    'every manager at the same applied index',
    async () => {
      const all = await Promise.all(
        managers.map(async (m) => {
          const res = await fetch(`${m.url}/v1/cluster/digest`, { signal: AbortSignal.timeout(2_000) });
          return (await res.json()) as { appliedIndex: number; sha256: string };
        }),
      );
      return all.every((d) => d.appliedIndex === all[0]!.appliedIndex) ? all : null;
    },
    15_000,
  );
  expect(new Set(digests.map((d) => d.sha256)).size).toBe(1);
  const bytes = [...stored.values()].reduce((n, b) => n + b.length, 0);
  for (const m of managers) {
    const stats = (await (await fetch(`${m.url}/v1/cluster/stats`)).json()) as {
      objects: number;
      bytes: number;
    };
    expect({ manager: m.id, objects: stats.objects, bytes: stats.bytes }).toEqual({
      manager: m.id,
      objects: stored.size,
      bytes,
    });
    expect(await readdir(join(m.dataDir, 'staging'))).toEqual([]);
  }
}

beforeAll(async () => {
  // One zone for the three workers: the worker added later in its own zone is then every upload's
  // first choice for the secondary copy, which makes its refusals certain to be exercised.
  cluster = await ImageCluster.start({
    name: 'images-test',
    managers: 3,
    workers: 3,
    workerZone: 'zone-a',
    managerArgs: ['--max-image-bytes', String(MAX_IMAGE_BYTES), '--usage-summary-ms', '500'],
  });
}, 60_000);

afterAll(async () => {
  await cluster?.close();
});

describe('images on a cluster of real processes', () => {
  it('stores an upload sent to a follower on two workers and serves it from every manager', async () => {
    const leader = await cluster.leader();
    const [follower] = await cluster.followers();
    const image = pngImage(20_000);

    const redirect = await fetch(`${follower!.url}/v1/images`, {
      method: 'POST',
      body: new Blob([image]),
      redirect: 'manual',
      signal: AbortSignal.timeout(5_000),
    });
    expect(redirect.status).toBe(307);
    expect(redirect.headers.get('location')).toBe(`${leader.url}/v1/images`);
    await redirect.body?.cancel();

    const res = await send('POST', `${follower!.url}/v1/images`, image);
    expect(res.status).toBe(201);
    const created = res.json as ImageJson;
    expect(created).toEqual({
      id: expect.any(String),
      size: image.length,
      sha256: sha256(image),
      contentType: 'image/png',
      createdAt: expect.any(String),
      replicas: [expect.any(String), expect.any(String)],
    });
    expect(Number.isNaN(Date.parse(created.createdAt))).toBe(false);
    expect(res.headers.get('location')).toBe(`/v1/images/${created.id}`);
    expect(new Set(created.replicas).size).toBe(2);
    stored.set(created.id, image);

    for (const m of cluster.running()) {
      const url = `${m.url}/v1/images/${created.id}`;
      const full = await get(url);
      expect(full.status).toBe(200);
      expect(full.bytes.equals(image)).toBe(true);
      expect(full.headers.get('content-type')).toBe('image/png');
      expect(full.headers.get('content-length')).toBe(String(image.length));
      expect(full.headers.get('etag')).toBe(`"${sha256(image)}"`);

      const head = await get(url, {}, 'HEAD');
      expect(head.status).toBe(200);
      expect(head.bytes.length).toBe(0);
      expect(head.headers.get('content-type')).toBe('image/png');
      expect(head.headers.get('content-length')).toBe(String(image.length));
      expect(head.headers.get('etag')).toBe(`"${sha256(image)}"`);

      const part = await get(url, { range: 'bytes=100-1099' });
      expect(part.status).toBe(206);
      expect(part.headers.get('content-range')).toBe(`bytes 100-1099/${image.length}`);
      expect(part.bytes.equals(image.subarray(100, 1100))).toBe(true);

      const beyond = await get(url, { range: `bytes=${image.length + 10}-` });
      expect(beyond.status).toBe(416);
      expect(beyond.headers.get('content-range')).toBe(`bytes */${image.length}`);
      expect(errorCode(JSON.parse(beyond.bytes.toString()))).toBe('RangeNotSatisfiable');

      // An id can name other bytes after a delete: caches revalidate, and get a 304 from the record.
      expect(full.headers.get('cache-control')).toBe('private, no-cache');
      const fresh = await get(url, { 'if-none-match': `"other", "${sha256(image)}"` });
      expect(fresh.status).toBe(304);
      expect(fresh.headers.get('etag')).toBe(`"${sha256(image)}"`);
      expect((await get(url, { 'if-none-match': '"other"' })).status).toBe(200);

      const meta = await get(`${url}/meta`);
      expect(JSON.parse(meta.bytes.toString())).toEqual(created);
    }

    for (const w of cluster.workers) {
      const copy = await cluster.workerBlob(w, created.id);
      if (created.replicas.includes(w.id)) {
        expect(copy.status).toBe(200);
        expect(sha256(copy.bytes)).toBe(created.sha256);
      } else {
        expect(copy.status).toBe(404);
      }
    }

    // PUT with a client-chosen id, through the other follower.
    const id = `put-${randomUUID()}`;
    const other = pngImage(5_000);
    const put = await send('PUT', `${(await cluster.followers())[1]!.url}/v1/images/${id}`, other);
    expect(put.status).toBe(201);
    expect((put.json as ImageJson).id).toBe(id);
    stored.set(id, other);

    await expectConsistent();
  });

  it('answers bad uploads and unknown ids with 4xx JSON errors and counts the outcomes', async () => {
    const leader = await cluster.leader();
    const url = leader.url;
    const before = {
      created: await metric(leader, 'imgvault_uploads_total{outcome="created"}'),
      existing: await metric(leader, 'imgvault_uploads_total{outcome="existing"}'),
      notAnImage: await metric(leader, 'imgvault_uploads_total{outcome="NotAnImage"}'),
      tooLarge: await metric(leader, 'imgvault_uploads_total{outcome="TooLarge"}'),
      conflict: await metric(leader, 'imgvault_uploads_total{outcome="Conflict"}'),
    };

    const text = await send('POST', `${url}/v1/images`, 'just some text, not an image');
    expect([text.status, errorCode(text.json)]).toEqual([415, 'NotAnImage']);
    const svg = await send(
      'POST',
      `${url}/v1/images`,
      '<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="1" height="1"></svg>',
    );
    expect([svg.status, errorCode(svg.json)]).toEqual([415, 'NotAnImage']);

    const big = await send('POST', `${url}/v1/images`, pngImage(MAX_IMAGE_BYTES + 1));
    expect([big.status, errorCode(big.json)]).toEqual([413, 'TooLarge']);
    // No Content-Length: refused while streaming to staging.
    const chunked = await fetch(`${url}/v1/images`, {
      method: 'POST',
      body: new Blob([pngImage(MAX_IMAGE_BYTES + 1)]).stream(),
      duplex: 'half',
      signal: AbortSignal.timeout(10_000),
    } as RequestInit);
    expect([chunked.status, errorCode(await chunked.json())]).toEqual([413, 'TooLarge']);

    const empty = await send('POST', `${url}/v1/images`, Buffer.alloc(0));
    expect([empty.status, errorCode(empty.json)]).toEqual([400, 'EmptyBody']);
    const badId = await send('PUT', `${url}/v1/images/${encodeURIComponent('../etc')}`, pngImage(100));
    expect([badId.status, errorCode(badId.json)]).toEqual([400, 'InvalidId']);
    expect((await get(`${url}/v1/images/${encodeURIComponent('.hidden')}`)).status).toBe(400);

    const id = `conflict-${randomUUID()}`;
    const image = pngImage(3_000);
    const first = await send('PUT', `${url}/v1/images/${id}`, image);
    expect(first.status).toBe(201);
    stored.set(id, image);
    const again = await send('PUT', `${url}/v1/images/${id}`, image);
    expect(again.status).toBe(200);
    expect(again.json).toEqual(first.json);
    const other = await send('PUT', `${url}/v1/images/${id}`, pngImage(3_000));
    expect([other.status, errorCode(other.json)]).toEqual([409, 'Conflict']);
    expect((await get(`${url}/v1/images/${id}`)).bytes.equals(image)).toBe(true);

    for (const m of cluster.running()) {
      const missing = await get(`${m.url}/v1/images/no-such-image`);
      expect(missing.status).toBe(404);
      expect(errorCode(JSON.parse(missing.bytes.toString()))).toBe('NotFound');
      expect((await get(`${m.url}/v1/images/no-such-image/meta`)).status).toBe(404);
    }
    const del = await send('DELETE', `${url}/v1/images/no-such-image`);
    expect([del.status, errorCode(del.json)]).toEqual([404, 'NotFound']);
    expect((await get(`${url}/v1/images?limit=0`)).status).toBe(400);

    expect({
      created: (await metric(leader, 'imgvault_uploads_total{outcome="created"}')) - before.created,
      existing: (await metric(leader, 'imgvault_uploads_total{outcome="existing"}')) - before.existing,
      notAnImage: (await metric(leader, 'imgvault_uploads_total{outcome="NotAnImage"}')) - before.notAnImage,
      tooLarge: (await metric(leader, 'imgvault_uploads_total{outcome="TooLarge"}')) - before.tooLarge,
      conflict: (await metric(leader, 'imgvault_uploads_total{outcome="Conflict"}')) - before.conflict,
    }).toEqual({ created: 1, existing: 1, notAnImage: 2, tooLarge: 2, conflict: 1 });
    await expectConsistent();
  });

  it('deletes an image: 204, then 404 everywhere, and both copies leave the workers', async () => {
    const leader = await cluster.leader();
    const image = pngImage(4_000);
    const res = await send('POST', `${leader.url}/v1/images`, image);
    expect(res.status).toBe(201);
    const { id, replicas } = res.json as ImageJson;
    for (const nodeId of replicas)
      expect((await cluster.workerBlob(cluster.worker(nodeId), id)).status).toBe(200);

    const [follower] = await cluster.followers();
    const del = await send('DELETE', `${follower!.url}/v1/images/${id}`);
    expect(del.status).toBe(204);
    for (const m of cluster.running()) expect((await get(`${m.url}/v1/images/${id}`)).status).toBe(404);
    for (const nodeId of replicas)
      expect((await cluster.workerBlob(cluster.worker(nodeId), id)).status).toBe(404);
    expect((await send('DELETE', `${leader.url}/v1/images/${id}`)).status).toBe(404);
    await expectConsistent();
  });

  it('works from the command line: upload a folder through a follower, ls, get, rm', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-cli-'));
    try {
      const images = { 'a.png': pngImage(3_000), 'sub/b.png': pngImage(5_000) };
      await mkdir(join(dir, 'sub'));
      for (const [name, bytes] of Object.entries(images)) await writeFile(join(dir, name), bytes);
      await writeFile(join(dir, 'notes.txt'), 'not an image');
      const [follower] = await cluster.followers();
      const leader = await cluster.leader();

      // One file is refused: the others are stored, the summary says so, and the exit status is 1.
      const up = await runCli(['upload', dir, '--url', follower!.url, '--concurrency', '2']);
      expect(up.code).toBe(1);
      expect(up.stderr).toMatch(/failed\t.*notes\.txt\t415 NotAnImage/);
      expect(up.stderr).toContain('uploaded 2 of 3 files');
      const ids = new Map(
        up.stdout
          .trim()
          .split('\n')
          .map((line) => line.split('\t') as [string, string])
          .map(([id, file]) => [file.slice(dir.length + 1), id]),
      );
      expect([...ids.keys()].sort()).toEqual(['a.png', 'sub/b.png']);
      for (const [name, bytes] of Object.entries(images)) stored.set(ids.get(name)!, bytes);

      const ls = await runCli(['ls', '--url', leader.url]);
      expect(ls.code).toBe(0);
      const listed = ls.stdout
        .trim()
        .split('\n')
        .map((line) => line.split('\t')[0]);
      for (const id of ids.values()) expect(listed).toContain(id);
      // Paged through one image a request, the whole listing comes out, in id order.
      const paged = await runCli(['ls', '--all', '--page-size', '1', '--url', leader.url]);
      expect(paged.code).toBe(0);
      expect(paged.stdout).toBe(ls.stdout);
      expect(listed.length).toBeGreaterThan(1);
      // --json: the same listing, an object a line, with what the text leaves out (the sha256).
      const json = await runCli(['ls', '--json', '--all', '--page-size', '1', '--url', leader.url]);
      expect(json.code).toBe(0);
      const objects = json.stdout
        .trim()
        .split('\n')
        .map((line) => JSON.parse(line) as ImageJson);
      expect(objects.map((o) => o.id)).toEqual(listed);
      const a = objects.find((o) => o.id === ids.get('a.png'))!;
      expect(a.sha256).toBe(sha256(images['a.png']!));
      expect(a.size).toBe(images['a.png']!.length);

      const out = join(dir, 'a-copy.png');
      const got = await runCli(['get', ids.get('a.png')!, '-o', out, '--url', follower!.url]);
      expect(got.code).toBe(0);
      expect((await readFile(out)).equals(images['a.png'])).toBe(true);

      const missing = await runCli([
        'get',
        'no-such-image',
        '-o',
        join(dir, 'none.png'),
        '--url',
        leader.url,
      ]);
      expect(missing.code).toBe(1);
      expect(missing.stderr).toContain('404 NotFound');
      expect((await readdir(dir)).sort()).toEqual(['a-copy.png', 'a.png', 'notes.txt', 'sub']);

      const rmB = await runCli(['rm', ids.get('sub/b.png')!, '--url', follower!.url]);
      expect(rmB.code).toBe(0);
      stored.delete(ids.get('sub/b.png')!);
      expect((await get(`${leader.url}/v1/images/${ids.get('sub/b.png')}`)).status).toBe(404);
      await expectConsistent();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('replaces a worker that refuses writes with another one, and counts the fallback', async () => {
    // Blobs over 1 KiB get 413 there; with no quota it reports its disk as free as the others'.
    const full = await cluster.addWorker('w4', ['--max-blob-bytes', '1KiB'], 'zone-b');
    await cluster.waitForWorkersUp(['w4']);
    const leader = await cluster.leader();
    const fallbacksBefore = await metric(leader, 'imgvault_upload_fallbacks_total');
    for (let i = 0; i < 3; i++) {
      const image = pngImage(8_000);
      const res = await send('POST', `${leader.url}/v1/images`, image);
      expect(res.status).toBe(201);
      const { id, replicas } = res.json as ImageJson;
      stored.set(id, image);
      expect(replicas).not.toContain(full.id);
      expect(new Set(replicas).size).toBe(2);
      for (const nodeId of replicas) {
        const copy = await cluster.workerBlob(cluster.worker(nodeId), id);
        expect(sha256(copy.bytes)).toBe(sha256(image));
      }
      expect((await cluster.workerBlob(full, id)).status).toBe(404);
    }
    // w4 is the only worker outside the primary's zone, so each secondary tried it first.
    expect(
      (await metric(leader, 'imgvault_upload_fallbacks_total')) - fallbacksBefore,
    ).toBeGreaterThanOrEqual(3);
    await expectConsistent();
  });

  it('keeps every acknowledged upload, and no half-done one, across kill -9 of the leader', async () => {
    const payloads = new Map<string, Buffer>();
    const acknowledged = new Set<string>();
    const failed = new Set<string>();
    let stop = false;
    let ackedAfterKill = 0;
    let killed = false;

    const uploader = async (n: number) => {
      for (let i = 0; !stop && i < 500; i++) {
        const id = `fo-${n}-${i}`;
        const image = pngImage(2_000 + ((i * 7919) % 6000));
        payloads.set(id, image);
        const running = cluster.running();
        const target = running[(n + i) % running.length]!;
        try {
          const res = await send('PUT', `${target.url}/v1/images/${id}`, image, 8_000);
          if (res.status === 201) {
            expect((res.json as ImageJson).sha256).toBe(sha256(image));
            acknowledged.add(id);
            if (killed) ackedAfterKill += 1;
          } else {
            failed.add(id);
            await new Promise((r) => setTimeout(r, 50));
          }
        } catch {
          failed.add(id);
          await new Promise((r) => setTimeout(r, 50));
        }
      }
    };

    const old = await cluster.leader();
    const loops = [0, 1, 2].map((n) => uploader(n));
    try {
      await until('a few uploads before the kill', async () => acknowledged.size >= 6, 15_000);
      await cluster.killManager(old);
      killed = true;
      const fresh = await cluster.leader(15_000);
      expect(fresh.id).not.toBe(old.id);
      await until('uploads acknowledged by the new leader', async () => ackedAfterKill >= 6, 20_000);
    } finally {
      stop = true;
      await Promise.all(loops);
    }

    cluster.spawnManager(old);
    const leader = await cluster.leader(15_000);
    for (const id of acknowledged) stored.set(id, payloads.get(id)!);
    for (const id of failed) {
      const meta = await get(`${leader.url}/v1/images/${id}/meta`);
      if (meta.status === 200) {
        // Committed, but the answer was lost with the old leader: the whole image, nothing else.
        expect((JSON.parse(meta.bytes.toString()) as ImageJson).sha256).toBe(sha256(payloads.get(id)!));
        stored.set(id, payloads.get(id)!);
      } else {
        expect(meta.status).toBe(404);
      }
    }
    await expectConsistent();

    for (const m of cluster.running()) {
      const listed = new Set((await listAll(m)).map((o) => o.id));
      expect([...listed].sort()).toEqual([...stored.keys()].sort());
    }
    for (const id of acknowledged) {
      for (const m of cluster.running()) {
        const res = await get(`${m.url}/v1/images/${id}`);
        expect([m.id, id, res.status, sha256(res.bytes)]).toEqual([m.id, id, 200, sha256(payloads.get(id)!)]);
      }
    }
  }, 60_000);

  it('serves ?direct=1 by a redirect to a worker, which sends the bytes or the client on to the other copy', async () => {
    const leader = await cluster.leader();
    const image = pngImage(30_000);
    const res = await send('POST', `${leader.url}/v1/images`, image);
    expect(res.status).toBe(201);
    const { id, replicas } = res.json as ImageJson;
    const [primary, secondary] = replicas.map((nodeId) => cluster.worker(nodeId));
    // A manager that has not heard from the workers since it started (the one the test before
    // restarted) serves a direct read itself rather than send the client to a worker it knows
    // nothing of: wait until each has heard from them, as a client would see after a few seconds.
    for (const m of cluster.running()) {
      await until(
        `${m.id} to send direct reads to a worker`,
        async () => {
          const res = await fetch(`${m.url}/v1/images/${id}?direct=1`, { redirect: 'manual' });
          await res.body?.cancel();
          return res.status === 307;
        },
        15_000,
      );
    }
    for (const m of cluster.running()) {
      const redirect = await fetch(`${m.url}/v1/images/${id}?direct=1`, {
        redirect: 'manual',
        signal: AbortSignal.timeout(10_000),
      });
      expect(redirect.status).toBe(307);
      expect(redirect.headers.get('location')?.startsWith(`${primary!.url}/direct/${id}?`)).toBe(true);
      const followed = await get(`${m.url}/v1/images/${id}?direct=1`);
      expect(followed.status).toBe(200);
      expect(followed.bytes.equals(image)).toBe(true);
      expect(followed.headers.get('etag')).toBe(`"${sha256(image)}"`);
      expect(followed.headers.get('content-type')).toBe('image/png');
      // A range is answered by the manager, as without ?direct.
      const part = await get(`${m.url}/v1/images/${id}?direct=1`, { range: 'bytes=0-99' });
      expect(part.status).toBe(206);
    }
    // The primary's copy gone: its worker sends the client on to the secondary's link.
    const removed = await fetch(`${primary!.url}/blobs/${id}`, {
      method: 'DELETE',
      headers: { [CLUSTER_SECRET_HEADER]: cluster.workerAccess(primary!.id) },
    });
    expect(removed.status).toBe(204);
    const hop = await fetch(`${leader.url}/v1/images/${id}?direct=1`, { redirect: 'manual' });
    const fallback = await fetch(String(hop.headers.get('location')), { redirect: 'manual' });
    expect(fallback.status).toBe(307);
    expect(fallback.headers.get('location')?.startsWith(`${secondary!.url}/direct/${id}?`)).toBe(true);
    await fallback.body?.cancel();
    const whole = await get(`${leader.url}/v1/images/${id}?direct=1`);
    expect(whole.status).toBe(200);
    expect(whole.bytes.equals(image)).toBe(true);
    expect((await send('DELETE', `${leader.url}/v1/images/${id}`)).status).toBe(204);
    expect((await get(`${leader.url}/v1/images/${id}?direct=1`)).status).toBe(404);
  });

  it('answers 503 Unavailable, not 404, when both copies are on stopped workers', async () => {
    const leader = await cluster.leader();
    const image = pngImage(6_000);
    const res = await send('POST', `${leader.url}/v1/images`, image);
    expect(res.status).toBe(201);
    const { id, replicas } = res.json as ImageJson;
    for (const nodeId of replicas) await cluster.killWorker(cluster.worker(nodeId));
    for (const m of cluster.running()) {
      const down = await get(`${m.url}/v1/images/${id}`);
      expect([m.id, down.status, errorCode(JSON.parse(down.bytes.toString()))]).toEqual([
        m.id,
        503,
        'Unavailable',
      ]);
      expect((await get(`${m.url}/v1/images/${id}/meta`)).status).toBe(200);
    }
    // A direct read is not sent to workers no manager hears from: the manager answers the 503.
    await until(
      'a direct read answered by the manager once the workers are silent',
      async () => {
        const res = await fetch(`${leader.url}/v1/images/${id}?direct=1`, {
          redirect: 'manual',
          signal: AbortSignal.timeout(10_000),
        });
        await res.body?.cancel();
        return res.status === 503 ? true : null;
      },
      60_000,
    );
  });
});
