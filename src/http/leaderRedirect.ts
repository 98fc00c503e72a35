import type { Context } from 'hono';
import { jsonError } from './errors.ts';

/**
 * Requests answered "go to the leader" or "no leader known": a manager that holds such an answer
 * while the leader it names is not known to be alive waits for one and runs the request again
 * (src/manager/http/awaitLiveLeader.ts). Keyed by the raw request, which every pass shares.
 */
const leaderAnswers = new WeakSet<Request>();

/**
 * A follower's answer to a write: 307 to the same path and query on the leader, so clients
 * (curl -L, undici, workers) repeat the request, body included, where it can be served.
 */
export function redirectToLeader(c: Context, leaderUrl: string, message: string): Response {
  c.header('location', leaderLocation(c.req.url, leaderUrl));
  leaderAnswers.add(c.req.raw);
  return c.json({ error: { code: 'NotLeader', message: `${message}; the leader is at ${leaderUrl}` } }, 307);
}

/** The same path and query as `requestUrl`, on `leaderUrl`. */
export function leaderLocation(requestUrl: string, leaderUrl: string): string {
  const here = new URL(requestUrl);
  return new URL(here.pathname + here.search, leaderUrl).toString();
}

/** The answer to a request that needs the leader while none is known: 503, retry shortly. */
export function noLeaderKnown(c: Context, message: string): Response {
  c.header('retry-after', '1');
  leaderAnswers.add(c.req.raw);
  return jsonError(c, 503, 'NoLeader', message);
}

/** Whether this request was answered by redirectToLeader or noLeaderKnown; forgets it. */
export function takeLeaderAnswer(request: Request): boolean {
  return leaderAnswers.delete(request);
}
