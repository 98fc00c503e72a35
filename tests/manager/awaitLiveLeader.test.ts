// A request that needs the leader, on a manager whose leader is not known to be alive, waits for a
// live one (leaderWait.ts, awaitLiveLeader.ts): on a real HTTP server, with the leader as a Raft node
// would show it (who leads, how long since it was heard) set by the test. The handler answers as the
// manager's routes do: serves when this node leads, else redirectToLeader or noLeaderKnown.

import { request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { type Context, Hono } from 'hono';
import { Registry } from 'prom-client';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { noLeaderKnown, redirectToLeader } from '../../src/http/leaderRedirect.ts';
import { readBodyText } from '../../src/http/requestBody.ts';
import { awaitLiveLeader } from '../../src/manager/http/awaitLiveLeader.ts';
import { LeaderWait, liveLeaderOf } from '../../src/manager/leaderWait.ts';

const QUIET_MS = 200;
const WAIT_MS = 2_000;
const OLD_LEADER = 'http://127.0.0.1:9';
const NEW_LEADER = 'http://127.0.0.1:10';

/** The Raft node's view of its leader, as liveLeaderOf reads it. */
const view = {
  leads: false,
  leader: null as { id: string; url: string } | null,
  heardAt: 0,
  isLeader() {
    return this.leads;
  },
  leaderInfo() {
    return this.leads ? null : this.leader;
  },
  leaderSilenceMs() {
    if (this.leads) return 0;
    return this.leader === null ? null : performance.now() - this.heardAt;
  },
};
const metrics = new Registry();
const wait = new LeaderWait(() => liveLeaderOf(view, QUIET_MS), { waitMs: WAIT_MS, maxWaiting: 2 }, metrics);

/** imgvault_leader_waits_total by outcome. */
async function waitEnds(): Promise<Record<string, number>> {
  const { values } = await metrics.getSingleMetric('imgvault_leader_waits_total')!.get();
  return Object.fromEntries(values.map((v) => [String(v.labels.outcome), v.value]));
}

/** A server of its own for `leaderWait`, whose one route answers with `answer`; `run` gets its URL. */
async function withOwnServer(
  leaderWait: LeaderWait,
  answer: (c: Context) => Response,
  run: (thingsUrl: string) => Promise<void>,
): Promise<void> {
  const app = new Hono();
  app.use('*', awaitLiveLeader(leaderWait, app));
  app.post('/v1/things', answer);
  const own = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => own.once('listening', () => resolve()));
  try {
    await run(`http://127.0.0.1:${(own.address() as AddressInfo).port}/v1/things`);
  } finally {
    await new Promise<void>((resolve) => own.close(() => resolve()));
  }
}

let server: ReturnType<typeof serve>;
let url: string;
/** Runs of the handler, first runs and runs again alike. */
let runs = 0;

beforeAll(async () => {
  const app = new Hono();
  app.use('*', awaitLiveLeader(wait, app));
  app.post('/v1/things', async (c) => {
    runs++;
    if (view.isLeader()) return c.json({ served: (await readBodyText(c, 1 << 20)).length }, 201);
    const leader = view.leaderInfo();
    if (leader) return redirectToLeader(c, leader.url, 'this manager is not the leader');
    return noLeaderKnown(c, 'no leader is known right now; retry shortly');
  });
  // Takes hold of the body before a byte of it came, then finds it needs the leader.
  app.post('/v1/eager', (c) => {
    void c.req.raw.body?.getReader().read();
    return noLeaderKnown(c, 'no leader is known right now; retry shortly');
  });
  server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 });
  await new Promise<void>((resolve) => server.once('listening', () => resolve()));
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  view.leads = false;
  view.leader = null;
});

function heardLately(leaderUrl: string): void {
  view.leader = { id: leaderUrl === OLD_LEADER ? 'm1' : 'm2', url: leaderUrl };
  view.heardAt = performance.now();
}

function wentQuiet(leaderUrl: string): void {
  heardLately(leaderUrl);
  view.heardAt = performance.now() - 10 * QUIET_MS;
}

async function post(body = 'x'.repeat(10_000), signal = AbortSignal.timeout(15_000)) {
  const started = performance.now();
  const res = await fetch(`${url}/v1/things?q=1`, { method: 'POST', body, redirect: 'manual', signal });
  const json = (await res.json()) as { served?: number; error?: { code: string; message: string } };
  return { res, json, ms: performance.now() - started };
}

/** Resolves once `wait` holds `count` requests; fails past a generous bound. */
async function holding(count: number): Promise<void> {
  const deadline = performance.now() + 10_000;
  while (wait.waiting() !== count) {
    if (performance.now() > deadline) throw new Error(`${wait.waiting()} requests held, not ${count}`);
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Runs `change` once `wait` holds a request. */
function whenWaiting(change: () => void): Promise<void> {
  return new Promise((resolve) => {
    const look = setInterval(() => {
      if (wait.waiting() === 0) return;
      clearInterval(look);
      change();
      resolve();
    }, 5);
  });
}

describe('a request that needs the leader', () => {
  it('is redirected at once to a leader heard from lately', async () => {
    heardLately(OLD_LEADER);
    const { res, json } = await post();
    expect(res.status).toBe(307);
    expect(res.headers.get('location')).toBe(`${OLD_LEADER}/v1/things?q=1`);
    expect(json.error?.code).toBe('NotLeader');
    expect(await waitEnds()).toEqual({});
  });

  it('waits while its leader is silent, then goes to the leader heard from next', async () => {
    wentQuiet(OLD_LEADER);
    const [answer] = await Promise.all([post(), whenWaiting(() => heardLately(NEW_LEADER))]);
    expect(answer.res.status).toBe(307);
    expect(answer.res.headers.get('location')).toBe(`${NEW_LEADER}/v1/things?q=1`);
    expect(answer.res.headers.get('retry-after')).toBeNull();
    expect(wait.waiting()).toBe(0);
    expect(await waitEnds()).toEqual({ leader: 1 });
  });

  it('is served here, body and all, when this node comes to lead while it waits', async () => {
    const [answer] = await Promise.all([
      post('y'.repeat(50_000)),
      whenWaiting(() => {
        view.leads = true;
      }),
    ]);
    expect(answer.res.status).toBe(201);
    expect(answer.json.served).toBe(50_000);
    expect(answer.res.headers.get('location')).toBeNull();
  });

  it('is answered 503 with Retry-After once the wait ends without a live leader', async () => {
    wentQuiet(OLD_LEADER);
    const { res, json, ms } = await post();
    expect(res.status).toBe(503);
    expect(res.headers.get('retry-after')).toBe('1');
    expect(res.headers.get('location')).toBeNull();
    expect(json.error?.code).toBe('NoLeader');
    expect(json.error?.message).toContain(`${WAIT_MS} ms`);
    expect(ms).toBeGreaterThanOrEqual(WAIT_MS - 50);
    expect(wait.waiting()).toBe(0);
    expect((await waitEnds()).timeout).toBe(1);
  });

  it('is answered 503 at once when as many requests as allowed already wait', async () => {
    const held = [post(), post()];
    await new Promise<void>((resolve) => {
      const look = setInterval(() => {
        if (wait.waiting() < 2) return;
        clearInterval(look);
        resolve();
      }, 5);
    });
    const refused = await post();
    expect(refused.res.status).toBe(503);
    expect(refused.res.headers.get('retry-after')).toBe('1');
    expect(refused.json.error?.message).toContain('2 requests already wait');
    expect(wait.waiting()).toBe(2);
    heardLately(NEW_LEADER);
    for (const answer of await Promise.all(held)) expect(answer.res.status).toBe(307);
    expect(await waitEnds()).toEqual({ leader: 4, timeout: 1, full: 1 });
  });

  it('frees its place and is not run again when its client hangs up while held', async () => {
    wentQuiet(OLD_LEADER);
    const before = { ...(await waitEnds()) };
    runs = 0;
    const hangUps = [new AbortController(), new AbortController()];
    const abandoned = hangUps.map((hangUp) => post(undefined, hangUp.signal).catch((err: Error) => err.name));
    await holding(2);
    for (const hangUp of hangUps) hangUp.abort();
    expect(await Promise.all(abandoned)).toEqual(['AbortError', 'AbortError']);
    await holding(0);
    const live = post();
    await holding(1);
    heardLately(NEW_LEADER);
    const answer = await live;
    expect(answer.res.status).toBe(307);
    expect(answer.res.headers.get('location')).toBe(`${NEW_LEADER}/v1/things?q=1`);
    // Two first runs of the abandoned requests, the live one's first run and its run once a leader lived.
    expect(runs).toBe(4);
    const ends = await waitEnds();
    expect((ends.gone ?? 0) - (before.gone ?? 0)).toBe(2);
    expect((ends.full ?? 0) - (before.full ?? 0)).toBe(0);
  });

  it('is answered 503 at once when the manager stops while it is held, as is any later one', async () => {
    // A wait of its own, far longer than the test: only close() can end it in time.
    const stopping = new LeaderWait(() => null, { waitMs: 60_000, maxWaiting: 4 });
    const noLeader = (c: Context) => noLeaderKnown(c, 'no leader is known right now; retry shortly');
    await withOwnServer(stopping, noLeader, async (thingsUrl) => {
      const held = fetch(thingsUrl, {
        method: 'POST',
        body: 'x',
        signal: AbortSignal.timeout(15_000),
      });
      const deadline = performance.now() + 10_000;
      while (stopping.waiting() === 0 && performance.now() < deadline)
        await new Promise((r) => setTimeout(r, 5));
      expect(stopping.waiting()).toBe(1);
      stopping.close();
      const res = await held;
      expect(res.status).toBe(503);
      expect(res.headers.get('retry-after')).toBe('1');
      const json = (await res.json()) as { error: { code: string; message: string } };
      expect(json.error.code).toBe('NoLeader');
      expect(json.error.message).toContain('stopping');
      expect(stopping.waiting()).toBe(0);
      expect(await stopping.until(stopping.deadlineFromNow())).toMatchObject({
        ok: false,
        reason: 'stopping',
      });
    });
  });

  it('is not held on a removed member: its answer goes out at once, as before', async () => {
    // Removed, it still names the leader it last heard, which no longer talks to it.
    wentQuiet(OLD_LEADER);
    const removed = new LeaderWait(
      () => liveLeaderOf(view, QUIET_MS),
      { waitMs: WAIT_MS, maxWaiting: 4 },
      undefined,
      () => false,
    );
    const toLeader = (c: Context) =>
      redirectToLeader(c, view.leaderInfo()!.url, 'this manager is not the leader');
    await withOwnServer(removed, toLeader, async (thingsUrl) => {
      const held = fetch(thingsUrl, {
        method: 'POST',
        body: 'x',
        redirect: 'manual',
        signal: AbortSignal.timeout(15_000),
      });
      const res = await held;
      expect(res.status).toBe(307);
      expect(res.headers.get('location')).toBe(`${OLD_LEADER}/v1/things`);
      expect(removed.waiting()).toBe(0);
    });
  });

  it('is sent to the live leader, not run again, when a consumer took its body before a byte came', async () => {
    const { port } = new URL(url);
    const req = httpRequest({
      host: '127.0.0.1',
      port,
      method: 'POST',
      path: '/v1/eager',
      headers: { 'content-length': '4' },
    });
    const answer = new Promise<{ status: number; location: string | undefined }>((resolve, reject) => {
      req.on('response', (res) => {
        res.resume();
        resolve({ status: res.statusCode ?? 0, location: res.headers.location });
      });
      req.on('error', reject);
    });
    // The headers go out; the body waits until the request is held.
    req.flushHeaders();
    await holding(1);
    view.leads = true;
    const { status, location } = await answer;
    req.destroy();
    expect(status).toBe(307);
    expect(location).toBe(`${url}/v1/eager`);
  });
});
