// Upload admission on a real manager process (one manager, two workers) in the default staging
// mode, bodies held in memory in whole slabs up to --staging-memory-bytes (stagingArea.ts), as
// uploadAdmission.test.ts tries it with staged files: a bounded number in flight, an upload over a
// cap waiting for room and then 503 with Retry-After before its body; what the leader holds shows
// in imgvault_staging_memory_bytes and is given back when each upload is answered; a body past the
// memory left goes to a staged file and is stored whole all the same.

import { readdir } from 'node:fs/promises';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { SLAB_BYTES } from '../../src/manager/heldBodies.ts';
import { type HeldUploadOptions, holdUpload, settle } from '../helpers/heldUploads.ts';
import { pngImage, until } from '../integration/imageCluster.ts';
import {
  type AdmissionCluster,
  admitsWaitingUpload,
  deleteImage,
  leaderGauge,
  refusesPastUploadCaps,
  released,
  startAdmissionCluster,
  TOKENS,
} from './admissionFixture.ts';

/** The default --staging-memory-bytes, which this cluster keeps. */
const MEMORY_LIMIT = 64 * 1024 * 1024;
let ac: AdmissionCluster;

beforeAll(async () => {
  ac = await startAdmissionCluster({
    name: 'admission-memory',
    // Under the trickle of holdUpload; the default window (60 s) outlasts every test.
    args: [['--min-upload-rate', '100']],
    inMemory: true,
  });
}, 120_000);

afterAll(async () => {
  await ac?.cluster.close();
});

const openUpload = (opts: HeldUploadOptions) => holdUpload(ac.url, opts);
const gauge = (name: string) => leaderGauge(ac, name);

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
    await deleteImage(ac, (JSON.parse(answer.body) as { id: string }).id, TOKENS.a);
  } finally {
    upload.stop();
  }
});

it('refuses the third concurrent upload of one client, and the fourth of all clients, before their bodies', () =>
  refusesPastUploadCaps(ac));

it("admits an upload waiting over its client cap, holding no memory while it waits, once one of that client's uploads ends", () =>
  admitsWaitingUpload(ac));

it('stages a body past the memory left in a file, and stores it whole', async () => {
  // Two bodies that declare half the memory each reserve all of it, though little of them came.
  const half = MEMORY_LIMIT / 2;
  const head = pngImage(5_000).subarray(0, 4_200);
  const holders = [
    openUpload({ token: TOKENS.a, length: half, first: head, trickle: true }),
    openUpload({ token: TOKENS.b, length: half, first: head, trickle: true }),
  ];
  try {
    await until(
      'the memory full',
      async () => (await gauge('imgvault_staging_memory_bytes')) === MEMORY_LIMIT,
      15_000,
    );
    const image = pngImage(600_000);
    const past = openUpload({ token: TOKENS.c, image });
    holders.push(past);
    await until('its body in a staged file', async () => (await readdir(ac.stagingDir)).length === 1, 15_000);
    expect(await gauge('imgvault_staging_memory_bytes')).toBe(MEMORY_LIMIT);
    past.finish();
    const answer = await settle(past.answer);
    expect(answer.status).toBe(201);
    const { id } = JSON.parse(answer.body) as { id: string };
    const read = await fetch(`${ac.url}/v1/images/${id}`, { headers: ac.cluster.authHeaders() });
    expect(read.status).toBe(200);
    expect(Buffer.from(await read.arrayBuffer()).equals(image)).toBe(true);
    for (const w of ac.cluster.workers) {
      const copy = await ac.cluster.workerBlob(w, id);
      expect(copy.status).toBe(200);
      expect(copy.bytes.equals(image)).toBe(true);
    }
    await deleteImage(ac, id, TOKENS.c);
  } finally {
    for (const h of holders) h.stop();
  }
  await released(ac, TOKENS.a);
});
