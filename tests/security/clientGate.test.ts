// With client tokens on, a real manager process answers nothing but /healthz without a token: the
// cluster reads, the image API, the kv API and /metrics all refuse with a JSON 401. A metrics token
// opens /metrics and nothing else; the operator routes keep taking the cluster secret alone; and
// `imgvault status --token` reads the whole cluster through the gate.

import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fetchRaftView,
  killChild,
  managerUrl,
  peersSpec,
  spawnManager,
  waitForLeader,
} from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ImageCluster, runCli, until } from '../integration/imageCluster.ts';

const CLIENT = 'client-token-0123456789abcdef';
const METRICS = 'metrics-token-0123456789abcdef';
const GUARDED = [
  '/v1/cluster/raft',
  '/v1/cluster/nodes',
  '/v1/cluster/stats',
  '/v1/cluster/digest',
  '/v1/images',
];

let dir: string;
let cluster: ImageCluster;
let url: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imgvault-gate-'));
  cluster = await ImageCluster.start({
    managers: 1,
    workers: 2,
    name: 'client-gate',
    tokens: { client: [CLIENT], metrics: METRICS },
  });
  url = (await cluster.leader()).url;
}, 120_000);

afterAll(async () => {
  await cluster?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

async function get(path: string, headers: Record<string, string> = {}) {
  const res = await fetch(`${url}${path}`, { headers, signal: AbortSignal.timeout(10_000) });
  return { status: res.status, type: res.headers.get('content-type') ?? '', text: await res.text() };
}

const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

describe('a manager with client tokens', () => {
  it('refuses every route but /healthz without a token, with a JSON 401', async () => {
    for (const path of [...GUARDED, '/metrics', '/no/such/route']) {
      const res = await get(path);
      expect(res.status, path).toBe(401);
      expect(JSON.parse(res.text), path).toMatchObject({ error: { code: 'Unauthorized' } });
    }
    expect((await get('/healthz')).status).toBe(200);
  });

  it('opens the cluster reads, the image list and /metrics to a client token', async () => {
    for (const path of [...GUARDED, '/metrics'])
      expect((await get(path, bearer(CLIENT))).status, path).toBe(200);
    const nodes = JSON.parse((await get('/v1/cluster/nodes', bearer(CLIENT))).text);
    expect(nodes.nodes).toHaveLength(2);
  });

  it('opens /metrics to the metrics token and nothing else', async () => {
    const metrics = await get('/metrics', bearer(METRICS));
    expect(metrics.status).toBe(200);
    expect(metrics.text).toContain('# TYPE');
    for (const path of GUARDED) expect((await get(path, bearer(METRICS))).status, path).toBe(401);
  });

  it('lets the cluster secret read the Raft view (a peer starting) but not the worker table', async () => {
    const secret = { [CLUSTER_SECRET_HEADER]: cluster.secret };
    expect((await get('/v1/cluster/raft', secret)).status).toBe(200);
    expect((await get('/v1/cluster/nodes', secret)).status).toBe(401);
  });

  it('keeps the operator routes on the cluster secret alone', async () => {
    // A drain's status: the route's own secret check answers, not the client gate.
    expect((await get('/v1/cluster/nodes/w1/drain', bearer(CLIENT))).status).toBe(401);
    const status = await get('/v1/cluster/nodes/w1/drain', { [CLUSTER_SECRET_HEADER]: cluster.secret });
    expect(status.status).toBe(200);
  });

  it('is read whole by imgvault status --token, and not at all without it', async () => {
    const open = await runCli(['status', '--url', url, '--token', CLIENT, '--json'], 60_000);
    const report = JSON.parse(open.stdout);
    expect(report.managers[0]).toMatchObject({ reachable: true, role: 'leader' });
    expect(report.workers.map((w: { id: string }) => w.id).sort()).toEqual(['w1', 'w2']);
    expect(report.objects).toMatchObject({ count: 0 });

    const shut = await runCli(['status', '--url', url, '--json'], 60_000);
    expect(shut.code).toBe(1);
    expect(shut.stdout + shut.stderr).toContain('401');
  }, 150_000);
});

describe('kv-mode managers with client tokens', () => {
  const kv: { id: string; port: number; child: ChildProcess | null }[] = [];
  const spawnKv = (m: (typeof kv)[number], peers: string) => {
    m.child = spawnManager({
      id: m.id,
      port: m.port,
      dataDir: join(dir, m.id),
      peers,
      secretFile: cluster.secretFile,
      args: ['--mode', 'kv', '--client-tokens-file', cluster.tokenFile('client')],
      logFile: join(dir, `${m.id}.log`),
      env: { IMGVAULT_LOG_LEVEL: 'warn' },
    });
  };
  const urls = () => kv.map((m) => managerUrl(m.port));

  beforeAll(async () => {
    for (const id of ['k1', 'k2', 'k3']) kv.push({ id, port: await freePort(), child: null });
    for (const m of kv) spawnKv(m, peersSpec(kv));
    await waitForLeader(urls(), 60_000, bearer(CLIENT));
  }, 90_000);

  afterAll(async () => {
    await Promise.all(kv.map((m) => (m.child ? killChild(m.child) : undefined)));
  });

  it('refuses /v1/kv without a token and serves it with one', async () => {
    const { url: leader } = await waitForLeader(urls(), 60_000, bearer(CLIENT));
    const put = (headers: Record<string, string>) =>
      fetch(`${leader}/v1/kv/a`, {
        method: 'PUT',
        headers: { ...headers, 'content-type': 'application/json' },
        body: JSON.stringify({ value: 'x' }),
        signal: AbortSignal.timeout(10_000),
      });
    expect((await put({})).status).toBe(401);
    expect((await put(bearer(CLIENT))).status).toBe(200);
    const read = (headers: Record<string, string>) =>
      fetch(`${leader}/v1/kv/a`, { headers, signal: AbortSignal.timeout(10_000) });
    expect((await read({})).status).toBe(401);
    expect(await (await read(bearer(CLIENT))).json()).toEqual({ key: 'a', value: 'x' });
  }, 60_000);

  it('lets imgvault raft transfer-leader work with the cluster secret alone', async () => {
    const leader = await waitForLeader(urls(), 60_000, bearer(CLIENT));
    const target = kv.find((m) => m.id !== leader.id)!;
    const r = await runCli(
      ['raft', 'transfer-leader', target.id, '--url', urls().join(','), '--secret-file', cluster.secretFile],
      60_000,
    );
    expect([r.code, r.stderr]).toEqual([0, '']);
    expect(r.stdout).toContain(`${target.id} leads now`);
  }, 90_000);

  it('still stops a founder whose data was lost: peers show it their Raft view for the secret', async () => {
    const leader = await waitForLeader(urls(), 60_000, bearer(CLIENT));
    const victim = kv.find((m) => m.id !== leader.id)!;
    await until(
      'the leader to hold the follower acknowledging entries',
      async () =>
        ((await fetchRaftView(leader.url, 1_000, bearer(CLIENT)))?.peers?.[victim.id]?.match ?? 0) > 1,
      30_000,
    );
    await killChild(victim.child!);
    victim.child = null;
    await rm(join(dir, victim.id), { recursive: true, force: true });
    spawnKv(victim, peersSpec(kv));
    const child = victim.child as ChildProcess | null;
    const code = await new Promise<number | null>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`${victim.id} still running after 60 s`)), 60_000);
      child!.once('exit', (c) => {
        clearTimeout(timer);
        resolve(c);
      });
    });
    expect(code).toBe(1);
    expect(await readFile(join(dir, `${victim.id}.log`), 'utf8')).toContain('has an empty data folder');
  }, 120_000);
});
