// The drain of refused upload bodies on a real HTTP server on 127.0.0.1: a body within the limits is
// read to its end (the connection stays usable); one over the per-body cap, or one that would pass
// the process-wide budget while other drains hold it, is answered at once with the connection closed.

import { request } from 'node:http';
import { afterEach, expect, it } from 'vitest';
import { RefusedBodyDrain } from '../../src/manager/http/refusedBodyDrain.ts';
import { listenOnLoopback } from '../helpers/loopbackServer.ts';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanups.splice(0).reverse()) await undo();
});

/** A server refusing every request with 503, after draining its body through `drain` if it can. */
async function refusingServer(drain: RefusedBodyDrain): Promise<string> {
  const server = await listenOnLoopback(async (req, res) => {
    const read = await drain.drain(req, Number(req.headers['content-length'] ?? Number.NaN));
    res.writeHead(503, read ? {} : { connection: 'close' });
    res.end(JSON.stringify({ read }));
  });
  cleanups.push(server.close);
  return server.url;
}

interface Sent {
  answer: Promise<{ status: number; connection: string | undefined; at: number }>;
  req: ReturnType<typeof request>;
}

/** A POST declaring `length` bytes, of which `first` are sent now; the rest only with `req.end`. */
function post(url: string, length: number, first: number): Sent {
  const req = request(url, { method: 'POST', headers: { 'content-length': String(length) } });
  const answer = new Promise<{ status: number; connection: string | undefined; at: number }>(
    (resolve, reject) => {
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, connection: res.headers.connection, at: performance.now() });
      });
      req.on('error', reject);
    },
  );
  answer.catch(() => {});
  req.on('error', () => {});
  req.write(Buffer.alloc(first, 1));
  cleanups.push(async () => void req.destroy());
  return { answer, req };
}

const within = <T>(p: Promise<T>, ms: number): Promise<T> =>
  Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`not within ${ms} ms`)), ms)),
  ]);

it('reads a body within the limits to its end and keeps the connection', async () => {
  const url = await refusingServer(
    new RefusedBodyDrain({ maxBodyBytes: 1 << 20, budgetBytes: 2 << 20, timeoutMs: 20_000 }),
  );
  const sent = post(url, 100_000, 100_000);
  sent.req.end();
  const answer = await within(sent.answer, 20_000);
  expect(answer.status).toBe(503);
  expect(answer.connection).not.toBe('close');
});

it('answers a body over the per-body cap at once, with the connection closed', async () => {
  const url = await refusingServer(
    new RefusedBodyDrain({ maxBodyBytes: 1 << 20, budgetBytes: 64 << 20, timeoutMs: 60_000 }),
  );
  // Only a part is ever sent: an answer at all proves it did not wait for the rest.
  const sent = post(url, (1 << 20) + 1, 1_000);
  const answer = await within(sent.answer, 20_000);
  expect(answer).toMatchObject({ status: 503, connection: 'close' });
});

it('answers at once with the connection closed while other drains hold the budget', async () => {
  const drain = new RefusedBodyDrain({ maxBodyBytes: 1 << 20, budgetBytes: 1_500_000, timeoutMs: 60_000 });
  const url = await refusingServer(drain);
  // Holds 1 MB of the budget: its body is never finished while the next one is answered.
  const holder = post(url, 1_000_000, 1_000);
  const until = performance.now() + 20_000;
  while (drain.drainingBytes < 1_000_000 && performance.now() < until) {
    await new Promise((r) => setTimeout(r, 20));
  }
  expect(drain.drainingBytes).toBe(1_000_000);
  const over = post(url, 600_000, 1_000);
  const answer = await within(over.answer, 20_000);
  expect(answer).toMatchObject({ status: 503, connection: 'close' });
  // Once the holder is done, the budget is back.
  holder.req.end(Buffer.alloc(999_000, 1));
  expect((await within(holder.answer, 20_000)).connection).not.toBe('close');
  expect(drain.drainingBytes).toBe(0);
  const after = post(url, 600_000, 600_000);
  after.req.end();
  expect((await within(after.answer, 20_000)).connection).not.toBe('close');
});
