// The benchmark-only route that commits image records without bytes (bulkRecordRoutes.ts): served
// with --bulk-record-load, only to an operator, through the leader, each record with its own result.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import {
  managerDir,
  readManagerKeys,
  readWorkerCredentials,
  workerDir,
} from '../../src/http/credentialFiles.ts';
import { mintRaftCredential } from '../../src/http/credentials.ts';
import { ImageCluster } from './imageCluster.ts';

let cluster: ImageCluster;

beforeAll(async () => {
  cluster = await ImageCluster.start({
    name: 'bulk-records-test',
    workers: 2,
    perRole: true,
    managerArgs: ['--bulk-record-load'],
    startTimeoutMs: 90_000,
  });
}, 180_000);

afterAll(async () => {
  await cluster?.close();
});

function record(id: string, replicas = ['w1', 'w2']) {
  const sha256 = createHash('sha256').update(id).digest('hex');
  return { type: 'recordObject', id, size: 10, sha256, contentType: 'image/png', createdAt: 1, replicas };
}

async function post(url: string, body: unknown, secret: string | null, timeoutMs = 30_000) {
  const res = await fetch(`${url}/v1/cluster/bulk-records`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(secret ? { [CLUSTER_SECRET_HEADER]: secret } : {}) },
    body: JSON.stringify(body),
    redirect: 'manual',
    signal: AbortSignal.timeout(timeoutMs),
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
    const logged = await readFile(join(cluster.root, `${leader.id}.log`), 'utf8');
    expect(logged).toContain('"bulk_records.enabled"');
    const redirected = await post(follower!.url, { records }, cluster.secret);
    expect(redirected.status).toBe(307);
    expect(redirected.location).toContain(leader.url);
  }, 60_000);

  it('refuses a worker and a raft credential as any operator route does (401)', async () => {
    const leader = await cluster.leader();
    const [follower] = await cluster.followers();
    const records = [record('by-someone-else')];
    const worker = readWorkerCredentials(workerDir(cluster.credentialsRoot, 'w1'), 'w1').own;
    expect(await post(leader.url, { records }, worker)).toMatchObject({
      status: 401,
      body: { error: { code: 'Unauthorized' } },
    });
    const keys = readManagerKeys(managerDir(cluster.credentialsRoot));
    const raft = mintRaftCredential(keys.raft, follower!.id, leader.id);
    expect(await post(leader.url, { records }, raft)).toMatchObject({
      status: 401,
      body: { error: { code: 'Unauthorized' } },
    });
    expect((await fetch(`${leader.url}/v1/images/by-someone-else/meta`)).status).toBe(404);
  }, 60_000);

  it('gives every record of requests larger than the batch queue its own outcome', async () => {
    // 5 requests of 1,000 at once, each proposing all its records: more than the batch proposer
    // queues (DEFAULT_MAX_QUEUED) if they arrive before the first entries commit. Every record is
    // committed or refused as ProposalDropped (or, in an election, as NotLeader), and the refused ones
    // are committed when sent again.
    const leader = await cluster.leader();
    const batch = (k: number) => Array.from({ length: 1000 }, (_, i) => record(`q${k}-${i}`));
    const answers = await Promise.all(
      [0, 1, 2, 3, 4].map((k) => post(leader.url, { records: batch(k) }, cluster.secret, 120_000)),
    );
    const refused = new Set<string>();
    for (const a of answers) {
      expect(a.status).toBe(200);
      const body = a.body as { created: number; existing: number; rejected: { id: string; code: string }[] };
      expect(body.created + body.rejected.length).toBe(1000);
      for (const r of body.rejected) {
        expect(['ProposalDropped', 'NotLeader', 'Timeout']).toContain(r.code);
        refused.add(r.id);
      }
    }
    // Sent again until none is refused (bounded), as the bench does.
    let again = [0, 1, 2, 3, 4].flatMap(batch).filter((r) => refused.has(r.id));
    const deadline = Date.now() + 90_000;
    while (again.length > 0 && Date.now() < deadline) {
      const res = await post(
        (await cluster.leader()).url,
        { records: again.slice(0, 1000) },
        cluster.secret,
        60_000,
      );
      const left = new Set(
        res.status === 200 ? (res.body as { rejected: { id: string }[] }).rejected.map((r) => r.id) : [],
      );
      if (res.status === 200)
        again = [...again.slice(0, 1000).filter((r) => left.has(r.id)), ...again.slice(1000)];
    }
    expect(again).toEqual([]);
    for (const id of ['q0-0', 'q3-999', 'q4-999', ...[...refused].slice(0, 3)]) {
      expect((await fetch(`${leader.url}/v1/images/${id}/meta`)).status).toBe(200);
    }
  }, 180_000);
});

describe('bulk records without --bulk-record-load', () => {
  let plain: ImageCluster | undefined;
  afterAll(async () => {
    await plain?.close();
  });

  it('is not served', async () => {
    plain = await ImageCluster.start({ name: 'bulk-records-off', managers: 1, workers: 0 });
    const leader = await plain.leader();
    const res = await post(leader.url, { records: [record('x')] }, plain.secret);
    expect(res.status).toBe(404);
    expect((await fetch(`${leader.url}/v1/images/x/meta`)).status).toBe(404);
  }, 120_000);
});
