// Reads on a real cluster (one manager, two workers) whose worker copies rot on disk: a small
// image comes whole from the other replica, a large one is cut rather than answered short, and the
// bad copy is repaired. Then what a client sees of the cluster's insides: image answers carry
// nosniff and a sandbox CSP, and no error names a worker's address.

import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { blobRelativePath } from '../../src/storagenode/blobId.ts';
import { ImageCluster, pngImage, until } from '../integration/imageCluster.ts';
import { flipByte } from '../storagenode/workerHarness.ts';

let cluster: ImageCluster;
let url: string;

beforeAll(async () => {
  cluster = await ImageCluster.start({ managers: 1, workers: 2, name: 'verified-reads' });
  url = (await cluster.leader()).url;
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

async function upload(bytes: Buffer): Promise<{ id: string; replicas: string[] }> {
  const res = await fetch(`${url}/v1/images`, {
    method: 'POST',
    body: bytes,
    signal: AbortSignal.timeout(30_000),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as { id: string; replicas: string[] };
}

async function rot(workerId: string, id: string, offset: number) {
  await flipByte(join(cluster.worker(workerId).dataDir, blobRelativePath(id)), offset);
}

/** Both holders of `id` serve the record's bytes again (the rotten copy was replaced). */
async function repaired(id: string, bytes: Buffer) {
  await until(
    `both copies of ${id} intact`,
    async () => {
      const meta = (await (await fetch(`${url}/v1/images/${id}/meta`)).json()) as { replicas: string[] };
      if (meta.replicas.length !== 2) return false;
      for (const w of meta.replicas) {
        const copy = await cluster.workerBlob(cluster.worker(w), id);
        if (copy.status !== 200 || sha256(copy.bytes) !== sha256(bytes)) return false;
      }
      return true;
    },
    90_000,
  );
}

it('serves a small image whole from the other replica when the first copy fails its check, and repairs it', async () => {
  const bytes = pngImage(100_000);
  const { id, replicas } = await upload(bytes);
  await rot(replicas[0]!, id, 50_000);
  await rot(replicas[0]!, id, 50_001);
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${url}/v1/images/${id}`, { signal: AbortSignal.timeout(30_000) });
    expect(res.status).toBe(200);
    expect(sha256(Buffer.from(await res.arrayBuffer()))).toBe(sha256(bytes));
  }
  await repaired(id, bytes);
});

it('cuts the answer of a large image whose copy fails its check once bytes are sent, never a short 200', async () => {
  const bytes = pngImage(3 * 1024 * 1024);
  const { id, replicas } = await upload(bytes);
  await rot(replicas[0]!, id, bytes.length - 10);
  const res = await fetch(`${url}/v1/images/${id}`, { signal: AbortSignal.timeout(30_000) });
  expect(res.status).toBe(200);
  expect(res.headers.get('content-length')).toBe(String(bytes.length));
  await expect(res.arrayBuffer()).rejects.toThrow();
  // The bad copy was reported: its worker removes it, reads go to the good one, repair restores two.
  await until(
    'a whole, correct answer',
    async () => {
      const again = await fetch(`${url}/v1/images/${id}`, { signal: AbortSignal.timeout(30_000) });
      return again.status === 200 && sha256(Buffer.from(await again.arrayBuffer())) === sha256(bytes);
    },
    60_000,
  );
  await repaired(id, bytes);
});

it('sends image bytes with nosniff and a sandboxing CSP, on GET, HEAD and 304', async () => {
  // A PNG signature followed by a page: stored (it sniffs as PNG), never to be rendered as HTML.
  const bytes = Buffer.concat([pngImage(200), Buffer.from('<html><script>alert(1)</script></html>')]);
  const { id } = await upload(bytes);
  const get = await fetch(`${url}/v1/images/${id}`);
  const head = await fetch(`${url}/v1/images/${id}`, { method: 'HEAD' });
  const revalidated = await fetch(`${url}/v1/images/${id}`, {
    headers: { 'if-none-match': `"${sha256(bytes)}"` },
  });
  expect([get.status, head.status, revalidated.status]).toEqual([200, 200, 304]);
  for (const res of [get, head, revalidated]) {
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toBe("default-src 'none'; sandbox");
  }
  expect(get.headers.get('content-type')).toBe('image/png');
  await get.arrayBuffer();
});

it('names no worker address in any error a client gets when the workers are gone', async () => {
  const { id } = await upload(pngImage(1_000));
  const addresses = cluster.workers.flatMap((w) => [w.url, `:${w.port}`]);
  for (const w of cluster.workers) await cluster.killWorker(w);
  const answers: { status: number; text: string }[] = [];
  await until(
    'reads and writes refused with 503',
    async () => {
      answers.length = 0;
      for (const [method, path, body] of [
        ['GET', `/v1/images/${id}`, undefined],
        ['POST', '/v1/images', pngImage(1_000)],
      ] as const) {
        const res = await fetch(`${url}${path}`, { method, body, signal: AbortSignal.timeout(30_000) });
        answers.push({ status: res.status, text: await res.text() });
      }
      return answers.every((a) => a.status === 503);
    },
    60_000,
  );
  for (const a of answers) {
    expect(JSON.parse(a.text).error.code).toMatch(/Unavailable|NoLiveWorker/);
    for (const address of addresses) expect(a.text).not.toContain(address);
    expect(a.text).not.toMatch(/https?:\/\//);
  }
});
