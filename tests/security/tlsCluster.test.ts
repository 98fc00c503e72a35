// A real cluster over HTTPS (three managers, three workers, child processes) with a CA the test
// makes: Raft, the worker protocol, worker reads and worker-to-worker repair copies all run over
// TLS, an upload is read back through a follower, and what does not speak TLS with the cluster's
// CA is refused.

import { createHash } from 'node:crypto';
import { readFile, rm } from 'node:fs/promises';
import { Agent, request } from 'undici';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { makeTestCa, OPENSSL, type TestCa } from '../helpers/testCa.ts';
import { ImageCluster, type ManagerProc, pngImage, runCli, until } from '../integration/imageCluster.ts';

const skip = OPENSSL === null ? 'no openssl command on this machine to make a test CA' : false;

let ca: TestCa;
let other: TestCa;
let cluster: ImageCluster;
let leader: ManagerProc;

beforeAll(async () => {
  if (skip) return;
  ca = await makeTestCa();
  other = await makeTestCa('a CA the cluster does not trust');
  cluster = await ImageCluster.start({
    managers: 3,
    workers: 3,
    tls: ca,
    name: 'tls-cluster',
    // Generous: other test files may be starting clusters of their own on the same cores.
    startTimeoutMs: 90_000,
    // A killed worker is repaired within seconds (the repair copy is a worker-to-worker call).
    managerArgs: ['--heartbeat-interval-ms', '300', '--suspect-after-ms', '2000', '--down-after-ms', '4000'],
  });
  leader = await cluster.leader();
}, 240_000);

afterAll(async () => {
  await cluster?.close();
  for (const c of [ca, other]) if (c) await rm(c.dir, { recursive: true, force: true });
});

const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** What a request through `dispatcher` ends with: its status, or the error's code. */
async function outcome(url: string, dispatcher: Agent): Promise<number | string> {
  try {
    const res = await request(url, { dispatcher, headersTimeout: 5_000 });
    await res.body.dump();
    return res.statusCode;
  } catch (err) {
    const e = err as { code?: string; cause?: { code?: string } };
    return e.code ?? e.cause?.code ?? String(err);
  } finally {
    await dispatcher.close();
  }
}

describe.skipIf(skip)(`a cluster over TLS (${skip || 'openssl'})`, () => {
  it('runs Raft and the worker protocol over https: an upload reads back through a follower', async () => {
    expect(leader.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/);
    const raft = (await (await fetch(`${leader.url}/v1/cluster/raft`)).json()) as {
      members: Record<string, string>;
    };
    expect(Object.values(raft.members).every((u) => u.startsWith('https://'))).toBe(true);
    const nodes = (await (await fetch(`${leader.url}/v1/cluster/nodes`)).json()) as {
      nodes: { id: string; url: string }[];
    };
    expect(nodes.nodes.map((n) => n.url).every((u) => u.startsWith('https://'))).toBe(true);

    const bytes = pngImage(200_000);
    const up = await fetch(`${leader.url}/v1/images`, {
      method: 'POST',
      body: bytes,
      signal: AbortSignal.timeout(30_000),
    });
    const answer = await up.text();
    expect(up.status, answer).toBe(201);
    const { id, replicas } = JSON.parse(answer) as { id: string; replicas: string[] };
    expect(replicas).toHaveLength(2);

    const follower = (await cluster.followers())[0]!;
    const read = await fetch(`${follower.url}/v1/images/${id}`, { signal: AbortSignal.timeout(30_000) });
    expect(read.status).toBe(200);
    expect(sha256(Buffer.from(await read.arrayBuffer()))).toBe(sha256(bytes));
    for (const w of replicas) {
      const copy = await cluster.workerBlob(cluster.worker(w), id);
      expect(copy.status).toBe(200);
      expect(sha256(copy.bytes)).toBe(sha256(bytes));
    }
  });

  it('refuses plain http on the manager and worker ports', async () => {
    const worker = cluster.workers[0]!;
    for (const url of [leader.url, worker.url]) {
      const plain = url.replace(/^https:/, 'http:');
      const result = await outcome(`${plain}/healthz`, new Agent());
      expect(result, plain).not.toBe(200);
      expect(typeof result, `${plain} answered ${result}`).toBe('string');
    }
  });

  it('refuses a client that does not trust the cluster CA', async () => {
    const worker = cluster.workers[0]!;
    for (const url of [leader.url, worker.url]) {
      expect(await outcome(`${url}/healthz`, new Agent())).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      const wrongCa = new Agent({ connect: { ca: await readFile(other.caFile, 'utf8') } });
      expect(await outcome(`${url}/healthz`, wrongCa)).toBe('UNABLE_TO_VERIFY_LEAF_SIGNATURE');
      const rightCa = new Agent({ connect: { ca: await readFile(ca.caFile, 'utf8') } });
      expect(await outcome(`${url}/healthz`, rightCa)).toBe(200);
    }
  });

  it('refuses a worker registration and a member addition at a plain http URL', async () => {
    const header = {
      id: 'w9',
      url: 'http://127.0.0.1:9',
      zone: 'z',
      diskUsed: 0,
      diskFree: 1,
      blobCount: 0,
      blobBytes: 0,
    };
    const reg = await fetch(`${leader.url}/internal/v1/workers/register`, {
      method: 'POST',
      headers: { [CLUSTER_SECRET_HEADER]: cluster.secret, 'content-type': 'application/x-ndjson' },
      body: `${JSON.stringify(header)}\n`,
    });
    expect(reg.status).toBe(400);
    expect(((await reg.json()) as { error: { message: string } }).error.message).toMatch(
      /must be https:\/\//,
    );
    const add = await fetch(`${leader.url}/v1/cluster/members`, {
      method: 'POST',
      headers: { [CLUSTER_SECRET_HEADER]: cluster.secret, 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'm9', url: 'http://127.0.0.1:9' }),
    });
    expect(add.status).toBe(400);
  });

  it('repairs a lost worker with a worker-to-worker copy over https', async () => {
    const bytes = pngImage(100_000);
    const up = await fetch(`${leader.url}/v1/images`, { method: 'POST', body: bytes });
    expect(up.status).toBe(201);
    const { id, replicas } = (await up.json()) as { id: string; replicas: string[] };
    const lost = cluster.worker(replicas[0]!);
    await cluster.killWorker(lost);
    const meta = await until(
      `${id} copied away from ${lost.id}`,
      async () => {
        const m = (await (await fetch(`${leader.url}/v1/images/${id}/meta`)).json()) as {
          replicas: string[];
        };
        return m.replicas.length === 2 && !m.replicas.includes(lost.id) ? m : null;
      },
      90_000,
    );
    for (const w of meta.replicas) {
      const copy = await cluster.workerBlob(cluster.worker(w), id);
      expect(sha256(copy.bytes)).toBe(sha256(bytes));
    }
  });

  it('the CLI reaches the cluster with --ca, and is refused without it', async () => {
    const bytes = pngImage(1_000);
    const up = await fetch(`${leader.url}/v1/images`, { method: 'POST', body: bytes });
    const { id } = (await up.json()) as { id: string };
    const urls = cluster.managers.map((m) => m.url).join(',');
    const trusted = await runCli(['ls', '--ca', ca.caFile, '--url', urls], 60_000);
    expect(trusted.code, trusted.stderr).toBe(0);
    expect(trusted.stdout).toContain(id);
    const untrusted = await runCli(['ls', '--url', leader.url], 60_000);
    expect(untrusted.code).not.toBe(0);
    expect(untrusted.stderr).toMatch(/UNABLE_TO_VERIFY_LEAF_SIGNATURE|unable to verify/);
  });
});
