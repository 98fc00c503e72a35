// A blob PUT whose checksums follow its bytes (src/protocol/checksumTrailer.ts): the worker checks
// the bytes against the trailer's CRC32C and records its sha256, with the guarantees of any PUT.

import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { request } from 'undici';
import { expect, it } from 'vitest';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import {
  CHECKSUMS_HEADER,
  encodeChecksumTrailer,
  TRAILING_CHECKSUMS,
} from '../../src/protocol/checksumTrailer.ts';
import { AUTH, type JsonAnswer, type RunningWorker, sha256Of, useWorkerFolder } from './workerHarness.ts';

const folder = useWorkerFolder();

function pattern(size: number, seed: number): Buffer {
  const bytes = Buffer.alloc(size);
  for (let i = 0; i < size; i++) bytes[i] = (i * 7 + seed) & 0xff;
  return bytes;
}

/** A PUT of `bytes` with the trailer `sums` (the bytes' own unless told), sent in 64 KiB pieces. */
async function putTrailing(
  w: RunningWorker,
  id: string,
  bytes: Buffer,
  sums = { sha256: sha256Of(bytes), crc32c: crc32cHex(bytes) },
) {
  const body = Buffer.concat([bytes, encodeChecksumTrailer(sums)]);
  async function* pieces() {
    for (let at = 0; at < body.length; at += 65_536) yield body.subarray(at, at + 65_536);
  }
  const res = await request(`${w.url}/blobs/${id}`, {
    method: 'PUT',
    body: Readable.from(pieces()),
    headers: { ...AUTH, [CHECKSUMS_HEADER]: TRAILING_CHECKSUMS, 'content-length': String(body.length) },
  });
  return { status: res.statusCode, json: (await res.body.json()) as JsonAnswer };
}

it('stores the bytes before the trailer and answers the trailer sha256 and the CRC32C it computed', async () => {
  const w = await folder.start('data');
  const bytes = pattern(300_001, 1);
  const answer = await putTrailing(w, 'trailed', bytes);
  expect(answer).toEqual({
    status: 201,
    json: { id: 'trailed', size: bytes.length, sha256: sha256Of(bytes), crc32c: crc32cHex(bytes) },
  });
  const res = await request(`${w.url}/blobs/trailed`, { headers: AUTH });
  expect(res.headers.etag).toBe(`"${sha256Of(bytes)}"`);
  expect(Buffer.from(await res.body.arrayBuffer()).equals(bytes)).toBe(true);
  // The same bytes again: unchanged; other bytes under the id: a conflict, the first copy kept.
  expect((await putTrailing(w, 'trailed', bytes)).status).toBe(200);
  expect((await putTrailing(w, 'trailed', pattern(300_001, 2))).status).toBe(409);
});

it('refuses bytes that do not match the trailer CRC32C with 422 and keeps nothing', async () => {
  const w = await folder.start('data');
  const bytes = pattern(200_000, 3);
  const answer = await putTrailing(w, 'bent', bytes, { sha256: sha256Of(bytes), crc32c: '00000000' });
  expect(answer.status).toBe(422);
  expect(answer.json.error?.code).toBe('ChecksumMismatch');
  expect((await request(`${w.url}/blobs/bent`, { headers: AUTH })).statusCode).toBe(404);
  expect(await readdir(path.join(w.dataDir, 'tmp'))).toEqual([]);
});

it('refuses a trailing-checksum PUT too short to hold its trailer', async () => {
  const w = await folder.start('data');
  const res = await request(`${w.url}/blobs/short`, {
    method: 'PUT',
    body: Buffer.alloc(10),
    headers: { ...AUTH, [CHECKSUMS_HEADER]: TRAILING_CHECKSUMS },
  });
  expect(res.statusCode).toBe(400);
  expect(((await res.body.json()) as JsonAnswer).error?.code).toBe('InvalidRequest');
});
