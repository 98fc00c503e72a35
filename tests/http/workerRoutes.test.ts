// Input checks of the wipe-check and lost-copies routes: every refusal here happens before the
// registry is asked.

import { describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { workerRoutes } from '../../src/manager/http/workerRoutes.ts';
import type { WorkerRegistry } from '../../src/manager/workerRegistry.ts';

const SECRET = 'routes-secret';
const PATH = 'http://127.0.0.1/internal/v1/workers/wipe-check';

function app() {
  const registry = {
    wipeCheck: () => {
      throw new Error('the registry must not be asked about a refused request');
    },
    lostCopies: () => {
      throw new Error('the registry must not be asked about a refused request');
    },
  } as unknown as WorkerRegistry;
  return workerRoutes({ registry, secret: SECRET, heartbeatIntervalMs: 1000 });
}

async function post(body: string, headers: Record<string, string> = { [CLUSTER_SECRET_HEADER]: SECRET }) {
  const res = await app().request(PATH, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body,
  });
  return { status: res.status, body: (await res.json()) as { error: { code: string; message: string } } };
}

describe('POST /internal/v1/workers/wipe-check', () => {
  it('refuses a request without the cluster secret', async () => {
    expect((await post('{}', {})).status).toBe(401);
  });

  it('refuses a body that is not JSON', async () => {
    const res = await post('not json');
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('BadRegistration');
  });

  it('refuses a bad worker id and more than 1,000 ids', async () => {
    const badId = await post(JSON.stringify({ id: '../w1', blobs: [] }));
    expect(badId.status).toBe(400);
    expect(badId.body.error.message).toContain('invalid worker id');
    const tooMany = await post(
      JSON.stringify({ id: 'w1', blobs: Array.from({ length: 1001 }, (_, i) => `b${i}`) }),
    );
    expect(tooMany.status).toBe(400);
  });

  it('refuses a body over 256 KiB', async () => {
    const res = await post(JSON.stringify({ id: 'w1', blobs: ['x'.repeat(300 * 1024)] }));
    expect(res.status).toBe(413);
    expect(res.body.error.code).toBe('BodyTooLarge');
  });
});

describe('POST /internal/v1/workers/lost-copies', () => {
  it('refuses a missing secret, a body that is not JSON and a bad worker id', async () => {
    const at = (body: string, headers: Record<string, string> = { [CLUSTER_SECRET_HEADER]: SECRET }) =>
      app().request('http://127.0.0.1/internal/v1/workers/lost-copies', {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...headers },
        body,
      });
    expect((await at('{}', {})).status).toBe(401);
    expect((await at('nope')).status).toBe(400);
    const badId = await at(JSON.stringify({ id: 'w 1', blobs: ['a'] }));
    expect(badId.status).toBe(400);
    expect(((await badId.json()) as { error: { code: string } }).error.code).toBe('BadRegistration');
  });
});
