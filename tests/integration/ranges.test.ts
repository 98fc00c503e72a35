// Reads that resume and uploads that are large, on real processes with the default limits: If-Range
// against an id or a name whose bytes changed answers the whole new image, never a range of it;
// a 100 MiB image goes up and comes back streamed, without the leader holding it in memory; a TIFF
// written as ImageMagick writes it is accepted over HTTP; a form upload is told how to send a file.

import { createHash, randomBytes } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tiffFile } from '../manager/tiffFiles.ts';
import { ImageCluster, type ManagerProc, pngImage } from './imageCluster.ts';

let cluster: ImageCluster;
let leader: ManagerProc;

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'ranges-test', managers: 3, workers: 2 });
  leader = await cluster.leader();
}, 90_000);

afterAll(async () => {
  await cluster?.close();
});

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function send(method: 'PUT' | 'DELETE', url: string, body?: Buffer) {
  const res = await fetch(url, {
    method,
    ...(body ? { body: new Blob([body]) } : {}),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  return { status: res.status, etag: res.headers.get('etag'), json: text ? JSON.parse(text) : null };
}

async function get(url: string, headers: Record<string, string>) {
  const res = await fetch(url, { headers, signal: AbortSignal.timeout(30_000) });
  return { status: res.status, headers: res.headers, bytes: Buffer.from(await res.arrayBuffer()) };
}

/** The leader's peak resident memory so far (VmHWM), in bytes. */
async function peakRss(m: ManagerProc): Promise<number> {
  const status = await readFile(`/proc/${m.child?.pid}/status`, 'utf8');
  const kib = /VmHWM:\s+(\d+) kB/.exec(status)?.[1];
  if (kib === undefined) throw new Error('no VmHWM in /proc status');
  return Number(kib) * 1024;
}

describe('If-Range', () => {
  it('answers the whole new image when the id was deleted and uploaded again', async () => {
    const url = `${leader.url}/v1/images/resumed-${Date.now()}`;
    const first = pngImage(50_000);
    const second = pngImage(60_000);
    const old = await send('PUT', url, first);
    expect(old.status).toBe(201);
    expect((await send('DELETE', url)).status).toBe(204);
    const current = await send('PUT', url, second);
    expect(current.status).toBe(201);

    const stale = await get(url, { range: 'bytes=100-1099', 'if-range': old.etag! });
    expect(stale.status).toBe(200);
    expect(stale.headers.get('content-range')).toBeNull();
    expect(stale.bytes.equals(second)).toBe(true);

    const fresh = await get(url, { range: 'bytes=100-1099', 'if-range': current.etag! });
    expect(fresh.status).toBe(206);
    expect(fresh.bytes.equals(second.subarray(100, 1100))).toBe(true);

    for (const other of [`W/${current.etag}`, new Date().toUTCString()]) {
      const res = await get(url, { range: 'bytes=100-1099', 'if-range': other });
      expect({ other, status: res.status, whole: res.bytes.equals(second) }).toEqual({
        other,
        status: 200,
        whole: true,
      });
    }
  });

  it('answers the whole new image when a name was given other bytes', async () => {
    const url = `${leader.url}/v1/buckets/resume/keys/photos/IMG_${Date.now()}.png`;
    const old = await send('PUT', url, pngImage(40_000));
    expect(old.status).toBe(201);
    const second = pngImage(45_000);
    expect((await send('PUT', url, second)).status).toBe(200);
    const stale = await get(url, { range: 'bytes=0-99', 'if-range': old.etag! });
    expect(stale.status).toBe(200);
    expect(stale.bytes.equals(second)).toBe(true);
    const fresh = await get(url, { range: 'bytes=0-99', 'if-range': `"${sha256(second)}"` });
    expect(fresh.status).toBe(206);
    expect(fresh.bytes.equals(second.subarray(0, 100))).toBe(true);
  });
});

describe('uploads', () => {
  it('accepts a big-endian LZW TIFF with its IFD after the pixels', async () => {
    const tiff = tiffFile({ order: 'MM', lzw: true });
    const res = await send('PUT', `${leader.url}/v1/images/tiff-${Date.now()}`, tiff);
    expect(res.status).toBe(201);
    expect(res.json).toMatchObject({ contentType: 'image/tiff', sha256: sha256(tiff) });
  });

  it('stores the file part of a form upload (curl -F), streamed; a form without a file is a 400', async () => {
    const image = pngImage(1_000);
    const form = new FormData();
    form.append('note', 'a field before the file');
    form.append('file', new Blob([image], { type: 'image/png' }), 'photo.png');
    const encoded = new Response(form);
    const res = await fetch(`${leader.url}/v1/images`, {
      method: 'POST',
      headers: { 'content-type': encoded.headers.get('content-type')! },
      body: new Blob([await encoded.arrayBuffer()]),
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(201);
    const json = (await res.json()) as { id: string; size: number; sha256: string };
    expect(json).toMatchObject({ size: image.length, sha256: sha256(image) });
    const back = await fetch(`${leader.url}/v1/images/${json.id}`, { signal: AbortSignal.timeout(30_000) });
    expect(Buffer.from(await back.arrayBuffer()).equals(image)).toBe(true);

    const empty = new FormData();
    empty.append('note', 'no file here');
    const noFile = new Response(empty);
    const refused = await fetch(`${leader.url}/v1/images`, {
      method: 'POST',
      headers: { 'content-type': noFile.headers.get('content-type')! },
      body: new Blob([await noFile.arrayBuffer()]),
      signal: AbortSignal.timeout(30_000),
    });
    expect(refused.status).toBe(400);
    const error = (await refused.json()) as { error: { code: string; message: string } };
    expect(error.error.code).toBe('InvalidForm');
    expect(error.error.message).toContain('curl -F file=@photo.jpg');
  });

  it('takes raw bytes labelled as curl --data-binary labels them', async () => {
    const image = pngImage(2_000);
    const res = await fetch(`${leader.url}/v1/images`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new Blob([image]),
      signal: AbortSignal.timeout(30_000),
    });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ contentType: 'image/png', sha256: sha256(image) });
  });

  it('streams a 256 MiB image up and back without the leader holding it', async () => {
    const size = 256 * 1024 * 1024;
    const chunk = randomBytes(1024 * 1024);
    const head = pngImage(1024 * 1024);
    const sent = createHash('sha256');
    const before = await peakRss(leader);
    let produced = 0;
    const body = new ReadableStream<Uint8Array>({
      pull(controller) {
        const part = produced === 0 ? head : chunk;
        produced += part.length;
        sent.update(part);
        controller.enqueue(new Uint8Array(part));
        if (produced >= size) controller.close();
      },
    });
    const url = `${leader.url}/v1/images/big-${Date.now()}`;
    const put = await fetch(url, {
      method: 'PUT',
      body,
      duplex: 'half',
      signal: AbortSignal.timeout(300_000),
    } as RequestInit);
    const stored = (await put.json()) as { size: number; sha256: string };
    expect(put.status).toBe(201);
    expect(stored).toMatchObject({ size, sha256: sent.digest('hex') });

    const res = await fetch(url, { signal: AbortSignal.timeout(300_000) });
    expect(res.status).toBe(200);
    const got = createHash('sha256');
    let received = 0;
    for await (const part of res.body as unknown as AsyncIterable<Uint8Array>) {
      got.update(part);
      received += part.byteLength;
    }
    expect({ received, sha256: got.digest('hex') }).toEqual({ received: size, sha256: stored.sha256 });
    // Holding the image would raise the peak by at least its 256 MiB. Streaming holds a few write
    // batches and socket buffers, plus the chunks already sent that wait for V8's next
    // mark-compact: the managers' 128 MB initial old space (HEAP_FLAGS) lets that wait reach tens
    // of MiB, whatever the image's size (10-50 MiB here; 62 once on CI with a 100 MiB image).
    expect((await peakRss(leader)) - before).toBeLessThan(160 * 1024 * 1024);
  }, 600_000);
});
