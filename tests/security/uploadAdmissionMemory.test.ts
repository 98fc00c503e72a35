// Upload admission on a real manager process (one manager, two workers) in the default staging
// mode, bodies held in memory in whole slabs up to --staging-memory-bytes (stagingArea.ts), as
// uploadAdmission.test.ts tries it with staged files: a bounded number in flight, an upload over a
// cap waiting for room and then 503 with Retry-After before its body; what the leader holds shows
// in imgvault_staging_memory_bytes and is given back when each upload is answered; a body past the
// memory left goes to a staged file and is stored whole all the same.

import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import {
  expectRefusedEarly,
  type HeldUploadOptions,
  holdUpload,
  settle,
  slotsFree,
} from '../helpers/heldUploads.ts';
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
let stagingDir: string;

beforeAll(async () => {
  cluster = await ImageCluster.start({
    managers: 1,
    workers: 2,
    name: 'admission-memory',
    tokens: { client: Object.values(TOKENS) },
    clientToken: TOKENS.c,
    managerArgs: [
      ['--max-uploads', '3'],
      ['--max-uploads-per-client', '2'],
      // Short, so that the refusals below come soon.
      ['--upload-wait-ms', '1000'],
      // Under the trickle of openUpload; the default window (60 s) outlasts every test.
      ['--min-upload-rate', '100'],
    ].flat(),
  });
  const leader = await cluster.leader();
  url = leader.url;
  stagingDir = join(leader.dataDir, 'staging');
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

/** Waits until the leader holds `bytes` of bodies in memory: each upload admitted and past its type sniff. */
async function waitHeld(bytes: number) {
  await until(
    `${bytes} bytes held`,
    async () => (await gauge('imgvault_staging_memory_bytes')) === bytes,
    15_000,
  );
}

/** Waits until `token` holds no slot any more and the leader holds no body, in memory or in a file. */
async function released(token: string) {
  await slotsFree(url, token);
  await waitHeld(0);
  expect(await readdir(stagingDir)).toEqual([]);
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

it('refuses the third concurrent upload of one client, and the fourth of all clients, before their bodies', async () => {
  const holders = [
    openUpload({ token: TOKENS.a, trickle: true }),
    openUpload({ token: TOKENS.a, trickle: true }),
  ];
  try {
    await waitHeld(2 * SLAB_BYTES);
    const third = openUpload({ token: TOKENS.a, trickle: true });
    holders.push(third);
    expectRefusedEarly(third, await settle(third.answer), 'TooManyUploads', 'maxUploadsPerClient');

    holders.push(openUpload({ token: TOKENS.b, trickle: true }));
    await waitHeld(3 * SLAB_BYTES);
    const fourth = openUpload({ token: TOKENS.c, trickle: true });
    holders.push(fourth);
    expectRefusedEarly(fourth, await settle(fourth.answer), 'TooManyUploads', 'maxUploads ');
    // A refused upload never held memory, nor a staged file.
    expect(await gauge('imgvault_staging_memory_bytes')).toBe(3 * SLAB_BYTES);
    expect(await readdir(stagingDir)).toEqual([]);
  } finally {
    for (const h of holders) h.stop();
  }
  await released(TOKENS.a);
});

it("admits an upload waiting over its client cap, holding no memory while it waits, once one of that client's uploads ends", async () => {
  const holders = [
    openUpload({ token: TOKENS.a, trickle: true }),
    openUpload({ token: TOKENS.a, trickle: true }),
  ];
  try {
    await waitHeld(2 * SLAB_BYTES);
    const image = pngImage(20_000);
    const waiting = openUpload({ token: TOKENS.a, image, first: image });
    holders.push(waiting);
    // Still waiting after half the wait: no answer, and its body unread.
    const early = await Promise.race([waiting.answer, new Promise((r) => setTimeout(() => r(null), 500))]);
    expect(early).toBeNull();
    expect(await gauge('imgvault_staging_memory_bytes')).toBe(2 * SLAB_BYTES);
    holders[0]!.stop();
    const answer = await settle(waiting.answer);
    expect(answer.status).toBe(201);
    await deleteImage((JSON.parse(answer.body) as { id: string }).id, TOKENS.a);
  } finally {
    for (const h of holders) h.stop();
  }
  await released(TOKENS.a);
});

it('stages a body past the memory left in a file, and stores it whole', async () => {
  // Two bodies that declare half the memory each reserve all of it, though little of them came.
  const half = MEMORY_LIMIT / 2;
  const head = pngImage(5_000).subarray(0, 4_200);
  const holders = [
    openUpload({ token: TOKENS.a, length: half, first: head, trickle: true }),
    openUpload({ token: TOKENS.b, length: half, first: head, trickle: true }),
  ];
  try {
    await waitHeld(MEMORY_LIMIT);
    const image = pngImage(600_000);
    const past = openUpload({ token: TOKENS.c, image });
    holders.push(past);
    await until('its body in a staged file', async () => (await readdir(stagingDir)).length === 1, 15_000);
    expect(await gauge('imgvault_staging_memory_bytes')).toBe(MEMORY_LIMIT);
    past.finish();
    const answer = await settle(past.answer);
    expect(answer.status).toBe(201);
    const { id } = JSON.parse(answer.body) as { id: string };
    const read = await fetch(`${url}/v1/images/${id}`, { headers: cluster.authHeaders() });
    expect(read.status).toBe(200);
    expect(Buffer.from(await read.arrayBuffer()).equals(image)).toBe(true);
    for (const w of cluster.workers) {
      const copy = await cluster.workerBlob(w, id);
      expect(copy.status).toBe(200);
      expect(copy.bytes.equals(image)).toBe(true);
    }
    await deleteImage(id, TOKENS.c);
  } finally {
    for (const h of holders) h.stop();
  }
  await released(TOKENS.a);
});
