// The manager's answer to a request that needs the leader while the leader it knows is not known to
// be alive (leaderWait.ts): the handler's 307 (or "no leader" 503) is held back, the request waits
// for a live leader, its body unread, and then runs again here, where the handler serves it (this
// node leads now) or redirects it to the live leader. With the leader known and alive the handler's
// 307 goes out at once, as before. Handlers mark these answers (src/http/leaderRedirect.ts); this
// middleware needs no list of the routes that need the leader.

import type { HttpBindings } from '@hono/node-server';
import type { Context, MiddlewareHandler } from 'hono';
import { clientGoneSignal } from '../../http/clientGone.ts';
import { leaderLocation, takeLeaderAnswer } from '../../http/leaderRedirect.ts';
import type { LeaderWait, LiveLeader } from '../leaderWait.ts';

/** Runs of one request at most: a leadership that keeps changing ends in a redirect, not a loop. */
const MAX_RUNS = 3;

/** Requests being run again: their inner run leaves the decision to the outer one. */
const runningAgain = new WeakSet<Request>();

interface Dispatcher {
  fetch(request: Request, env?: unknown): Response | Promise<Response>;
}

/** `app`: the app this middleware is mounted on, to run a request again once a leader is alive. */
export function awaitLiveLeader(wait: LeaderWait, app: Dispatcher): MiddlewareHandler {
  return async (c, next) => {
    const raw = c.req.raw;
    if (runningAgain.has(raw)) return next();
    await next();
    if (!takeLeaderAnswer(raw) || !wait.holds()) return;
    const deadline = wait.deadlineFromNow();
    const gone = clientGoneSignal(c.env);
    for (let run = 1; ; run++) {
      if (answerStands(c.res, wait.liveLeader())) return;
      const outcome = await wait.until(deadline, gone);
      // Nobody reads the answer: running the request again would only cost work.
      if (gone?.aborted) return;
      if (!outcome.ok) {
        replaceResponse(c, errorAnswer(503, 'NoLeader', outcome.message, { 'retry-after': '1' }));
        return;
      }
      if (run >= MAX_RUNS || !bodyUnread(c)) {
        replaceResponse(c, redirectTo(c.req.url, outcome.leader));
        return;
      }
      runningAgain.add(raw);
      try {
        replaceResponse(c, await app.fetch(raw, c.env));
      } finally {
        runningAgain.delete(raw);
      }
      if (!takeLeaderAnswer(raw)) return;
    }
  };
}

/** A 307 to the leader that is alive now goes out as it is. */
function answerStands(res: Response, live: LiveLeader | null): boolean {
  if (live === null || live.self || res.status !== 307) return false;
  const location = res.headers.get('location');
  return location !== null && URL.canParse(location) && new URL(location).origin === new URL(live.url).origin;
}

/**
 * Nothing of the body was read, nor will be by a consumer already attached (a stream handed out
 * before its first chunk came has not read yet, but would take what comes): the request can run again.
 */
function bodyUnread(c: Context): boolean {
  const incoming = (c.env as Partial<HttpBindings> | undefined)?.incoming;
  if (!incoming) return !c.req.raw.bodyUsed;
  const consumers = incoming.listenerCount('data') + incoming.listenerCount('readable');
  return !incoming.readableDidRead && incoming.readableFlowing === null && consumers === 0;
}

/** A request that cannot run again (its body was read) is sent to the live leader, even this one. */
function redirectTo(requestUrl: string, leader: LiveLeader): Response {
  const location = leader.self ? requestUrl : leaderLocation(requestUrl, leader.url);
  const message = leader.self ? 'this manager leads now' : `the leader is at ${leader.url}`;
  return errorAnswer(307, 'NotLeader', message, { location });
}

function errorAnswer(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string>,
): Response {
  return new Response(JSON.stringify({ error: { code, message } }), {
    status,
    headers: { 'content-type': 'application/json', ...headers },
  });
}

/**
 * Hono copies the headers of the answer it holds into one assigned over it (a stale Location or
 * Retry-After would go out with a 201): let go of the old one first.
 */
function replaceResponse(c: Context, res: Response): void {
  c.res = undefined as unknown as Response;
  c.res = res;
}
