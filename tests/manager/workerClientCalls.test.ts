// The manager's worker client: per-role credentials looked up once per node-table version, and a
// write to a worker that takes the body but never answers given up on after the PUT answer
// timeout, while a big body that keeps moving is never cut by it.

import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import {
  DEFAULT_PUT_ANSWER_BYTES_PER_SECOND,
  DEFAULT_PUT_ANSWER_TIMEOUT_MS,
  putAnswerBoundMs,
  WorkerCallError,
  WorkerClient,
} from '../../src/manager/workerClient.ts';
import { listenOnLoopback } from '../helpers/loopbackServer.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanups.splice(0).reverse()) await undo();
});

/** A stand-in worker on 127.0.0.1 answering with `handle`; its URL. */
async function standIn(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<string> {
  const server = await listenOnLoopback(handle);
  cleanups.push(server.close);
  return server.url;
}

function client(opts: ConstructorParameters<typeof WorkerClient>[0]): WorkerClient {
  const c = new WorkerClient(opts);
  cleanups.push(() => c.close());
  return c;
}

/** Answers a PUT as a worker would once the body is in: its size and checksum. */
function storingWorker(seen: string[], delayPerChunkMs = 0) {
  return async (req: IncomingMessage, res: ServerResponse) => {
    seen.push(String(req.headers[CLUSTER_SECRET_HEADER]));
    const hash = createHash('sha256');
    let size = 0;
    for await (const chunk of req as AsyncIterable<Buffer>) {
      hash.update(chunk);
      size += chunk.length;
      if (delayPerChunkMs > 0) await new Promise((r) => setTimeout(r, delayPerChunkMs));
    }
    res.writeHead(req.method === 'DELETE' ? 204 : 201, { 'content-type': 'application/json' });
    res.end(req.method === 'DELETE' ? undefined : JSON.stringify({ sha256: hash.digest('hex'), size }));
  };
}

describe('credentials per worker', () => {
  it('are looked up once per node-table version, and again after the table changed', async () => {
    const seen: string[] = [];
    const url = await standIn(storingWorker(seen));
    let version = 1;
    const lookups: string[] = [];
    const workers = client({
      credentialsFor: async (u) => {
        lookups.push(u);
        return { access: `access-v${version}`, copy: `copy-v${version}` };
      },
      credentialsVersion: () => version,
    });
    await workers.deleteBlob(url, 'a');
    await workers.deleteBlob(url, 'b');
    await workers.deleteBlob(url, 'c');
    expect(lookups).toEqual([url]);
    version = 2;
    await workers.deleteBlob(url, 'd');
    await workers.deleteBlob(url, 'e');
    expect(lookups).toEqual([url, url]);
    expect(seen).toEqual(['access-v1', 'access-v1', 'access-v1', 'access-v2', 'access-v2']);
  });

  it('are looked up on every call without a version', async () => {
    const seen: string[] = [];
    const url = await standIn(storingWorker(seen));
    let n = 0;
    const workers = client({ credentialsFor: async () => ({ access: `k${++n}`, copy: 'c' }) });
    await workers.deleteBlob(url, 'a');
    await workers.deleteBlob(url, 'b');
    expect(seen).toEqual(['k1', 'k2']);
  });
});

describe('PUT answer timeout', () => {
  const body = Buffer.alloc(64 * 1024, 9);
  const sha256 = createHash('sha256').update(body).digest('hex');

  it('gives up on a worker that takes the body and never answers', async () => {
    const url = await standIn((req) => req.resume());
    const workers = client({ secret: 's', putAnswerTimeoutMs: 500, idleTimeoutMs: 60_000 });
    const started = performance.now();
    const put = workers.putBlob(url, 'x', sha256, body.length, Readable.from([body]));
    await expect(put).rejects.toBeInstanceOf(WorkerCallError);
    await expect(put).rejects.toMatchObject({ code: 'Unreachable' });
    // Far below the idle timeout; generous above the 500 ms for a loaded machine.
    expect(performance.now() - started).toBeLessThan(30_000);
  });

  it('grows with the body: a worker still syncing a large blob is waited for', async () => {
    // The worker answers 1.5 s after the body, past the 300 ms base; at 16 KiB/s the 64 KiB body
    // adds 4 s to the bound.
    const url = await standIn(async (req, res) => {
      let size = 0;
      for await (const chunk of req as AsyncIterable<Buffer>) size += chunk.length;
      await new Promise((r) => setTimeout(r, 1_500));
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ sha256, size }));
    });
    const workers = client({ secret: 's', putAnswerTimeoutMs: 300, putAnswerBytesPerSecond: 16 * 1024 });
    await expect(workers.putBlob(url, 'slow', sha256, body.length, Readable.from([body]))).resolves.toBe(
      'created',
    );
  });

  it('allows a 1 GiB body its fsync on a slow disk by default', () => {
    const gib = 1024 ** 3;
    const bound = putAnswerBoundMs(gib, DEFAULT_PUT_ANSWER_TIMEOUT_MS, DEFAULT_PUT_ANSWER_BYTES_PER_SECOND);
    expect(bound).toBeGreaterThan(DEFAULT_PUT_ANSWER_TIMEOUT_MS + 20_000);
    expect(putAnswerBoundMs(0, DEFAULT_PUT_ANSWER_TIMEOUT_MS, DEFAULT_PUT_ANSWER_BYTES_PER_SECOND)).toBe(
      DEFAULT_PUT_ANSWER_TIMEOUT_MS,
    );
  });

  it('does not cut a big body that keeps moving past the timeout', async () => {
    const big = Buffer.alloc(24 * 1024 * 1024, 3);
    const seen: string[] = [];
    // About 1.5 s or more to read it all at this pace: several times the 300 ms answer timeout.
    const url = await standIn(storingWorker(seen, 4));
    const workers = client({ secret: 's', putAnswerTimeoutMs: 300 });
    const chunks = Array.from({ length: 96 }, (_, i) => big.subarray(i * 256 * 1024, (i + 1) * 256 * 1024));
    const started = performance.now();
    await expect(
      workers.putBlob(
        url,
        'big',
        createHash('sha256').update(big).digest('hex'),
        big.length,
        Readable.from(chunks),
      ),
    ).resolves.toBe('created');
    expect(performance.now() - started).toBeGreaterThan(300);
  });
});
