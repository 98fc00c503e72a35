// A worker reads a whole small blob into a reused buffer (src/http/readBuffers.ts) and hands it
// back once the answer written from it is done. Answers a client holds back (it reads nothing, so
// the worker's writes wait, and its later pipelined answers wait whole in the worker) must keep
// their own bytes while other GETs, by the cluster's route and by signed links, reuse the buffers.

import { randomBytes } from 'node:crypto';
import { connect } from 'node:net';
import { request } from 'undici';
import { expect, it } from 'vitest';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { readLinkUrl } from '../../src/protocol/readLink.ts';
import { pipelinedBodies } from '../helpers/pipelinedAnswers.ts';
import { AUTH, SECRET, sha256Of, useWorkerFolder } from './workerHarness.ts';

const folder = useWorkerFolder();

it('answers held back by a client keep their own bytes while other GETs reuse the buffers', async () => {
  const w = await folder.start('a');
  const blobs = Array.from({ length: 12 }, (_, i) => ({
    id: `pooled-${i}`,
    bytes: randomBytes(1024 * 1024 - i * 1000),
  }));
  for (const { id, bytes } of blobs) {
    const res = await request(`${w.url}/blobs/${id}`, {
      method: 'PUT',
      body: bytes,
      headers: { ...AUTH, 'x-imgvault-sha256': sha256Of(bytes) },
    });
    await res.body.dump();
    expect(res.statusCode).toBe(201);
  }
  const linkOf = ({ id, bytes }: { id: string; bytes: Buffer }) =>
    readLinkUrl(w.url, SECRET, {
      id,
      size: bytes.length,
      sha256: sha256Of(bytes),
      crc32c: crc32cHex(bytes),
      contentType: 'image/png',
      exp: Date.now() + 60_000,
    });
  const held = blobs.slice(0, 8);
  const others = blobs.slice(8);
  // Eight blobs asked for at once on one connection, half by the cluster's route and half by
  // signed links, and nothing read yet: the first answer fills the kernel's buffers, the later
  // ones wait whole in the worker.
  const { hostname, port } = new URL(w.url);
  const slow = connect(Number(port), hostname);
  try {
    slow.pause();
    slow.write(
      held
        .map((blob, i) => {
          const target =
            i % 2 === 0 ? `/blobs/${blob.id}` : new URL(linkOf(blob)).pathname + new URL(linkOf(blob)).search;
          const secret = i % 2 === 0 ? `${Object.keys(AUTH)[0]}: ${SECRET}\r\n` : '';
          return `GET ${target} HTTP/1.1\r\nhost: ${hostname}\r\n${secret}\r\n`;
        })
        .join(''),
    );
    await new Promise((r) => setTimeout(r, 300));
    for (let round = 0; round < 4; round++) {
      await Promise.all(
        others.map(async (blob, i) => {
          const res =
            (round + i) % 2 === 0
              ? await request(`${w.url}/blobs/${blob.id}`, { headers: AUTH })
              : await request(linkOf(blob));
          expect(res.statusCode).toBe(200);
          expect(sha256Of(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256Of(blob.bytes));
        }),
      );
    }
    const answers = await pipelinedBodies(slow, held.length);
    expect(answers.map((a) => a.status)).toEqual(held.map(() => 200));
    expect(answers.map((a) => sha256Of(a.body))).toEqual(held.map((h) => sha256Of(h.bytes)));
  } finally {
    slow.destroy();
  }
}, 60_000);
