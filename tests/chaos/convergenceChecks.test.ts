// The at-rest checks on a real cluster behind the proxies: a healthy cluster passes them, and a
// planted orphan and a dead worker are each reported until the cluster repairs them.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { SHA256_HEADER } from '../../src/protocol/workerHeaders.ts';
import { until } from '../helpers/until.ts';
import { ChaosCluster } from './chaosCluster.ts';
import { convergenceProblems } from './checks.ts';
import { Rng } from './rng.ts';
import { requestFollowingRedirects, seededPng, sha256 } from './workload.ts';

let cluster: ChaosCluster;
const rng = new Rng(5);

async function problems(): Promise<string[]> {
  return convergenceProblems(cluster);
}

beforeAll(async () => {
  cluster = await ChaosCluster.start();
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

describe('convergenceProblems', () => {
  it('passes on a healthy cluster holding images', async () => {
    for (let i = 0; i < 3; i++) {
      const res = await requestFollowingRedirects(
        `${cluster.managerUrls()[i]}/v1/images/ok-${i}`,
        { method: 'PUT', body: seededPng(rng, 500) },
        30_000,
      );
      expect(res.status).toBe(201);
    }
    await until('convergence', async () => (await problems()).length === 0, 60_000);
  });

  it('reports a blob no record knows', async () => {
    const bytes = seededPng(rng, 300);
    const w = cluster.proc('w1');
    const res = await fetch(`http://127.0.0.1:${w.realPort}/blobs/planted-orphan`, {
      method: 'PUT',
      body: bytes,
      headers: { [CLUSTER_SECRET_HEADER]: cluster.secret, [SHA256_HEADER]: sha256(bytes) },
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(201);
    // The leader's sweep may collect it quickly (grace 2 s): it is caught, or already gone.
    const seen = await problems();
    const orphanSeen = seen.some((p) => p.includes('planted-orphan') && p.includes('no record knows'));
    const held = await (await cluster.workerGet(w, '/inventory')).text();
    expect(orphanSeen || !held.includes('planted-orphan')).toBe(true);
    await until('the orphan collected', async () => (await problems()).length === 0, 60_000);
  });

  it('reports a worker that is down and a replica it no longer serves', async () => {
    await cluster.kill(cluster.proc('w2'));
    await until('w2 reported', async () => (await problems()).some((p) => p.includes('w2')), 60_000);
    cluster.spawn(cluster.proc('w2'));
    await until('convergence after w2 returns', async () => (await problems()).length === 0, 90_000);
  }, 200_000);
});
