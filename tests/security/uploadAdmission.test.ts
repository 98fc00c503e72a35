// Upload admission on a real manager process (one manager, two workers): each cap is tried one past
// its value and holds; a slow body is cut with 408, a non-image with 415 before the rest is sent;
// no refused request leaves an object or a staged file behind.

import { readdir } from 'node:fs/promises';
import { Agent, request as httpRequest } from 'node:http';
import { afterAll, beforeAll, expect, it } from 'vitest';
import {
  type Answer,
  expectRefusedEarly,
  type HeldUploadOptions,
  holdUpload,
  settle,
} from '../helpers/heldUploads.ts';
import { pngImage, until } from '../integration/imageCluster.ts';
import {
  type AdmissionCluster,
  admitsWaitingUpload,
  refusesPastUploadCaps,
  released as releasedIn,
  startAdmissionCluster,
  TOKENS,
  waitHeld as waitHeldIn,
} from './admissionFixture.ts';

const MAX_IMAGE = 200_000;
let ac: AdmissionCluster;
let url: string;
let stagingDir: string;

beforeAll(async () => {
  ac = await startAdmissionCluster({
    name: 'admission',
    args: [
      ['--max-image-bytes', String(MAX_IMAGE)],
      ['--max-staged-bytes', '500000'],
      ['--max-staged-bytes-per-client', '300000'],
      ['--min-upload-rate', '100'],
      ['--upload-rate-window-ms', '3000'],
      // Every upload gets a staged file: an admitted upload shows by it.
      ['--staging-memory-bytes', '0'],
    ],
    inMemory: false,
  });
  ({ url, stagingDir } = ac);
}, 120_000);

afterAll(async () => {
  await ac?.cluster.close();
});

const openUpload = (opts: HeldUploadOptions) => holdUpload(url, opts);
const released = (token: string) => releasedIn(ac, token);
const waitHeld = (n: number) => waitHeldIn(ac, n);

it('refuses the third concurrent upload of one client, and the fourth of all clients, before their bodies', () =>
  refusesPastUploadCaps(ac));

it("admits an upload waiting over its client cap as soon as one of that client's uploads ends", () =>
  admitsWaitingUpload(ac));

it('refuses an upload whose staged bytes would pass the per-client or the total cap', async () => {
  const holders = [openUpload({ token: TOKENS.c, length: 200_000, trickle: true })];
  try {
    await waitHeld(1);
    const second = openUpload({ token: TOKENS.c, length: 150_000, trickle: true });
    holders.push(second);
    expectRefusedEarly(second, await settle(second.answer), 'StagingFull', 'maxStagedBytesPerClient');
    // Without a Content-Length an upload reserves the image size limit.
    const chunked = openUpload({ token: TOKENS.c, length: 0, first: pngImage(5_000), trickle: false });
    holders.push(chunked);
    const chunkedAnswer = await settle(chunked.answer);
    expect(chunkedAnswer.status).toBe(503);
    expect(chunkedAnswer.body).toContain('Content-Length');

    holders.push(openUpload({ token: TOKENS.b, length: 200_000, trickle: true }));
    await waitHeld(2);
    const third = openUpload({ token: TOKENS.a, length: 150_000, trickle: true });
    holders.push(third);
    expectRefusedEarly(third, await settle(third.answer), 'StagingFull', 'maxStagedBytes ');
  } finally {
    for (const h of holders) h.stop();
  }
  await released(TOKENS.c);
});

it('reads the whole body of a refused upload sent at once, so its client reads the 503 on a connection it can use again', async () => {
  const holders = [
    openUpload({ token: TOKENS.a, trickle: true }),
    openUpload({ token: TOKENS.a, trickle: true }),
  ];
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  try {
    await waitHeld(2);
    const image = pngImage(150_000);
    const send = (method: string, body?: Buffer) =>
      new Promise<Answer & { reused: boolean }>((resolve, reject) => {
        const req = httpRequest(`${url}/v1/images`, {
          method,
          agent,
          headers: {
            authorization: `Bearer ${TOKENS.a}`,
            ...(body ? { 'content-length': String(body.length) } : {}),
          },
        });
        req.on('response', (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d) => {
            text += d;
          });
          res.on('end', () =>
            resolve({
              status: res.statusCode ?? 0,
              headers: res.headers,
              body: text,
              reused: req.reusedSocket,
            }),
          );
        });
        req.on('error', reject);
        req.end(body);
      });
    const refused = await settle(send('POST', image));
    expect(refused.status).toBe(503);
    expect(JSON.parse(refused.body).error.code).toBe('TooManyUploads');
    expect(refused.headers.connection).not.toBe('close');
    const next = await settle(send('GET'));
    expect(next.status).toBe(200);
    expect(next.reused).toBe(true);
  } finally {
    agent.destroy();
    for (const h of holders) h.stop();
  }
  await released(TOKENS.a);
});

it('cuts a body slower than the minimum rate with 408 and removes its staged file', async () => {
  const started = Date.now();
  const slow = openUpload({ token: TOKENS.a, trickle: false });
  try {
    const answer = await settle(slow.answer, 30_000);
    expect(answer.status).toBe(408);
    expect(JSON.parse(answer.body).error.code).toBe('BodyTooSlow');
    // Two windows of 3 s at most: the one the first bytes came in, and the empty one after.
    expect(Date.now() - started).toBeLessThan(20_000);
  } finally {
    slow.stop();
  }
  await until('staging folder empty', async () => (await readdir(stagingDir)).length === 0, 10_000);
});

it('refuses a body that is no image from its first bytes, before the rest is sent', async () => {
  const text = openUpload({ token: TOKENS.a, first: Buffer.alloc(5_000, 'a'), trickle: true });
  try {
    const answer = await settle(text.answer);
    expect(answer.status).toBe(415);
    expect(JSON.parse(answer.body).error.code).toBe('NotAnImage');
    expect(text.bodyBytesSent()).toBeLessThan(text.length);
  } finally {
    text.stop();
  }
  await until('staging folder empty', async () => (await readdir(stagingDir)).length === 0, 10_000);
  const list = await fetch(`${url}/v1/images`, { headers: { authorization: `Bearer ${TOKENS.a}` } });
  expect(((await list.json()) as { items: unknown[] }).items).toEqual([]);
});
