// A Node Readable as a web ReadableStream for a Response body, without Readable.toWeb: on Node 20
// its adapter can enqueue a chunk that was in flight when the web side was cancelled (a client
// hanging up on a download) and throws ERR_INVALID_STATE "Controller is already closed" outside
// any handler, which ends the process (nodejs/node#54205). Here the web side pulls one chunk at a
// time, so nothing is pushed after a cancel, and a cancel destroys the source.

import type { Readable } from 'node:stream';

export function webStreamOf(source: Readable): ReadableStream<Uint8Array> {
  const chunks = source[Symbol.asyncIterator]() as AsyncIterator<Uint8Array>;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const next = await chunks.next();
      if (next.done) controller.close();
      else controller.enqueue(next.value);
    },
    async cancel(reason) {
      source.destroy(reason instanceof Error ? reason : undefined);
      await chunks.return?.().catch(() => undefined);
    },
  });
}
