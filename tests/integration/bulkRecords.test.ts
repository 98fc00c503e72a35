// The benchmark-only route that commits image records without bytes (bulkRecordRoutes.ts): served
// with --bulk-record-load, only to an operator, through the leader, each record with its own result.

import { createHash } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ImageCluster } from './imageCluster.ts';

let cluster: ImageCluster;

beforeAll(async () => {
  cluster = await ImageCluster.start({
    name: 'bulk-records-test',
    workers: 2,
    managerArgs: ['--bulk-record-load'],
  });
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

function record(id: string, replicas = ['w1', 'w2']) {
  const sha256 = createHash('sha256').update(id).digest('hex');
  return { type: 'recordObject', id, size: 10, sha256, contentType: 'image/png', createdAt: 1, replicas };
}

async function post(url: string, body: unknown, secret: string | null) {
  const res = await fetch(`${url}/v1/cluster/bulk-records`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(secret ? { [CLUSTER_SECRET_HEADER]: secret } : {}) },
    body: JSON.stringify(body),
    redirect: 'manual',
    signal: AbortSignal.timeout(30_000),
  });
  return {
    status: res.status,
    location: res.headers.get('location'),
    body: await res.json().catch(() => null),
  };
}

describe('bulk records', () => {
  it('commits each record with its own outcome, for an operator on the leader only', async () => {
    const leader = await cluster.leader();
    const records = Array.from({ length: 300 }, (_, i) => record(`r${i}`));
    records.push(record('elsewhere', ['w1', 'w9']));
    const first = await post(leader.url, { records }, cluster.secret);
    expect(first).toMatchObject({
      status: 200,
      body: { created: 300, existing: 0, rejected: [{ id: 'elsewhere', code: 'NodeUnknown' }] },
    });
    const again = await post(leader.url, { records: records.slice(0, 2) }, cluster.secret);
    expect(again.body).toEqual({ created: 0, existing: 2, rejected: [] });
    const meta = await fetch(`${leader.url}/v1/images/r299/meta`);
    expect(meta.status).toBe(200);

    expect((await post(leader.url, { records }, null)).status).toBe(401);
    expect((await post(leader.url, { records: [{ id: '../x' }] }, cluster.secret)).status).toBe(400);
    const [follower] = await cluster.followers();
    const redirected = await post(follower!.url, { records }, cluster.secret);
    expect(redirected.status).toBe(307);
    expect(redirected.location).toContain(leader.url);
  }, 60_000);
});
