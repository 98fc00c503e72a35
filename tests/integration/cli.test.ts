// The operator's command line against real processes (three managers, three workers): `status`
// (also with a manager down), a folder upload that rides through kill -9 of the leader and stores
// every file exactly once, drain and undrain, leader transfer, and replacing a dead manager with
// `manager remove` + `manager add` (which also runs managers with `imgvault manager --id ...`).

import type { ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../src/cli/clusterStatus.ts';
import { killChild, managerUrl, peersSpec, spawnManager } from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { ImageCluster, type ManagerProc, pngImage, runCli, until } from './imageCluster.ts';

let cluster: ImageCluster;
let folder: string;
/** Every image the cluster holds: id -> bytes. */
const stored = new Map<string, Buffer>();
const extraChildren: ChildProcess[] = [];

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'imgvault-cli' });
  folder = await mkdtemp(join(tmpdir(), 'imgvault-cli-files-'));
}, 90_000);

afterAll(async () => {
  for (const c of extraChildren) await killChild(c);
  await cluster?.close();
  if (folder) await rm(folder, { recursive: true, force: true });
});

const urls = () => cluster.managers.map((m) => m.url).join(',');
const admin = (args: string[], managers = urls()) =>
  runCli([...args, '--url', managers, '--secret-file', cluster.secretFile]);

async function statusJson(): Promise<{ code: number | null; status: ClusterStatus; stderr: string }> {
  const r = await runCli(['status', '--json', '--url', urls()]);
  return { code: r.code, status: JSON.parse(r.stdout) as ClusterStatus, stderr: r.stderr };
}

async function listIds(m: ManagerProc): Promise<string[]> {
  const ids: string[] = [];
  let after: string | null = null;
  do {
    const q = new URLSearchParams({ limit: '1000', ...(after ? { after } : {}) });
    const res = await fetch(`${m.url}/v1/images?${q}`, { signal: AbortSignal.timeout(10_000) });
    const page = (await res.json()) as { items: { id: string }[]; next: string | null };
    ids.push(...page.items.map((i) => i.id));
    after = page.next;
  } while (after);
  return ids;
}

async function expectAllReadable(managers: { url: string }[]): Promise<void> {
  for (const m of managers) {
    for (const [id, bytes] of stored) {
      const res = await fetch(`${m.url}/v1/images/${id}`, { signal: AbortSignal.timeout(10_000) });
      const got = Buffer.from(await res.arrayBuffer());
      expect([m.url, id, res.status, got.equals(bytes)]).toEqual([m.url, id, 200, true]);
    }
  }
}

describe('imgvault command line on a live cluster', () => {
  it('status answers "healthy" with every manager and worker, in text and JSON', async () => {
    const leader = await cluster.leader();
    const text = await runCli(['status', '--url', urls()]);
    expect(text.code).toBe(0);
    expect(text.stdout).toContain(`leader: ${leader.id}`);
    for (const id of ['m1', 'm2', 'm3', 'w1', 'w2', 'w3']) expect(text.stdout).toContain(id);
    expect(text.stdout).toMatch(/under-replicated 0, unavailable 0, lost 0, repairing 0/);
    expect(text.stdout.trim().endsWith('healthy')).toBe(true);

    const { code, status } = await statusJson();
    expect(code).toBe(0);
    expect(status.healthy).toBe(true);
    expect(status.leader?.id).toBe(leader.id);
    expect(status.managers.map((m) => [m.id, m.reachable, m.leader])).toEqual(
      ['m1', 'm2', 'm3'].map((id) => [id, true, leader.id]),
    );
    for (const m of status.managers) {
      expect(m.commit).toBeGreaterThan(0);
      expect(m.lag).not.toBeNull();
    }
    expect(status.workers.map((w) => [w.id, w.state])).toEqual([
      ['w1', 'up'],
      ['w2', 'up'],
      ['w3', 'up'],
    ]);
    expect(status.objects).toMatchObject({ underReplicated: 0, unavailable: 0, lost: 0, repairing: 0 });
  }, 60_000);

  it('uploads a folder across kill -9 of the leader: every file stored exactly once, retries counted', async () => {
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 40; i++) {
      const bytes = pngImage(40_000 + i * 500);
      files.set(join(folder, `img-${String(i).padStart(2, '0')}.png`), bytes);
    }
    for (const [path, bytes] of files) await writeFile(path, bytes);
    const before = (await listIds(await cluster.leader())).length;
    const old = await cluster.leader();

    let finished = false;
    const upload = runCli(['upload', folder, '--url', urls(), '--concurrency', '4']).finally(() => {
      finished = true;
    });
    await until('some files stored', async () => (await listIds(old)).length >= before + 4, 20_000);
    expect(finished).toBe(false);
    await cluster.killManager(old);
    const result = await upload;
    expect(result.stderr).toContain(`uploaded ${files.size} of ${files.size} files`);
    const retried = Number(/(\d+) retried/.exec(result.stderr)?.[1]);
    expect(retried).toBeGreaterThanOrEqual(1);
    expect(result.code).toBe(0);

    const lines = result.stdout.trim().split('\n');
    expect(lines).toHaveLength(files.size);
    for (const line of lines) {
      const [id, path] = line.split('\t') as [string, string];
      stored.set(id, files.get(path)!);
    }
    cluster.spawnManager(old);
    const leader = await cluster.leader(20_000);
    // Exactly once: the listing grew by the number of files, and holds each reported id.
    const listed = await listIds(leader);
    expect(listed.length - before).toBe(files.size);
    for (const id of stored.keys()) expect(listed).toContain(id);
    await expectAllReadable([leader]);
  }, 90_000);

  it('status still answers with a manager down, names it, and says it is not healthy', async () => {
    const [down] = await cluster.followers();
    await cluster.killManager(down!);
    try {
      // The two left agree on a leader first: if leadership had moved just before the kill, an
      // election may still be running, which status would rightly report as "no leader".
      await cluster.leader(20_000);
      const { code, status } = await statusJson();
      expect(code).toBe(3);
      expect(status.healthy).toBe(false);
      expect(status.leader).not.toBeNull();
      expect(status.unreachable).toEqual([down!.url]);
      expect(status.managers.find((m) => m.url === down!.url)).toMatchObject({
        id: down!.id,
        reachable: false,
      });
      expect(status.problems.join('\n')).toContain(`manager ${down!.id} unreachable`);
      expect(status.workers).toHaveLength(3);
      expect(status.objects?.count).toBe(stored.size);
      const text = await runCli(['status', '--url', urls()]);
      expect(text.stdout).toMatch(new RegExp(`${down!.id}\\s+${down!.url}\\s+UNREACHABLE`));
      expect(text.stdout).toContain('NOT HEALTHY');
    } finally {
      cluster.spawnManager(down!);
      await cluster.leader(20_000);
    }
  }, 60_000);

  it('status says so when there is no leader', async () => {
    const followers = await cluster.followers();
    for (const f of followers) await cluster.killManager(f);
    try {
      // The lone leader steps down once it has not heard a majority for an election timeout.
      const lone = await until(
        'the lone manager to step down',
        async () => {
          const r = await statusJson();
          return r.status.leader === null && r.status.managers.some((m) => m.reachable) ? r : null;
        },
        30_000,
      );
      expect(lone.code).toBe(3);
      expect(lone.status.problems[0]).toMatch(/^no leader/);
      const text = await runCli(['status', '--url', urls()]);
      expect(text.stdout).toContain('leader: NONE');
      const nobody = await runCli(['status', '--url', 'http://127.0.0.1:1']);
      expect([nobody.code, nobody.stdout]).toEqual([1, expect.stringContaining('no manager answered')]);
    } finally {
      for (const f of followers) cluster.spawnManager(f);
      await cluster.leader(30_000);
    }
  }, 90_000);

  it('worker undrain takes a drain back', async () => {
    const drain = await admin(['worker', 'drain', 'w3', '--wait-ms', '0']);
    expect(drain.code).toBe(0);
    expect(drain.stdout).toMatch(/w3 is (draining|drained)/);
    const undrain = await admin(['worker', 'undrain', 'w3']);
    expect([undrain.code, undrain.stdout]).toEqual([0, expect.stringContaining('w3 is up again')]);
    const leader = await cluster.leader();
    const res = await fetch(`${leader.url}/v1/cluster/nodes`);
    const nodes = (await res.json()) as { nodes: { id: string; tableState: string }[] };
    expect(nodes.nodes.find((n) => n.id === 'w3')?.tableState).toBe('up');
    const again = await admin(['worker', 'undrain', 'w3']);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain('409 NotDraining');
  }, 60_000);

  it('raft transfer-leader hands leadership to the named manager and waits for it', async () => {
    const [target] = await cluster.followers();
    const r = await admin(['raft', 'transfer-leader', target!.id]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain(`${target!.id} leads now`);
    expect((await cluster.leader()).id).toBe(target!.id);
  }, 60_000);

  it('replaces a dead manager: kill m3, wipe it, manager remove m3, start m4 --join, manager add m4', async () => {
    // m3 must not lead while it is removed: hand leadership away first if it does.
    if ((await cluster.leader()).id === 'm3')
      expect((await admin(['raft', 'transfer-leader', 'm1'])).code).toBe(0);
    const m3 = cluster.managers.find((m) => m.id === 'm3')!;
    await cluster.killManager(m3);
    await rm(m3.dataDir, { recursive: true, force: true });
    const live = cluster.managers.filter((m) => m.id !== 'm3');
    const liveUrls = live.map((m) => m.url).join(',');

    const removed = await admin(['manager', 'remove', 'm3'], liveUrls);
    expect([removed.code, removed.stderr]).toEqual([0, '']);
    expect(removed.stdout).toContain('m3 removed; members: m1, m2');
    const again = await admin(['manager', 'remove', 'm3'], liveUrls);
    expect([again.code, again.stdout]).toEqual([0, expect.stringContaining('m3 is not a member')]);

    const port = await freePort();
    const m4Url = managerUrl(port);
    const m4 = spawnManager({
      id: 'm4',
      port,
      dataDir: join(cluster.root, 'm4'),
      peers: peersSpec(live),
      secretFile: cluster.secretFile,
      args: ['--join'],
      logFile: join(cluster.root, 'm4.log'),
      env: { IMGVAULT_LOG_LEVEL: 'warn' },
    });
    extraChildren.push(m4);
    await until('m4 answering', async () => (await fetch(`${m4Url}/healthz`)).ok, 30_000);
    const added = await admin(['manager', 'add', 'm4', m4Url], liveUrls);
    expect([added.code, added.stderr]).toEqual([0, '']);
    expect(added.stdout).toContain('m4 caught up and is a voter; members: m1, m2, m4');
    // Heartbeat answers name every member, so workers beat m4 before it ever leads: elected with
    // no worker heard, it would refuse uploads until they found it. (An id no table knows: a
    // follower answers without recording it.)
    const leader = await cluster.leader();
    const follower = [...live, { id: 'm4', url: m4Url }].find((m) => m.id !== leader.id)!;
    const beat = await fetch(`${follower.url}/internal/v1/workers/heartbeat`, {
      method: 'POST',
      headers: {
        'content-type': 'application/json',
        'x-imgvault-cluster-secret': (await readFile(cluster.secretFile, 'utf8')).trim(),
      },
      body: JSON.stringify({ id: 'w-probe', diskUsed: 0, diskFree: 2 ** 34, blobCount: 0, blobBytes: 0 }),
    });
    expect(beat.status).toBe(200);
    expect(((await beat.json()) as { managers?: string[] }).managers?.sort()).toEqual(
      [...live.map((m) => m.url), m4Url].sort(),
    );

    await expectAllReadable([...live, { url: m4Url }]);
    const { status } = await statusJson();
    expect(status.managers.filter((m) => m.reachable).map((m) => m.id)).toEqual(['m1', 'm2', 'm4']);
  }, 120_000);
});
