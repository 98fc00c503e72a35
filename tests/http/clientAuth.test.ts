import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { clientGate, requireClientToken } from '../../src/http/clientAuth.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';

function app(tokens: string[]) {
  const a = new Hono();
  a.use('/v1/images/*', requireClientToken(tokens));
  a.get('/v1/images/:id', (c) => c.text('ok'));
  return a;
}

describe('client bearer tokens', () => {
  it('leaves the API open when no token is configured', async () => {
    expect((await app([]).request('/v1/images/a')).status).toBe(200);
  });

  it('refuses a request without a token, or with a wrong one, with a JSON 401', async () => {
    const a = app(['token-for-alice-0123456789']);
    const missing = await a.request('/v1/images/a');
    expect(missing.status).toBe(401);
    expect(missing.headers.get('www-authenticate')).toContain('Bearer');
    expect(await missing.json()).toMatchObject({ error: { code: 'Unauthorized' } });
    const wrong = await a.request('/v1/images/a', {
      headers: { authorization: 'Bearer token-for-mallory-012345' },
    });
    expect(wrong.status).toBe(401);
  });

  it('accepts any configured token', async () => {
    const a = app(['token-for-alice-0123456789', 'token-for-bob-000123456789']);
    const res = await a.request('/v1/images/a', {
      headers: { authorization: 'Bearer token-for-bob-000123456789' },
    });
    expect(res.status).toBe(200);
  });
});

const ALICE = 'token-for-alice-0123456789';
const SCRAPER = 'token-for-prometheus-0123';
const SECRET = 'the-cluster-secret-0123456789';

function gated(tokens: string[], metricsTokens: string[]) {
  const a = new Hono();
  a.use(
    '*',
    clientGate({
      tokens,
      metricsTokens,
      open: (p) => p === '/healthz',
      secretPaths: { secret: SECRET, match: (p) => p === '/v1/cluster/raft' },
    }),
  );
  for (const path of ['/healthz', '/metrics', '/v1/cluster/raft', '/v1/cluster/nodes'])
    a.get(path, (c) => c.text('ok'));
  return a;
}

const status = async (a: Hono, path: string, headers: Record<string, string> = {}) =>
  (await a.request(path, { headers })).status;
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('the client gate', () => {
  it('changes nothing without tokens', async () => {
    const a = gated([], []);
    for (const path of ['/healthz', '/metrics', '/v1/cluster/raft', '/v1/cluster/nodes'])
      expect(await status(a, path), path).toBe(200);
  });

  it('closes every route it is not told is open, and opens them to a client token', async () => {
    const a = gated([ALICE], [SCRAPER]);
    expect(await status(a, '/healthz')).toBe(200);
    for (const path of ['/metrics', '/v1/cluster/raft', '/v1/cluster/nodes', '/not/a/route']) {
      expect(await status(a, path), path).toBe(401);
      expect(await status(a, path, bearer('token-for-mallory-012345')), path).toBe(401);
    }
    for (const path of ['/metrics', '/v1/cluster/raft', '/v1/cluster/nodes'])
      expect(await status(a, path, bearer(ALICE)), path).toBe(200);
    expect(await status(a, '/not/a/route', bearer(ALICE))).toBe(404);
  });

  it('lets a metrics token open /metrics only', async () => {
    const a = gated([ALICE], [SCRAPER]);
    expect(await status(a, '/metrics', bearer(SCRAPER))).toBe(200);
    expect(await status(a, '/v1/cluster/nodes', bearer(SCRAPER))).toBe(401);
    expect(await status(a, '/v1/cluster/raft', bearer(SCRAPER))).toBe(401);
  });

  it('closes /metrics with a metrics token alone, leaving the rest open', async () => {
    const a = gated([], [SCRAPER]);
    expect(await status(a, '/metrics')).toBe(401);
    expect(await status(a, '/metrics', bearer(SCRAPER))).toBe(200);
    expect(await status(a, '/v1/cluster/nodes')).toBe(200);
  });

  it('takes the cluster secret on the paths named for it, nowhere else', async () => {
    const a = gated([ALICE], []);
    const secret = { [CLUSTER_SECRET_HEADER]: SECRET };
    expect(await status(a, '/v1/cluster/raft', secret)).toBe(200);
    expect(await status(a, '/v1/cluster/nodes', secret)).toBe(401);
    expect(await status(a, '/metrics', secret)).toBe(401);
  });
});
