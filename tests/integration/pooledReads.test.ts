// A proxied GET of a small image gathers its bytes into a reused buffer (src/http/readBuffers.ts),
// handed back once the answer written from it is done: by id, by name and through the S3 endpoint.
// Answers a client holds back (it reads nothing, so the manager's writes wait, and its later
// pipelined answers wait whole in the manager) must keep their own bytes while other GETs go
// through the same manager meanwhile.

import { createHash } from 'node:crypto';
import { connect, type Socket } from 'node:net';
import { request } from 'undici';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { pipelinedBodies } from '../helpers/pipelinedAnswers.ts';
import { s3Signer, startS3Cluster } from '../s3/s3Fixture.ts';
import type { S3Key } from '../s3/s3Tools.ts';
import { type ImageCluster, pngImage } from './imageCluster.ts';

let cluster: ImageCluster;
let key: S3Key;
let url: string;
let s3Port: number;

beforeAll(async () => {
  ({ cluster, key } = await startS3Cluster('pooled-reads', { managers: 1, workers: 2 }));
  const leader = await cluster.leader();
  url = leader.url;
  s3Port = leader.s3Port!;
}, 180_000);

afterAll(async () => {
  await cluster?.close();
});

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');
const BUCKET = 'pooled';

/** The headers of an S3 GET of `path`, signed as a client signs it (SigV4, path style). */
async function s3Headers(path: string): Promise<Record<string, string>> {
  const signer = s3Signer(key);
  const signed = await signer.sign({
    method: 'GET',
    protocol: 'http:',
    hostname: '127.0.0.1',
    port: s3Port,
    path,
    query: {},
    headers: { host: `127.0.0.1:${s3Port}`, 'x-amz-content-sha256': sha256(Buffer.alloc(0)) },
  });
  return signed.headers as Record<string, string>;
}

interface Read {
  port: number;
  path: string;
  headers: Record<string, string>;
}

/** How image `id` is read, the way number `way` of three: by id, by name, through S3. */
async function readOf(id: string, way: number): Promise<Read> {
  const port = Number(new URL(url).port);
  if (way % 3 === 0) return { port, path: `/v1/images/${id}`, headers: {} };
  if (way % 3 === 1) return { port, path: `/v1/buckets/${BUCKET}/keys/${id}`, headers: {} };
  const path = `/${BUCKET}/${id}`;
  return { port: s3Port, path, headers: await s3Headers(path) };
}

/** A connection that asks for all of `reads` at once and reads nothing until asked to. */
function heldConnection(port: number, reads: Read[]): Socket {
  const socket = connect(port, '127.0.0.1');
  socket.pause();
  socket.write(
    reads
      .map(({ path, headers }) => {
        const lines = Object.entries({ host: `127.0.0.1:${port}`, ...headers }).map(
          ([k, v]) => `${k}: ${v}\r\n`,
        );
        return `GET ${path} HTTP/1.1\r\n${lines.join('')}\r\n`;
      })
      .join(''),
  );
  return socket;
}

it('answers held back by a client keep their own bytes while other GETs reuse the buffers', async () => {
  const images = Array.from({ length: 12 }, (_, i) => ({
    id: `pooled-${i}`,
    bytes: pngImage(1024 * 1024 - i * 1000),
  }));
  expect((await request(`${url}/v1/buckets/${BUCKET}`, { method: 'PUT' })).statusCode).toBe(201);
  for (const { id, bytes } of images) {
    for (const path of [`/v1/images/${id}`, `/v1/buckets/${BUCKET}/keys/${id}`]) {
      const res = await request(`${url}${path}`, { method: 'PUT', body: bytes });
      expect(res.statusCode).toBe(201);
      await res.body.dump();
    }
  }
  // Clients that ask for twelve images at once on one connection and read nothing yet: the first
  // answers fill the kernel's buffers, the later ones wait whole in the manager. On the main port
  // the reads by name come last, after eight by id; on the S3 port all twelve go through S3.
  const held = images.slice(0, 8);
  const twelve = [...held, ...held.slice(0, 4)];
  const mainReads = await Promise.all(twelve.map(({ id }, i) => readOf(id, i < held.length ? 0 : 1)));
  const s3Reads = await Promise.all(twelve.map(({ id }) => readOf(id, 2)));
  const slowMain = heldConnection(mainReads[0]!.port, mainReads);
  const slowS3 = heldConnection(s3Port, s3Reads);
  const others = images.slice(8);
  try {
    await new Promise((r) => setTimeout(r, 300));
    for (let round = 0; round < 6; round++) {
      await Promise.all(
        others.map(async ({ id, bytes }, i) => {
          const read = await readOf(id, round + i);
          const res = await request(`http://127.0.0.1:${read.port}${read.path}`, { headers: read.headers });
          expect(res.statusCode).toBe(200);
          expect(sha256(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256(bytes));
        }),
      );
    }
    for (const socket of [slowMain, slowS3]) {
      const answers = await pipelinedBodies(socket, twelve.length);
      expect(answers.map((a) => a.status)).toEqual(twelve.map(() => 200));
      expect(answers.map((a) => sha256(a.body))).toEqual(twelve.map((h) => sha256(h.bytes)));
    }
  } finally {
    slowMain.destroy();
    slowS3.destroy();
  }
}, 120_000);
