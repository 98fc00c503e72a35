// Worker loss, repair and rejoin on real processes: three managers and four workers on 127.0.0.1
// with short failure timeouts. The scenarios run in order on one cluster, each starting from the
// healthy state the previous one left: kill -9 of a worker, its return after repair (excess copies
// and orphans removed), a flapping worker (nothing copied), the leader killed mid-repair, both
// copies of an object down (503, then readable), `--rejoin wipe` (keeping a last copy), a drain
// from the CLI, and a copy rotten on disk found by the scrubber.

import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { blobRelativePath } from '../../src/storagenode/blobId.ts';
import { flipByte } from '../storagenode/workerHarness.ts';
import {
  ImageCluster,
  type ManagerProc,
  metric,
  pngImage,
  runCli,
  until,
  type WorkerProc,
} from './imageCluster.ts';

const DOWN_AFTER_MS = 5_000;
const ORPHAN_GRACE_MS = 1_500;

interface ImageJson {
  id: string;
  sha256: string;
  replicas: string[];
}
interface NodeJson {
  id: string;
  state: string;
  tableState: string;
  silenceMs: number | null;
  stored: { objects: number };
}

let cluster: ImageCluster;
const stored = new Map<string, Buffer>();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

async function json<T>(url: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(5_000) });
  const text = await res.text();
  return { status: res.status, body: (text ? JSON.parse(text) : null) as T };
}

async function listAll(m: ManagerProc): Promise<ImageJson[]> {
  const items: ImageJson[] = [];
  let after: string | null = null;
  for (let page = 0; page < 100; page++) {
    const q: string = after ? `&after=${encodeURIComponent(after)}` : '';
    const { status, body } = await json<{ items: ImageJson[]; next: string | null }>(
      `${m.url}/v1/images?limit=100${q}`,
    );
    expect(status).toBe(200);
    items.push(...body.items);
    if (!body.next) return items;
    after = body.next;
  }
  throw new Error('listing did not end within 100 pages');
}

async function nodes(): Promise<Map<string, NodeJson>> {
  const leader = await cluster.leader();
  const { body } = await json<{ nodes: NodeJson[] }>(`${leader.url}/v1/cluster/nodes`);
  return new Map(body.nodes.map((n) => [n.id, n]));
}

async function upload(id: string): Promise<void> {
  const bytes = pngImage(3_000);
  await cluster.putImage(id, bytes);
  stored.set(id, bytes);
}

/**
 * Every stored object at exactly two replicas, on workers the table has `up`, none on `avoid`,
 * and each of those workers holding the right bytes.
 */
async function waitHealthy(avoid: string[], timeoutMs = 20_000): Promise<ImageJson[]> {
  return until(
    `every object on 2 up workers holding its bytes, none on ${avoid.join(', ') || '-'}`,
    async () => {
      const states = await nodes();
      const all = await listAll(await cluster.leader());
      const ok =
        all.length === stored.size &&
        all.every(
          (o) =>
            o.replicas.length === 2 &&
            o.replicas.every((r) => states.get(r)?.tableState === 'up' && !avoid.includes(r)),
        );
      if (!ok) return null;
      for (const o of all) {
        for (const r of o.replicas) {
          const copy = await cluster.workerBlob(cluster.worker(r), o.id);
          if (copy.status !== 200 || sha256(copy.bytes) !== sha256(stored.get(o.id)!)) return null;
        }
      }
      return all;
    },
    timeoutMs,
  );
}

/** Every copy on every running worker is one the table lists there, and the reverse. */
async function waitNoStrayCopies(timeoutMs = 15_000): Promise<void> {
  await until(
    'workers holding exactly what the table lists',
    async () => {
      const all = await listAll(await cluster.leader());
      for (const w of cluster.workers.filter((x) => x.child !== null)) {
        for (const o of all) {
          const held = (await cluster.workerBlob(w, o.id)).status === 200;
          if (held !== o.replicas.includes(w.id)) return null;
        }
      }
      return true;
    },
    timeoutMs,
  );
}

/** Starts a stopped worker and waits until the leader has heard the new process. */
async function restartWorker(w: WorkerProc): Promise<void> {
  cluster.spawnWorker(w);
  await until(
    `${w.id} listening`,
    async () => (await fetch(`${w.url}/healthz`, { signal: AbortSignal.timeout(1_000) })).ok,
    20_000,
  );
  await until(
    `${w.id} heard by the leader`,
    async () => {
      const n = (await nodes()).get(w.id);
      return n?.tableState === 'up' && n.state === 'up' && n.silenceMs !== null && n.silenceMs < 300;
    },
    20_000,
  );
}

/** Every running manager at the same applied index holds the same tables. */
async function expectTablesIdentical(): Promise<void> {
  const digests = await until(
    'every manager at the same applied index',
    async () => {
      const all = await Promise.all(
        cluster
          .running()
          .map(
            async (m) =>
              (await json<{ appliedIndex: number; sha256: string }>(`${m.url}/v1/cluster/digest`)).body,
          ),
      );
      return all.every((d) => d.appliedIndex === all[0]!.appliedIndex) ? all : null;
    },
    15_000,
  );
  expect(new Set(digests.map((d) => d.sha256)).size).toBe(1);
}

async function holding(w: WorkerProc): Promise<string[]> {
  const all = await listAll(await cluster.leader());
  return all.filter((o) => o.replicas.includes(w.id)).map((o) => o.id);
}

async function putOrphan(w: WorkerProc, id: string): Promise<void> {
  const bytes = pngImage(500);
  const res = await fetch(`${w.url}/blobs/${id}`, {
    method: 'PUT',
    body: bytes,
    headers: { [CLUSTER_SECRET_HEADER]: cluster.secret, 'x-imgvault-sha256': sha256(bytes) },
    signal: AbortSignal.timeout(5_000),
  });
  expect(res.status).toBe(201);
}

beforeAll(async () => {
  cluster = await ImageCluster.start({
    name: 'repair-test',
    managers: 3,
    workers: 4,
    managerArgs: [
      '--suspect-after-ms',
      '600',
      '--down-after-ms',
      String(DOWN_AFTER_MS),
      '--orphan-grace-ms',
      String(ORPHAN_GRACE_MS),
      '--heartbeat-interval-ms',
      '200',
      '--usage-summary-ms',
      '500',
    ],
    // Scrub passes back to back, so a rotten copy is found within a second.
    workerArgs: ['--register-backoff-ms', '200', '--scrub-pause-ms', '200'],
    // Seven processes starting at once on a loaded machine: generous, bounded.
    startTimeoutMs: 90_000,
  });
  for (let i = 0; i < 16; i++) await upload(`img-${i}`);
}, 180_000);

afterAll(async () => {
  await cluster?.close();
});

describe('worker loss, repair and rejoin', () => {
  it('repairs every object of a worker killed with -9 onto the others; every manager agrees', async () => {
    const victim = cluster.worker('w1');
    await putOrphan(victim, 'orphan-1');
    const held = await holding(victim);
    expect(held.length).toBeGreaterThan(0);
    await cluster.killWorker(victim);
    await waitHealthy(['w1'], DOWN_AFTER_MS + 20_000);
    expect((await nodes()).get('w1')?.tableState).toBe('down');
    const leader = await cluster.leader();
    expect(await metric(leader, 'imgvault_repairs_succeeded_total')).toBeGreaterThanOrEqual(held.length);
    expect(await metric(leader, 'imgvault_repair_bytes_copied_total')).toBeGreaterThanOrEqual(
      held.length * 3_000,
    );
    await until(
      'no object reported under-replicated',
      async () => (await metric(leader, 'imgvault_objects_under_replicated')) === 0,
      5_000,
    );
    await expectTablesIdentical();
  }, 60_000);

  it('takes the returning worker back: exactly two copies of each object, its orphan deleted after the grace', async () => {
    const w1 = cluster.worker('w1');
    await restartWorker(w1);
    // Reconciliation re-adopts w1's copies and removes the copies that replaced them.
    await until('w1 holding its copies again', async () => (await holding(w1)).length > 0, 15_000);
    await waitHealthy([]);
    await until(
      'orphan deleted',
      async () => (await cluster.workerBlob(w1, 'orphan-1')).status === 404,
      ORPHAN_GRACE_MS + 10_000,
    );
    await waitNoStrayCopies();
    await expectTablesIdentical();
  }, 60_000);

  it('copies nothing for a worker that comes back before its down timeout', async () => {
    const leader = await cluster.leader();
    const before = await metric(leader, 'imgvault_repairs_started_total');
    const downBefore = await metric(leader, 'imgvault_nodes_marked_down_total');
    const w2 = cluster.worker('w2');
    const held = await holding(w2);
    const killedAt = Date.now();
    await cluster.killWorker(w2);
    await restartWorker(w2);
    // The premise: the worker was back before the down timeout (process start included).
    expect(Date.now() - killedAt).toBeLessThan(DOWN_AFTER_MS);
    // Past the down timeout counted from the kill: still no verdict, since the worker came back.
    await new Promise((r) => setTimeout(r, DOWN_AFTER_MS));
    expect((await nodes()).get('w2')?.tableState).toBe('up');
    expect(await holding(w2)).toEqual(held);
    expect(await metric(leader, 'imgvault_repairs_started_total')).toBe(before);
    expect(await metric(leader, 'imgvault_nodes_marked_down_total')).toBe(downBefore);
  }, 30_000);

  it('a new leader completes the repair the killed leader had started', async () => {
    const w3 = cluster.worker('w3');
    const oldLeader = await cluster.leader();
    const startedBefore = await metric(oldLeader, 'imgvault_repairs_started_total');
    await cluster.killWorker(w3);
    // Killed as soon as it reports a repair started: whatever it had not committed is lost with it.
    await until(
      'a repair started on the leader',
      async () => (await metric(oldLeader, 'imgvault_repairs_started_total')) > startedBefore,
      DOWN_AFTER_MS + 10_000,
    );
    await cluster.killManager(oldLeader);
    const newLeader = await cluster.leader(15_000);
    expect(newLeader.id).not.toBe(oldLeader.id);
    await waitHealthy(['w3'], 30_000);
    cluster.spawnManager(oldLeader);
    await restartWorker(w3);
    await waitHealthy([]);
    await waitNoStrayCopies();
    await expectTablesIdentical();
  }, 90_000);

  it('answers 503 for an object whose two workers are down, and serves it again when one returns', async () => {
    const all = await listAll(await cluster.leader());
    const target = all[0]!;
    const [a, b] = target.replicas.map((id) => cluster.worker(id));
    await cluster.killWorker(a!);
    await cluster.killWorker(b!);
    const leader = await cluster.leader();
    const res = await until(
      '503 while both copies are down',
      async () => {
        const r = await fetch(`${leader.url}/v1/images/${target.id}`, { signal: AbortSignal.timeout(5_000) });
        await r.arrayBuffer();
        return r.status === 503 ? r : null;
      },
      10_000,
    );
    expect(res.status).toBe(503);
    await restartWorker(a!);
    const back = await until(
      'readable again',
      async () => {
        const r = await fetch(`${(await cluster.leader()).url}/v1/images/${target.id}`, {
          signal: AbortSignal.timeout(5_000),
        });
        const bytes = Buffer.from(await r.arrayBuffer());
        return r.status === 200 ? bytes : null;
      },
      10_000,
    );
    expect(sha256(back)).toBe(sha256(stored.get(target.id)!));
    await restartWorker(b!);
    await waitHealthy([], 30_000);
    await waitNoStrayCopies();
  }, 90_000);

  it('--rejoin wipe joins empty but keeps a copy whose other worker is down; repair restores the rest', async () => {
    const w4 = cluster.worker('w4');
    const held = await holding(w4);
    // One object on w4 whose other copy's worker goes down first: w4's copy is then the only one
    // that can be read, and the wipe must keep it.
    const last = (await listAll(await cluster.leader())).find((o) => o.replicas.includes('w4'))!;
    const other = cluster.worker(last.replicas.find((r) => r !== 'w4')!);
    await cluster.killWorker(other);
    await until(
      `${other.id} no longer serving`,
      async () => ((await nodes()).get(other.id)?.state !== 'up' ? true : null),
      10_000,
    );
    await cluster.killWorker(w4);
    w4.args = [...w4.args, '--rejoin', 'wipe'];
    try {
      await restartWorker(w4);
    } finally {
      w4.args = w4.args.slice(0, -2);
    }
    expect((await cluster.workerBlob(w4, last.id)).status).toBe(200);
    const read = await fetch(`${(await cluster.leader()).url}/v1/images/${last.id}`, {
      signal: AbortSignal.timeout(5_000),
    });
    expect(read.status).toBe(200);
    expect(sha256(Buffer.from(await read.arrayBuffer()))).toBe(sha256(stored.get(last.id)!));

    await restartWorker(other);
    await waitHealthy([], 30_000);
    await waitNoStrayCopies();
    // Whatever else w4 holds now came from repair, not from before the wipe.
    const now = await holding(w4);
    for (const id of held) {
      if (id !== last.id && !now.includes(id)) expect((await cluster.workerBlob(w4, id)).status).toBe(404);
    }
  }, 90_000);

  it('drains a worker from the CLI: every object moves off it, then it is drained', async () => {
    const w2 = cluster.worker('w2');
    expect((await holding(w2)).length).toBeGreaterThan(0);
    const out = await runCli([
      'worker',
      'drain',
      'w2',
      '--managers',
      cluster.managers.map((m) => m.url).join(','),
      '--secret-file',
      cluster.secretFile,
      '--wait-ms',
      '0',
    ]);
    expect(out.code).toBe(0);
    expect(out.stdout).toMatch(/^w2 is draining; \d+ objects to move/);
    await until('w2 drained', async () => (await nodes()).get('w2')?.tableState === 'drained', 20_000);
    expect((await nodes()).get('w2')?.stored.objects).toBe(0);
    expect(await holding(w2)).toEqual([]);
    for (const id of stored.keys()) expect((await cluster.workerBlob(w2, id)).status).toBe(404);
    const all = await listAll(await cluster.leader());
    expect(all.every((o) => o.replicas.length === 2 && !o.replicas.includes('w2'))).toBe(true);
    await expectTablesIdentical();
  }, 60_000);

  it('finds a copy rotten on disk with the scrubber, drops it and makes a good one', async () => {
    const object = (await listAll(await cluster.leader()))[0]!;
    const holder = cluster.worker(object.replicas[0]!);
    await flipByte(join(holder.dataDir, blobRelativePath(object.id)), 100);
    const secret = (await readFile(cluster.secretFile, 'utf8')).trim();
    await until(
      `${holder.id}'s scrubber reporting the rotten copy`,
      async () => {
        const res = await fetch(`${holder.url}/metrics`, {
          headers: { [CLUSTER_SECRET_HEADER]: secret },
          signal: AbortSignal.timeout(5_000),
        });
        const line = (await res.text())
          .split('\n')
          .find((l) => l.startsWith('imgvault_worker_scrub_lost_total '));
        return line && Number(line.split(' ')[1]) >= 1 ? true : null;
      },
      15_000,
    );
    // Every replica readable with the right bytes again, on up workers, none on the drained w2.
    await waitHealthy(['w2'], 30_000);
    await waitNoStrayCopies();
    await expectTablesIdentical();
  }, 60_000);
});
