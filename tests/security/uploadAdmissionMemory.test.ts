// Uploads on a real manager process (one manager, two workers) in the default staging mode: bodies
// held in memory, in whole slabs, up to --staging-memory-bytes (stagingArea.ts). What the leader
// holds shows in imgvault_staging_memory_bytes, and is given back when each upload is answered.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import { type HeldUploadOptions, holdUpload, settle } from '../helpers/heldUploads.ts';
import { ImageCluster, pngImage, until } from '../integration/imageCluster.ts';

const TOKENS = {
  a: 'token-a-0123456789abcdef',
  b: 'token-b-0123456789abcdef',
  c: 'token-c-0123456789abcdef',
};
/** The default --staging-memory-bytes, which this cluster keeps. */
const MEMORY_LIMIT = 64 * 1024 * 1024;
let cluster: ImageCluster;
let url: string;

beforeAll(async () => {
  cluster = await ImageCluster.start({
    managers: 1,
    workers: 2,
    name: 'admission-memory',
    tokens: { client: Object.values(TOKENS) },
    clientToken: TOKENS.c,
  });
  url = (await cluster.leader()).url;
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

const openUpload = (opts: HeldUploadOptions) => holdUpload(url, opts);

/** One gauge of the leader's /metrics; fails when the series is missing. */
async function gauge(name: string): Promise<number> {
  const res = await fetch(`${url}/metrics`, {
    headers: cluster.authHeaders(),
    signal: AbortSignal.timeout(5_000),
  });
  const line = (await res.text()).split('\n').find((l) => l.startsWith(`${name} `));
  if (!line) throw new Error(`the leader exports no ${name}`);
  return Number(line.slice(name.length + 1));
}

async function deleteImage(id: string, token: string): Promise<void> {
  const del = await fetch(`${url}/v1/images/${id}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
  });
  expect(del.status).toBe(204);
}

it('shows the slabs an upload in flight holds, and none once it is answered', async () => {
  expect(await gauge('imgvault_staging_memory_limit_bytes')).toBe(MEMORY_LIMIT);
  expect(await gauge('imgvault_staging_memory_bytes')).toBe(0);
  // Two slabs: a body counts the whole slabs it takes, however little of the last it fills.
  const image = pngImage(SLAB_BYTES + 1_000);
  const upload = openUpload({ token: TOKENS.a, image });
  try {
    await until(
      'the body held in memory',
      async () => (await gauge('imgvault_staging_memory_bytes')) === 2 * SLAB_BYTES,
      15_000,
    );
    upload.finish();
    const answer = await settle(upload.answer);
    expect(answer.status).toBe(201);
    // Given back before the answer was sent.
    expect(await gauge('imgvault_staging_memory_bytes')).toBe(0);
    // Both copies read the whole body from the slabs: they are kept for the next uploads.
    expect(await gauge('imgvault_staging_memory_spare_bytes')).toBe(2 * SLAB_BYTES);
    await deleteImage((JSON.parse(answer.body) as { id: string }).id, TOKENS.a);
  } finally {
    upload.stop();
  }
});
