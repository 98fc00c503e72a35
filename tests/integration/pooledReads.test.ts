// A proxied GET of a small image gathers its bytes into a reused buffer (src/manager/readBuffers.ts),
// handed back once the answer written from it is done. Answers a client holds back (it reads
// nothing, so the manager's writes wait, and its later pipelined answers wait whole in the
// manager) must keep their own bytes while other GETs go through the same manager meanwhile.

import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { ImageCluster, pngImage } from './imageCluster.ts';

let cluster: ImageCluster;
let url: string;

beforeAll(async () => {
  cluster = await ImageCluster.start({ managers: 1, workers: 2, name: 'pooled-reads' });
  url = (await cluster.leader()).url;
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** The bodies of `count` answers read from `socket` back to back (each framed by content-length). */
async function pipelinedBodies(socket: Socket, count: number): Promise<{ status: number; body: Buffer }[]> {
  let pending = Buffer.alloc(0);
  const answers: { status: number; body: Buffer }[] = [];
  for await (const chunk of socket) {
    pending = Buffer.concat([pending, chunk as Buffer]);
    for (;;) {
      const headEnd = pending.indexOf('\r\n\r\n');
      if (headEnd < 0) break;
      const head = pending.subarray(0, headEnd).toString('latin1');
      const length = Number(/\r\ncontent-length: *(\d+)/i.exec(head)?.[1] ?? 0);
      if (pending.length < headEnd + 4 + length) break;
      answers.push({
        status: Number(head.split(' ')[1]),
        body: pending.subarray(headEnd + 4, headEnd + 4 + length),
      });
      pending = pending.subarray(headEnd + 4 + length);
    }
    if (answers.length === count) break;
  }
  return answers;
}

it('answers held back by a client keep their own bytes while other GETs reuse the buffers', async () => {
  const images = Array.from({ length: 12 }, (_, i) => ({
    id: `pooled-${i}`,
    bytes: pngImage(1024 * 1024 - i * 1000),
  }));
  for (const { id, bytes } of images) {
    const res = await request(`${url}/v1/images/${id}`, { method: 'PUT', body: bytes });
    expect(res.statusCode).toBe(201);
    await res.body.dump();
  }
  const held = images.slice(0, 8);
  const others = images.slice(8);
  // A client that asks for eight images at once on one connection and reads nothing yet: the
  // first answer fills the kernel's buffers, the later ones wait whole in the manager.
  const { hostname, port } = new URL(url);
  const slow = connect(Number(port), hostname);
  try {
    slow.pause();
    slow.write(held.map(({ id }) => `GET /v1/images/${id} HTTP/1.1\r\nhost: ${hostname}\r\n\r\n`).join(''));
    await new Promise((r) => setTimeout(r, 300));
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        others.map(async ({ id, bytes }) => {
          const res = await request(`${url}/v1/images/${id}`);
          expect(res.statusCode).toBe(200);
          expect(sha256(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256(bytes));
        }),
      );
    }
    const answers = await pipelinedBodies(slow, held.length);
    expect(answers.map((a) => a.status)).toEqual(held.map(() => 200));
    expect(answers.map((a) => sha256(a.body))).toEqual(held.map((h) => sha256(h.bytes)));
  } finally {
    slow.destroy();
  }
}, 120_000);
