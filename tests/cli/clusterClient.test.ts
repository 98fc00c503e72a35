// ClusterClient against real HTTP servers on 127.0.0.1: moving on from a refused connection, a
// reset and a 503 (waiting what Retry-After asks), following 307 with the body rebuilt, stopping
// at once on a 4xx, a final error that names what every manager answered, and giving up a manager
// that stopped answering while another leads (but not a slow leader).

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  ClusterClient,
  ClusterRequestFailed,
  DEFAULT_RETRY,
  managerUrls,
  retryAfterMs,
} from '../../src/cli/clusterClient.ts';
import { freePort } from '../../src/cli/localProcess.ts';

const servers: Server[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) {
    s.closeAllConnections();
    await new Promise((r) => s.close(r));
  }
});

type Handler = (req: IncomingMessage, res: ServerResponse, body: string, hit: number) => void;

async function serve(handler: Handler): Promise<{ url: string; hits: () => number }> {
  let hits = 0;
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (d) => {
      body += d;
    });
    req.on('end', () => handler(req, res, body, ++hits));
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, hits: () => hits };
}

const refusedUrl = async () => `http://127.0.0.1:${await freePort()}`;
const FAST = { ...DEFAULT_RETRY, minDelayMs: 10, maxDelayMs: 50, attempts: 6, totalMs: 20_000 };
/** Answers wait far longer than the test may run: only the leader watch can move a request on. */
const WATCHED = {
  ...FAST,
  headersTimeoutMs: 120_000,
  silentManager: { firstCheckMs: 200, intervalMs: 100, probeTimeoutMs: 300 },
};

function raftView(id: string, role: string, term: number, leader: { id: string; url: string } | null) {
  return {
    id,
    role,
    term,
    leader,
    commit: 5,
    applied: 5,
    firstIndex: 1,
    lastIndex: 5,
    snapshotIndex: 0,
    confState: { voters: ['m1', 'm2', 'm3'], learners: [] },
    members: {},
  };
}

function answerView(res: ServerResponse, view: object): void {
  res.writeHead(200, { 'content-type': 'application/json' });
  res.end(JSON.stringify(view));
}

describe('ClusterClient', () => {
  it('moves on from a refused manager and from a 503, waiting as long as Retry-After asks', async () => {
    const busy = await serve((_req, res, _body, hit) => {
      if (hit === 1) {
        res.writeHead(503, { 'retry-after': '1', 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: { code: 'NoLeader', message: 'election' } }));
      } else res.end('ok');
    });
    const client = new ClusterClient([await refusedUrl(), busy.url], {}, FAST);
    const started = Date.now();
    const { res, attempts, url } = await client.request('GET', '/x', { expect: [200] });
    expect(await res.body.text()).toBe('ok');
    // refused, then 503 + Retry-After, then (round the list: refused again) the busy one answers.
    expect(attempts).toBe(4);
    expect(url).toBe(busy.url);
    expect(Date.now() - started).toBeGreaterThanOrEqual(900);
  });

  it('retries a request whose connection was reset on another manager', async () => {
    const reset = await serve((req) => req.socket.destroy());
    const good = await serve((_req, res, body) => res.end(`got ${body}`));
    let built = 0;
    const client = new ClusterClient([reset.url, good.url], {}, FAST);
    const { res, attempts } = await client.request('PUT', '/v1/images/a', {
      body: () => `bytes-${++built}`,
      expect: [200],
    });
    expect(await res.body.text()).toBe('got bytes-2');
    expect([attempts, reset.hits(), good.hits()]).toEqual([2, 1, 1]);
  });

  it('follows a 307 to the leader and sends the body again there', async () => {
    const leader = await serve((req, res, body) => res.end(`${req.method} ${req.url} ${body}`));
    const follower = await serve((req, res) => {
      res.writeHead(307, { location: `${leader.url}${req.url}` });
      res.end();
    });
    const client = new ClusterClient([follower.url], {}, FAST);
    const { res, attempts } = await client.request('PUT', '/v1/images/b?x=1', {
      body: () => 'payload',
      expect: [200],
    });
    expect(await res.body.text()).toBe('PUT /v1/images/b?x=1 payload');
    expect(attempts).toBe(1);
  });

  it('stops at once on a 4xx, with its code', async () => {
    const other = await serve((_req, res) => res.end('never asked'));
    const missing = await serve((_req, res) => {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'NotFound', message: 'no image x' } }));
    });
    const client = new ClusterClient([missing.url, other.url], {}, FAST);
    const err = await client.request('GET', '/v1/images/x', { expect: [200] }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ClusterRequestFailed);
    expect(err).toMatchObject({ status: 404, code: 'NotFound', message: '404 NotFound: no image x' });
    expect([missing.hits(), other.hits()]).toEqual([1, 0]);
  });

  it('gives up after its bounded attempts, naming what each manager answered', async () => {
    const down = await refusedUrl();
    const unavailable = await serve((_req, res) => {
      res.writeHead(503, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { code: 'NoLiveWorker', message: 'no live worker' } }));
    });
    const client = new ClusterClient([down, unavailable.url], {}, FAST);
    const err = (await client.request('GET', '/y', { expect: [200] }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(ClusterRequestFailed);
    expect(err.message).toContain(`${down}: ECONNREFUSED`);
    expect(err.message).toContain(`${unavailable.url}: 503 NoLiveWorker: no live worker`);
    expect(unavailable.hits()).toBe(FAST.attempts / 2);
  });

  it('gives up a manager that stopped answering once another leads, and sends the request there', async () => {
    // A frozen leader (SIGSTOP): its kernel still takes connections and bodies, nothing answers.
    const frozen = await serve(() => {});
    const leader = await serve((req, res, body) => {
      if (req.url === '/v1/cluster/raft')
        answerView(res, raftView('m2', 'leader', 3, { id: 'm2', url: leaderUrl }));
      else res.end(`stored ${body}`);
    });
    const leaderUrl = leader.url;
    let built = 0;
    const client = new ClusterClient([frozen.url, leader.url], {}, WATCHED);
    const { res, attempts, url } = await client.request('PUT', '/v1/images/a', {
      body: () => `bytes-${++built}`,
      expect: [200],
    });
    expect(await res.body.text()).toBe('stored bytes-2');
    expect([attempts, url]).toEqual([2, leader.url]);
  });

  it('keeps waiting on a slow leader that still answers as leader, even under another name', async () => {
    const slow = await serve((req, res, body) => {
      if (req.url === '/v1/cluster/raft')
        answerView(res, raftView('m1', 'leader', 3, { id: 'm1', url: slowUrl }));
      else setTimeout(() => res.end(`stored ${body}`), 1_000);
    });
    const slowUrl = slow.url;
    // The follower names the slow leader by another name than the client reached it under.
    const alias = slow.url.replace('127.0.0.1', 'localhost');
    const follower = await serve((req, res) => {
      if (req.url === '/v1/cluster/raft')
        answerView(res, raftView('m2', 'follower', 3, { id: 'm1', url: alias }));
      else res.end('never asked');
    });
    const client = new ClusterClient([slow.url, follower.url], {}, WATCHED);
    const { res, attempts } = await client.request('PUT', '/v1/images/b', { body: () => 'x', expect: [200] });
    expect(await res.body.text()).toBe('stored x');
    expect(attempts).toBe(1);
    // The watch looked (several times over the second) and let the request be.
    expect(follower.hits()).toBeGreaterThan(1);
    expect(slow.hits()).toBeGreaterThan(2);
  });

  it('reads Retry-After as seconds or a date, and manager lists from flag, env or default', () => {
    expect(retryAfterMs('2')).toBe(2000);
    expect(retryAfterMs(new Date(10_000).toUTCString(), 7_000)).toBe(3000);
    expect(retryAfterMs(undefined)).toBe(0);
    expect(managerUrls('http://a:1/, http://b:2')).toEqual(['http://a:1', 'http://b:2']);
    expect(managerUrls(undefined, { IMGVAULT_URL: 'http://c:3' })).toEqual(['http://c:3']);
    expect(managerUrls(undefined, {})).toHaveLength(3);
    expect(() => managerUrls('ftp://x')).toThrow(/not an http/);
  });
});
