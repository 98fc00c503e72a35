// Request bodies read straight from Node's IncomingMessage under @hono/node-server. The web stream
// Hono would otherwise build (Node -> web, and back) costs several times the CPU of the work the
// body is for: a third of a Raft leader's CPU, and more than a worker's file write.

import { IncomingMessage } from 'node:http';
import { Readable } from 'node:stream';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';

/**
 * The body's chunks. The Node stream must not be destroyed when a handler stops reading early
 * (413, 507, 409): that cuts the socket before the answer is sent; the server discards the rest
 * after the answer instead (and closes the connection, when the answer says so). Outside
 * @hono/node-server (app.request in tools and tests) the web body is used, and `abandon` destroys it.
 */
export function requestBody(c: Context): { chunks: AsyncIterable<Uint8Array>; abandon: () => void } {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (incoming instanceof IncomingMessage) {
    const iterator = incoming.iterator({ destroyOnReturn: false }) as AsyncIterableIterator<Uint8Array>;
    return { chunks: iterator, abandon: () => {} };
  }
  const raw = c.req.raw.body;
  const stream = raw === null ? Readable.from([]) : Readable.fromWeb(raw as NodeReadableStream<Uint8Array>);
  return { chunks: stream, abandon: () => stream.destroy() };
}

export class BodyTooLarge extends Error {
  constructor(readonly limit: number) {
    super(`request body exceeds ${limit} bytes`);
  }
}

/**
 * The whole body as UTF-8 text, for small JSON requests. A declared Content-Length over `maxBytes`
 * is refused before a byte is read; a body that grows past it while streaming is refused there.
 */
export async function readBodyText(c: Context, maxBytes: number): Promise<string> {
  const declared = c.req.header('content-length');
  if (declared !== undefined && Number(declared) > maxBytes) throw new BodyTooLarge(maxBytes);
  const { chunks, abandon } = requestBody(c);
  const parts: Buffer[] = [];
  let size = 0;
  for await (const chunk of chunks) {
    size += chunk.byteLength;
    if (size > maxBytes) {
      abandon();
      throw new BodyTooLarge(maxBytes);
    }
    parts.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }
  return Buffer.concat(parts, size).toString('utf8');
}

/** The slowest body an upload may send: fewer than `bytesPerSecond` on average over a window is cut. */
export interface MinimumRate {
  bytesPerSecond: number;
  windowMs: number;
}

export class BodyTooSlow extends Error {
  constructor(readonly rate: MinimumRate) {
    super(
      `the body arrived slower than ${rate.bytesPerSecond} bytes/s over ${rate.windowMs / 1000} s ` +
        '(--min-upload-rate, --upload-rate-window-ms)',
    );
  }
}

const TIMED_OUT = Symbol('timedOut');

/**
 * `source`'s chunks, cut with BodyTooSlow as soon as a window of `windowMs` ends having brought
 * fewer than bytesPerSecond x windowMs bytes. A client is judged only on time spent reading from it:
 * while the consumer holds a chunk (a worker or the disk not taking the bytes yet), the window's end
 * moves back by that time, so a slow consumer never cuts a body as BodyTooSlow. Windows follow each
 * other from the first read, so a client that stalls holds its upload slot and staged file one to
 * two windows of reading at most, whatever trickle it keeps up. One timer a window, not one a read:
 * a read waiting when it fires is woken to judge the window (or, if the window's end moved back,
 * the timer is set again for the rest). A pending read left behind by the cut is the server's to
 * discard.
 */
export async function* withMinimumRate(
  source: AsyncIterable<Uint8Array>,
  rate: MinimumRate,
): AsyncGenerator<Uint8Array> {
  const iterator = source[Symbol.asyncIterator]();
  const needed = (rate.bytesPerSecond * rate.windowMs) / 1000;
  let windowEnds = performance.now() + rate.windowMs;
  let inWindow = 0;
  let wakeReader: ((value: typeof TIMED_OUT) => void) | null = null;
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    timer = setTimeout(
      () => {
        timer = undefined;
        wakeReader?.(TIMED_OUT);
      },
      Math.max(0, windowEnds - performance.now()),
    );
  };
  const windowOver = () => {
    // The timer fired before an end that held chunks moved back: wait for the rest of the window.
    if (performance.now() < windowEnds) return arm();
    if (inWindow < needed) throw new BodyTooSlow(rate);
    windowEnds += rate.windowMs;
    inWindow = 0;
    clearTimeout(timer);
    arm();
  };
  arm();
  // A read still pending when the body is cut stays with the iterator: return() would wait for it.
  let pending = false;
  try {
    for (;;) {
      // The window's timer fired while no read waited: judge it before waiting again.
      if (timer === undefined) windowOver();
      const next = iterator.next();
      next.catch(() => {});
      pending = true;
      let result: IteratorResult<Uint8Array> | typeof TIMED_OUT;
      for (;;) {
        result = await new Promise<IteratorResult<Uint8Array> | typeof TIMED_OUT>((resolve, reject) => {
          wakeReader = resolve;
          next.then(resolve, reject);
        });
        wakeReader = null;
        if (result !== TIMED_OUT) break;
        windowOver();
      }
      pending = false;
      if (result.done) return;
      inWindow += result.value.byteLength;
      if (performance.now() >= windowEnds) windowOver();
      const handedOut = performance.now();
      yield result.value;
      windowEnds += performance.now() - handedOut;
    }
  } finally {
    clearTimeout(timer);
    if (!pending) await iterator.return?.();
  }
}
