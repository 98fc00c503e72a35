// GET /v1/images/:id/thumbnail on a real cluster with client tokens on: a WebP of at most
// THUMBNAIL_SIZE px made on the first request and kept in the manager's data folder, revalidated by
// its etag, refused without a token (while the dashboard page itself is open), 404 for an image that
// does not exist or was deleted, 422 for bytes that sniff as an image but do not decode.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { THUMBNAIL_SIZE } from '../../src/manager/thumbnails.ts';
import { ImageCluster, type ManagerProc, pngImage } from '../integration/imageCluster.ts';

const TOKEN = 'thumbnail-client-token-0123456789';
let cluster: ImageCluster;
let manager: ManagerProc;

beforeAll(async () => {
  cluster = await ImageCluster.start({
    managers: 1,
    workers: 2,
    name: 'thumbnails',
    startTimeoutMs: 90_000,
    tokens: { client: [TOKEN] },
  });
  manager = await cluster.leader();
}, 240_000);

afterAll(async () => {
  await cluster?.close();
});

async function upload(body: Buffer): Promise<string> {
  const res = await fetch(`${manager.url}/v1/images`, {
    method: 'POST',
    body,
    headers: cluster.authHeaders(),
    signal: AbortSignal.timeout(30_000),
  });
  expect(res.status).toBe(201);
  return ((await res.json()) as { id: string }).id;
}

const thumbnail = (id: string, headers: Record<string, string> = cluster.authHeaders()) =>
  fetch(`${manager.url}/v1/images/${id}/thumbnail`, { headers, signal: AbortSignal.timeout(30_000) });

describe('thumbnails', () => {
  it('makes a small WebP once, keeps it under the data folder and answers 304 to its etag', async () => {
    const photo = await sharp({ create: { width: 900, height: 600, channels: 3, background: '#3a6fd8' } })
      .jpeg()
      .toBuffer();
    const id = await upload(photo);
    const res = await thumbnail(id);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/webp');
    const meta = await sharp(Buffer.from(await res.arrayBuffer())).metadata();
    expect(meta.format).toBe('webp');
    expect([meta.width, meta.height]).toEqual([THUMBNAIL_SIZE, Math.round((THUMBNAIL_SIZE * 600) / 900)]);
    expect(await readdir(join(manager.dataDir, 'thumbnails'))).toHaveLength(1);
    const etag = res.headers.get('etag')!;
    const again = await thumbnail(id, { ...cluster.authHeaders(), 'if-none-match': etag });
    expect(again.status).toBe(304);
  });

  it('is closed without a token, while the page that shows it is open', async () => {
    const id = await upload(
      await sharp({ create: { width: 20, height: 20, channels: 3, background: '#000' } })
        .png()
        .toBuffer(),
    );
    expect((await thumbnail(id, {})).status).toBe(401);
    const page = await fetch(`${manager.url}/`, { signal: AbortSignal.timeout(10_000) });
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('/dashboard/dashboard.js');
  });

  it('answers 404 for an unknown or deleted image and 422 for bytes that do not decode', async () => {
    expect((await thumbnail('no-such-image')).status).toBe(404);
    const id = await upload(
      await sharp({ create: { width: 50, height: 40, channels: 3, background: '#c33' } })
        .png()
        .toBuffer(),
    );
    expect((await thumbnail(id)).status).toBe(200);
    const deleted = await fetch(`${manager.url}/v1/images/${id}`, {
      method: 'DELETE',
      headers: cluster.authHeaders(),
      signal: AbortSignal.timeout(30_000),
    });
    expect(deleted.status).toBe(204);
    expect((await thumbnail(id)).status).toBe(404);
    // A PNG signature and header with no image data: accepted as an image, not decodable.
    const broken = await thumbnail(await upload(pngImage(200)));
    expect(broken.status).toBe(422);
    expect(await broken.json()).toMatchObject({ error: { code: 'ThumbnailFailed' } });
  });
});
