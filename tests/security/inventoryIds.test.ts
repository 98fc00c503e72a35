// A worker's inventory and blob lists carry ids the manager turns into keys and, on workers, file
// names: an id outside the object id pattern is refused at the edge, and nothing of it is spooled.

import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { workerRoutes } from '../../src/manager/http/workerRoutes.ts';
import { InventorySpool } from '../../src/manager/inventorySpool.ts';
import type { InventoryLine, RegistrationHeader, WorkerRegistry } from '../../src/manager/workerRegistry.ts';

const SECRET = 'inventory-ids-secret';
const SHA = 'a'.repeat(64);
let spoolDir: string;
let registered: number;

beforeEach(async () => {
  spoolDir = await mkdtemp(join(tmpdir(), 'imgvault-spool-'));
  registered = 0;
});
afterEach(async () => {
  await rm(spoolDir, { recursive: true, force: true });
});

/** Routes over a registry that spools the inventory as the real one does, and counts completions. */
function app() {
  const registry = {
    register: async (header: RegistrationHeader, inventory: AsyncIterable<InventoryLine>) => {
      const spool = await InventorySpool.write(spoolDir, header.id, inventory);
      registered += 1;
      return { blobs: spool.count };
    },
    wipeCheck: async () => ({ unknown: [] }),
    lostCopies: async () => ({ repaired: [] }),
  } as unknown as WorkerRegistry;
  return workerRoutes({ registry, secret: SECRET, heartbeatIntervalMs: 1000 });
}

function post(path: string, body: string) {
  return app().request(`http://127.0.0.1/internal/v1/workers/${path}`, {
    method: 'POST',
    headers: { [CLUSTER_SECRET_HEADER]: SECRET, 'content-type': 'application/x-ndjson' },
    body,
  });
}

const header = JSON.stringify({
  id: 'w1',
  url: 'http://127.0.0.1:9001',
  zone: 'z1',
  diskUsed: 0,
  diskFree: 1000,
  blobCount: 2,
  blobBytes: 2,
});
const line = (id: string) => JSON.stringify({ id, size: 1, sha256: SHA });

it('registers an inventory of valid ids', async () => {
  const res = await post('register', [header, line('a.png'), line('b')].join('\n'));
  expect(res.status).toBe(200);
  expect(registered).toBe(1);
});

it.each(['../etc/passwd', '.hidden', 'a/b', 'sp ace', 'x'.repeat(129), ''])(
  'refuses an inventory line with id %j and spools nothing',
  async (id) => {
    const res = await post('register', [header, line('a'), line(id)].join('\n'));
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe('BadRegistration');
    expect(body.error.message).toContain('inventory line 2');
    expect(registered).toBe(0);
    expect(await readdir(spoolDir)).toEqual([]);
  },
);

it.each(['wipe-check', 'lost-copies'])('%s refuses a blob id outside the pattern', async (path) => {
  const res = await post(path, JSON.stringify({ id: 'w1', blobs: ['ok', '../../x'] }));
  expect(res.status).toBe(400);
  expect(((await res.json()) as { error: { code: string } }).error.code).toBe('BadRegistration');
  const fine = await post(path, JSON.stringify({ id: 'w1', blobs: ['ok'] }));
  expect(fine.status).toBe(200);
});
