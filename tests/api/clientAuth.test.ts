import { Hono } from 'hono';
import { describe, expect, it } from 'vitest';
import { requireClientToken } from '../../src/api/clientAuth.ts';

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
