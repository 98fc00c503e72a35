// A worker's answer to a PUT must name the checksum and size it stored: a server that answers 201
// without them (it took the bytes and may have kept none) is a failed copy. A real worker passes.

import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterEach, describe, expect, it } from 'vitest';
import { WorkerCallError, WorkerClient } from '../../src/manager/workerClient.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { SECRET, sha256Of, startTempWorker } from '../storagenode/workerHarness.ts';

const cleanups: (() => Promise<unknown>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const BYTES = Buffer.from('a blob the manager sends');
const SHA = sha256Of(BYTES);

function client(): WorkerClient {
  const c = new WorkerClient({ secret: SECRET, idleTimeoutMs: 5_000 });
  cleanups.push(() => c.close());
  return c;
}

/** A server that reads the body and answers `status` with `answer`, as a worker that lies would. */
async function liar(status: 200 | 201, answer: string): Promise<string> {
  const app = new Hono();
  app.put('/blobs/:id', async (c) => {
    await c.req.arrayBuffer();
    return c.body(answer, status, { 'content-type': 'application/json' });
  });
  const server = await new Promise<ServerType>((resolve) => {
    const s = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
  });
  cleanups.push(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('WorkerClient.putBlob', () => {
  it('refuses a 2xx that does not name the checksum and size sent', async () => {
    const answers: [200 | 201, string][] = [
      [201, ''],
      [201, JSON.stringify({ id: 'b1' })],
      [201, JSON.stringify({ id: 'b1', size: BYTES.length, sha256: 'f'.repeat(64) })],
      [200, JSON.stringify({ id: 'b1', size: BYTES.length + 1, sha256: SHA })],
    ];
    for (const [status, answer] of answers) {
      const url = await liar(status, answer);
      const put = client().putBlob(url, 'b1', SHA, BYTES.length, Readable.from([BYTES]));
      await expect(put).rejects.toBeInstanceOf(WorkerCallError);
      await expect(put).rejects.toThrow(/not the [0-9a-f]{64}/);
    }
  });

  it('refuses a 2xx that names another crc32c than the one sent', async () => {
    const url = await liar(
      201,
      JSON.stringify({ id: 'b1', size: BYTES.length, sha256: SHA, crc32c: '00000000' }),
    );
    const put = client().putBlob(url, 'b1', SHA, BYTES.length, Readable.from([BYTES]), crc32cHex(BYTES));
    await expect(put).rejects.toBeInstanceOf(WorkerCallError);
  });

  it('a real worker checks the body against the crc32c sent and refuses other bytes', async () => {
    const worker = await startTempWorker((undo) => cleanups.push(undo));
    const c = client();
    const crc = crc32cHex(BYTES);
    const corrupted = Buffer.from(BYTES);
    corrupted[0]! ^= 0x20;
    const bad = c.putBlob(worker.url, 'b1', SHA, BYTES.length, Readable.from([corrupted]), crc);
    await expect(bad).rejects.toMatchObject({ code: 'ChecksumMismatch', status: 422 });
    expect(await c.putBlob(worker.url, 'b1', SHA, BYTES.length, Readable.from([BYTES]), crc)).toBe('created');
    expect(await c.putBlob(worker.url, 'b1', SHA, BYTES.length, Readable.from([BYTES]), crc)).toBe(
      'alreadyPresent',
    );
    expect(await worker.store.stat('b1')).toEqual({
      ok: true,
      value: { size: BYTES.length, sha256: SHA, crc32c: crc },
    });
  });

  it('takes a real worker answer, created then already present', async () => {
    const worker = await startTempWorker((undo) => cleanups.push(undo));
    const c = client();
    expect(await c.putBlob(worker.url, 'b1', SHA, BYTES.length, Readable.from([BYTES]))).toBe('created');
    expect(await c.putBlob(worker.url, 'b1', SHA, BYTES.length, Readable.from([BYTES]))).toBe(
      'alreadyPresent',
    );
  });
});
