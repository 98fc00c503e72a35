// A request whose client hung up before its answer: a held request (the manager's wait for a live
// leader) must not keep its place in the queue, nor run again for a socket nobody reads.

import type { HttpBindings } from '@hono/node-server';

/**
 * Fires when the connection closes before the answer was written. The response's 'close' comes
 * either after the answer was sent or when the connection ends early; `writableFinished` tells them
 * apart. Undefined outside a Node server (no socket to watch).
 */
export function clientGoneSignal(env: unknown): AbortSignal | undefined {
  const outgoing = (env as Partial<HttpBindings> | undefined)?.outgoing;
  if (!outgoing) return undefined;
  const gone = new AbortController();
  if (outgoing.destroyed && !outgoing.writableFinished) gone.abort();
  else outgoing.once('close', () => outgoing.writableFinished || gone.abort());
  return gone.signal;
}
