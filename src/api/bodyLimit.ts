import type { Context, MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';

/**
 * hono's bodyLimit reads `c.req.raw.body`, which makes @hono/node-server build a full web Request
 * and stream for every request (a third of the leader's CPU per PUT in bench/raft.ts). A declared
 * Content-Length is checked from the header alone; only a chunked body takes the streaming path.
 */
export function limitBody(
  maxSize: number,
  onError: (c: Context) => Response | Promise<Response>,
): MiddlewareHandler {
  const streaming = bodyLimit({ maxSize, onError });
  return async (c, next) => {
    const length = c.req.header('content-length');
    if (length !== undefined && c.req.header('transfer-encoding') === undefined) {
      return Number(length) > maxSize ? onError(c) : next();
    }
    return streaming(c, next);
  };
}
