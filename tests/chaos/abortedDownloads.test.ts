// Clients hanging up on downloads must not take a manager down. Found by the chaos run (seed 8): a
// manager streaming an image from a slow worker died with ERR_INVALID_STATE "Controller is already
// closed" when the client went away mid-stream (Node 20's Readable.toWeb, nodejs/node#54205).
// The proxies slow the managers' links to the workers so every download is in flight when aborted.

import { afterAll, beforeAll, expect, it } from 'vitest';
import { ChaosCluster } from './chaosCluster.ts';
import { Rng } from './rng.ts';
import { requestFollowingRedirects, seededPng, sha256 } from './workload.ts';

let cluster: ChaosCluster;

beforeAll(async () => {
  cluster = await ChaosCluster.start();
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

it('a manager survives clients aborting downloads mid-stream', async () => {
  const bytes = seededPng(new Rng(3), 16_000);
  const put = await requestFollowingRedirects(
    `${cluster.managerUrls()[0]}/v1/images/aborted`,
    { method: 'PUT', body: bytes },
    30_000,
  );
  expect(put.status).toBe(201);
  for (const m of cluster.managers())
    for (const w of cluster.workers()) cluster.setLink(m.name, w.name, { delayMs: 150 });
  for (let i = 0; i < 40; i++) {
    const url = `${cluster.managerUrls()[i % 3]}/v1/images/aborted`;
    await fetch(url, { signal: AbortSignal.timeout(50 + ((i * 37) % 400)) })
      .then((r) => r.arrayBuffer())
      .catch(() => null);
  }
  cluster.healLinks();
  for (const url of cluster.managerUrls()) {
    const res = await fetch(`${url}/v1/images/aborted`, { signal: AbortSignal.timeout(30_000) });
    expect(res.status).toBe(200);
    expect(sha256(new Uint8Array(await res.arrayBuffer()))).toBe(sha256(bytes));
  }
  expect(cluster.unexpectedExits).toEqual([]);
}, 200_000);
