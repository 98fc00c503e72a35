import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { BlobStore } from '../../src/storagenode/blobStore.ts';
import {
  ManagerClient,
  type ManagerClientOptions,
  NoManagerAnsweredError,
} from '../../src/storagenode/managerClient.ts';
import { usageOf } from '../../src/storagenode/workerProcess.ts';
import { until } from '../helpers/until.ts';
import { type ManagerStandIn, startManagerStandIn } from './managerStandIn.ts';
import { exitOf, spawnWorkerProcess } from './workerHarness.ts';

const SECRET = 'test-cluster-secret';

/** A port nothing listens on: a stand-in that was started and closed again. */
async function deadManagerUrl(): Promise<string> {
  const m = await startManagerStandIn(SECRET);
  await m.close();
  return m.url;
}

/** Runs the worker's entry point with `args` until it exits (20 s at most); its status and stderr. */
async function runWorkerMain(args: string[]): Promise<{ status: number | null; stderr: string }> {
  const child = spawnWorkerProcess(['--listen', '127.0.0.1:0', ...args], { IMGVAULT_CLUSTER_SECRET: SECRET });
  const status = await exitOf(child, 20_000).catch((err: unknown) => {
    child.kill('SIGKILL');
    throw err;
  });
  return { status, stderr: child.stderrText() };
}

let dir: string;
let store: BlobStore;
const cleanups: (() => Promise<unknown>)[] = [];

beforeEach(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'imgvault-mc-'));
  store = await BlobStore.open(dir);
});

afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

async function putBlobs(n: number): Promise<Map<string, { size: number; sha256: string }>> {
  const written = new Map<string, { size: number; sha256: string }>();
  for (let i = 0; i < n; i++) {
    const bytes = randomBytes(100 + i * 7);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const id = `img-${i.toString().padStart(4, '0')}`;
    const r = await store.writeAtomically(id, Readable.from([bytes]), sha256, 1 << 20);
    expect(r.ok).toBe(true);
    written.set(id, { size: bytes.length, sha256 });
  }
  return written;
}

function client(managers: string[], overrides: Partial<ManagerClientOptions> = {}): ManagerClient {
  const c = new ManagerClient({
    workerId: 'w1',
    url: 'http://127.0.0.1:7101',
    zone: 'z1',
    managers,
    clusterSecret: SECRET,
    registerAttempts: 3,
    registerBackoffMs: 20,
    heartbeatIntervalMs: 100,
    requestTimeoutMs: 2000,
    inventory: () => store.inventory(),
    usage: () => usageOf(store),
    logger: createLogger('test-manager-client'),
    ...overrides,
  });
  cleanups.push(() => c.stop());
  return c;
}

async function standIn(options: Parameters<typeof startManagerStandIn>[1] = {}): Promise<ManagerStandIn> {
  const m = await startManagerStandIn(SECRET, options);
  cleanups.push(() => m.close());
  return m;
}

describe('registration', () => {
  it('streams the whole inventory to the leader, following a follower redirect', async () => {
    const written = await putBlobs(60);
    const leader = await standIn();
    const follower = await standIn({ role: { kind: 'follower', leaderUrl: leader.url } });
    const c = client([follower.url]);

    const answer = await c.register();

    expect(answer.leaderId).toBe('m-standin');
    expect(follower.deflected).toEqual(['/internal/v1/workers/register']);
    expect(c.leaderUrl).toBe(leader.url);
    expect(leader.registrations).toHaveLength(1);
    const { header, blobs } = leader.registrations[0]!;
    expect(header).toMatchObject({ id: 'w1', url: 'http://127.0.0.1:7101', zone: 'z1', blobCount: 60 });
    expect(header.blobBytes).toBe([...written.values()].reduce((a, b) => a + b.size, 0));
    expect(typeof header.diskFree).toBe('number');
    expect(new Map(blobs.map((b) => [b.id, { size: b.size, sha256: b.sha256 }]))).toEqual(written);
  });

  it('streams an index far larger than one body chunk, in id order, through a redirect', async () => {
    // Index entries only (no files): what is under test is the streaming, not the blob bytes.
    const entries = Array.from({ length: 20_000 }, (_, i) => ({
      id: `bulk-${i.toString().padStart(6, '0')}`,
      size: i,
      sha256: createHash('sha256').update(String(i)).digest('hex'),
    }));
    await store.index.record(entries);
    const leader = await standIn();
    const follower = await standIn({ role: { kind: 'follower', leaderUrl: leader.url } });

    await client([follower.url]).register();

    expect(leader.registrations[0]!.blobs).toEqual(entries);
  });

  it('retries while no leader is elected, then registers', async () => {
    const m = await standIn({ role: { kind: 'noLeader' } });
    const c = client([m.url], { registerAttempts: 5 });
    const registering = c.register();
    await until('m.deflected.length >= 2', () => m.deflected.length >= 2, 5000);
    m.role = { kind: 'leader' };
    await registering;
    expect(m.registrations).toHaveLength(1);
  });

  it('gives up after the configured attempts with an error naming every manager', async () => {
    const dead = await deadManagerUrl();
    const noLeader = await standIn({ role: { kind: 'noLeader' } });
    const c = client([dead, noLeader.url], { registerAttempts: 3 });

    const err = await c.register().catch((e: unknown) => e);

    expect(err).toBeInstanceOf(NoManagerAnsweredError);
    expect((err as Error).message).toContain('after 3 attempt(s)');
    expect((err as Error).message).toContain(dead);
    expect((err as Error).message).toContain(`${noLeader.url} (HTTP 503`);
    expect(noLeader.deflected).toHaveLength(3);
  });

  it('refuses a manager that rejects the cluster secret', async () => {
    const m = await standIn();
    const c = client([m.url], { clusterSecret: 'wrong-secret', registerAttempts: 1 });
    await expect(c.register()).rejects.toThrow(/HTTP 401 Unauthorized: cluster secret refused/);
    expect(m.registrations).toHaveLength(0);
  });
});

describe('heartbeats', () => {
  it('arrive about every interval, carry usage, and never overlap', async () => {
    await putBlobs(3);
    // Each answer takes longer than the interval: overlapping beats would show as concurrency > 1.
    const m = await standIn({ heartbeatDelayMs: 150 });
    const c = client([m.url], { heartbeatIntervalMs: 100 });
    await c.register();
    const t0 = performance.now();
    c.startHeartbeats();
    await new Promise((r) => setTimeout(r, 1500));
    await c.stop();
    const stoppedAt = m.heartbeats.length;

    expect(m.maxConcurrentHeartbeats).toBe(1);
    // 150 ms per beat from t0+100: about 9 in 1.5 s; generous bounds for a loaded 2-core machine.
    expect(m.heartbeats.length).toBeGreaterThanOrEqual(4);
    expect(m.heartbeats.length).toBeLessThanOrEqual(11);
    expect(m.heartbeats[0]!.at - t0).toBeGreaterThanOrEqual(90);
    expect(m.heartbeats[0]!.body).toMatchObject({ id: 'w1', blobCount: 3 });
    await new Promise((r) => setTimeout(r, 300));
    expect(m.heartbeats.length).toBe(stoppedAt);
  });

  it('go to every manager, so a follower that becomes leader has heard the worker all along', async () => {
    const a = await standIn();
    const b = await standIn({ role: { kind: 'follower', leaderUrl: a.url }, knownWorkers: ['w1'] });
    const c = client([a.url, b.url], { heartbeatIntervalMs: 100 });
    await c.register();
    c.startHeartbeats();
    await until(
      'a.heartbeats.length >= 2 && b.heartbeats.length >= 2',
      () => a.heartbeats.length >= 2 && b.heartbeats.length >= 2,
      3000,
    );
    expect(c.leaderUrl).toBe(a.url);

    await a.close();
    b.role = { kind: 'leader' };

    await until('c.leaderUrl === b.url', () => c.leaderUrl === b.url, 3000);
    expect(b.registrations).toHaveLength(0);
    expect(b.deflected).toEqual([]);
  });

  it('also reach a leader missing from --managers, which the followers name (a manager added later)', async () => {
    const added = await standIn({ knownWorkers: ['w1'] });
    const f1 = await standIn({ role: { kind: 'follower', leaderUrl: added.url }, knownWorkers: ['w1'] });
    const f2 = await standIn({ role: { kind: 'follower', leaderUrl: added.url }, knownWorkers: ['w1'] });
    const c = client([f1.url, f2.url], { heartbeatIntervalMs: 100 });
    await c.register();
    c.startHeartbeats();
    await until('added.heartbeats.length >= 3', () => added.heartbeats.length >= 3, 3000);
    expect(f1.heartbeats.length).toBeGreaterThan(0);
  });

  it('also reach every member the managers name, before it leads (a manager added later)', async () => {
    const leader = await standIn({ knownWorkers: ['w1'] });
    const added = await standIn({ role: { kind: 'follower', leaderUrl: leader.url }, knownWorkers: ['w1'] });
    leader.managers = [leader.url, added.url];
    const c = client([leader.url], { heartbeatIntervalMs: 100 });
    await c.register();
    c.startHeartbeats();
    await until('added.heartbeats.length >= 3', () => added.heartbeats.length >= 3, 3000);
    expect(c.leaderUrl).toBe(leader.url);
  });

  it('never wait on a slow manager: each manager has its own beat and timeout', async () => {
    const leader = await standIn({ knownWorkers: ['w1'] });
    const follower = await standIn({ role: { kind: 'follower', leaderUrl: leader.url } });
    // Answers each beat after 10 s: a manager that accepts connections but is stuck.
    const stuck = await standIn({
      role: { kind: 'follower', leaderUrl: leader.url },
      heartbeatDelayMs: 10_000,
    });
    const c = client([stuck.url, leader.url, follower.url], { heartbeatIntervalMs: 100 });
    await c.register();
    c.startHeartbeats();

    // A beat every ~100 ms: the stuck manager (tried first in the configured list) must not slow them.
    await until(
      'leader.heartbeats.length >= 6 && follower.heartbeats.length >= 6',
      () => leader.heartbeats.length >= 6 && follower.heartbeats.length >= 6,
      2500,
    );
    expect(stuck.maxConcurrentHeartbeats).toBe(1);
  });

  it('learn the leader from the manager that says it leads', async () => {
    const a = await standIn();
    const b = await standIn({ role: { kind: 'follower', leaderUrl: a.url }, knownWorkers: ['w1'] });
    const c = client([a.url, b.url], { heartbeatIntervalMs: 100 });
    await c.register();
    c.startHeartbeats();
    await until('a.heartbeats.length >= 1', () => a.heartbeats.length >= 1, 3000);

    a.role = { kind: 'follower', leaderUrl: b.url };
    b.role = { kind: 'leader' };

    await until('c.leaderUrl === b.url', () => c.leaderUrl === b.url, 3000);
    const beats = a.heartbeats.length;
    await until('a.heartbeats.length > beats', () => a.heartbeats.length > beats, 3000);
  });

  it('register again with the inventory when the leader answers UnknownWorker', async () => {
    await putBlobs(5);
    const m = await standIn();
    const c = client([m.url], { heartbeatIntervalMs: 100 });
    await c.register();
    c.startHeartbeats();
    await until('m.heartbeats.length >= 1', () => m.heartbeats.length >= 1, 3000);

    m.forget('w1');

    await until('m.registrations.length === 2', () => m.registrations.length === 2, 3000);
    expect(m.registrations[1]!.blobs).toHaveLength(5);
    const beatsAfter = m.heartbeats.length;
    await until('m.heartbeats.length > beatsAfter', () => m.heartbeats.length > beatsAfter, 3000);
  });
});

describe('reported usage', () => {
  it('is the quota for a worker with one: a worker near its quota looks near full', async () => {
    const quotaDir = path.join(dir, 'quota-worker');
    const limited = await BlobStore.open(quotaDir, { quotaBytes: 10_000 });
    try {
      const bytes = randomBytes(7_500);
      const sha = createHash('sha256').update(bytes).digest('hex');
      expect((await limited.writeAtomically('big', Readable.from([bytes]), sha, 1 << 20)).ok).toBe(true);
      expect(await usageOf(limited)).toEqual({
        diskUsed: 7_500,
        diskFree: 2_500,
        blobCount: 1,
        blobBytes: 7_500,
      });
    } finally {
      await limited.close();
    }
    // Without a quota the filesystem's own figures are reported.
    const fs = await store.stats();
    const usage = await usageOf(store);
    expect(usage.diskUsed + usage.diskFree).toBeGreaterThan(0);
    expect(Math.abs(usage.diskFree - fs.diskFreeBytes)).toBeLessThan(64 * 1024 * 1024);
  });
});

describe('worker process', () => {
  it('exits non-zero with a clear message when no manager answers', async () => {
    const dead = await deadManagerUrl();
    const noLeader = await standIn({ role: { kind: 'noLeader' } });
    const { status, stderr } = await runWorkerMain([
      '--id',
      'w-lonely',
      '--data',
      path.join(dir, 'worker'),
      '--managers',
      `${dead},${noLeader.url}`,
      '--register-attempts',
      '3',
      '--register-backoff-ms',
      '50',
    ]);

    expect(status).toBe(1);
    expect(stderr).toContain(
      'imgvault worker w-lonely: no manager answered the registration after 3 attempt(s)',
    );
    expect(stderr).toContain(dead);
    expect(stderr).toContain(noLeader.url);
    expect(noLeader.deflected).toHaveLength(3);
  });
});

describe('--rejoin wipe', () => {
  it('deletes nothing and exits non-zero when no leader can say which copies must stay', async () => {
    const wipeDir = path.join(dir, 'wipe-worker');
    const held = await BlobStore.open(wipeDir);
    const bytes = randomBytes(500);
    const sha = createHash('sha256').update(bytes).digest('hex');
    for (const id of ['keep-a', 'keep-b']) {
      expect((await held.writeAtomically(id, Readable.from([bytes]), sha, 1 << 20)).ok).toBe(true);
    }
    await held.close();
    const noLeader = await standIn({ role: { kind: 'noLeader' } });
    const { status, stderr } = await runWorkerMain([
      '--id',
      'w-wipe',
      '--data',
      wipeDir,
      '--managers',
      noLeader.url,
      '--rejoin',
      'wipe',
      '--register-attempts',
      '2',
      '--register-backoff-ms',
      '50',
    ]);

    expect(status).toBe(1);
    expect(stderr).toContain('imgvault worker w-wipe: no manager answered the wipe check after 2 attempt(s)');
    expect(noLeader.deflected).toContain('/internal/v1/workers/wipe-check');
    const after = await BlobStore.open(wipeDir);
    try {
      expect((await after.stat('keep-a')).ok).toBe(true);
      expect((await after.stat('keep-b')).ok).toBe(true);
    } finally {
      await after.close();
    }
  });
});
