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
 * and closes the connection instead. Outside @hono/node-server (app.request in tools and tests)
 * the web body is used, and `abandon` destroys it.
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
