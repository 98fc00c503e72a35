import type { Context } from 'hono';

/**
 * A follower's answer to a write: 307 to the same path and query on the leader, so clients
 * (curl -L, undici, workers) repeat the request, body included, where it can be served.
 */
export function redirectToLeader(c: Context, leaderUrl: string, message: string): Response {
  const here = new URL(c.req.url);
  c.header('location', new URL(here.pathname + here.search, leaderUrl).toString());
  return c.json({ error: { code: 'NotLeader', message: `${message}; the leader is at ${leaderUrl}` } }, 307);
}
