// Which cross-origin reads a manager allows: the dashboard's GETs, from the managers' own origins
// only, with the preflight answered before the client gate (a browser sends it without a token).

import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { clientGate } from '../../src/http/clientAuth.ts';
import { dashboardCors } from '../../src/manager/http/dashboardCors.ts';

const MEMBERS = ['http://10.0.0.1:7001', 'http://10.0.0.2:7001/'];
const TOKEN = 'dashboard-cors-token-0123456789';

function app(): Hono {
  const a = new Hono();
  a.use(
    '*',
    dashboardCors(() => MEMBERS),
  );
  a.use('*', clientGate({ tokens: [TOKEN], open: (p) => p === '/healthz' }));
  for (const path of ['/v1/cluster/raft', '/v1/images/abc/thumbnail', '/v1/images/abc'])
    a.get(path, (c) => c.text('ok'));
  a.delete('/v1/images/abc', (c) => c.text('deleted'));
  return a;
}

const request = (path: string, init: RequestInit) => app().request(`http://10.0.0.3:7001${path}`, init);

describe('dashboardCors', () => {
  it('answers a preflight from a member origin before the gate', async () => {
    const res = await request('/v1/cluster/raft', {
      method: 'OPTIONS',
      headers: {
        origin: 'http://10.0.0.2:7001',
        'access-control-request-method': 'GET',
        'access-control-request-headers': 'authorization',
      },
    });
    expect(res.status).toBe(204);
    expect(res.headers.get('access-control-allow-origin')).toBe('http://10.0.0.2:7001');
    expect(res.headers.get('access-control-allow-methods')).toBe('GET');
    expect(res.headers.get('access-control-allow-headers')).toBe('Authorization');
  });

  it('lets a member origin read with a token, and the gate still refuses it without one', async () => {
    const origin = { origin: 'http://10.0.0.1:7001' };
    const ok = await request('/v1/images/abc/thumbnail', {
      headers: { ...origin, authorization: `Bearer ${TOKEN}` },
    });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBe('http://10.0.0.1:7001');
    expect((await request('/v1/images/abc/thumbnail', { headers: origin })).status).toBe(401);
  });

  it('allows no other origin, no write and no route the dashboard does not read', async () => {
    const stranger = await request('/v1/cluster/raft', {
      headers: { origin: 'http://evil.example', authorization: `Bearer ${TOKEN}` },
    });
    expect(stranger.headers.get('access-control-allow-origin')).toBeNull();
    const preflight = await request('/v1/cluster/raft', {
      method: 'OPTIONS',
      headers: { origin: 'http://evil.example', 'access-control-request-method': 'GET' },
    });
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
    // The image bytes and their deletion are not dashboard reads: no CORS headers, the gate decides.
    const bytes = await request('/v1/images/abc', {
      headers: { origin: 'http://10.0.0.1:7001', authorization: `Bearer ${TOKEN}` },
    });
    expect(bytes.headers.get('access-control-allow-origin')).toBeNull();
    const deletePreflight = await request('/v1/images/abc', {
      method: 'OPTIONS',
      headers: { origin: 'http://10.0.0.1:7001', 'access-control-request-method': 'DELETE' },
    });
    expect(deletePreflight.status).toBe(401);
  });
});
