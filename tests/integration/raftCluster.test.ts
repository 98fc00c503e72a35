// Three real manager processes on 127.0.0.1: election, replication, leader kill -9 with no lost
// acknowledged write, and a follower that missed a log compaction catching up by InstallSnapshot.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fetchRaftView,
  killChild,
  managerUrl,
  peersSpec,
  type RaftView,
  spawnManager,
  stopChild,
  waitForLeader,
} from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { until } from '../helpers/until.ts';

const SNAPSHOT_THRESHOLD = 20;

interface Proc {
  id: string;
  port: number;
  url: string;
  child: ChildProcess | null;
}

let root: string;
let secretFile: string;
let peers: string;
const procs: Proc[] = [];

function start(p: Proc): void {
  p.child = spawnManager({
    id: p.id,
    port: p.port,
    dataDir: join(root, p.id),
    peers,
    secretFile,
    args: ['--mode', 'kv', '--snapshot-threshold', String(SNAPSHOT_THRESHOLD)],
    logFile: join(root, `${p.id}.log`),
    // The children inherit VITEST, which silences logs; the InstallSnapshot check reads them.
    env: { IMGVAULT_LOG_LEVEL: 'info' },
  });
}

/** PUT through any manager; fetch follows the 307 a follower answers with to the leader. */
async function put(url: string, key: string, value: string): Promise<Response> {
  return fetch(`${url}/v1/kv/${key}`, {
    method: 'PUT',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ value }),
    signal: AbortSignal.timeout(5_000),
  });
}

async function get(url: string, key: string): Promise<{ status: number; value?: string }> {
  const res = await fetch(`${url}/v1/kv/${key}`, { signal: AbortSignal.timeout(5_000) });
  const body = (await res.json()) as { value?: string };
  return { status: res.status, ...(body.value !== undefined ? { value: body.value } : {}) };
}

async function view(p: Proc): Promise<RaftView> {
  const v = await fetchRaftView(p.url, 2_000);
  if (v === null) throw new Error(`${p.id} does not answer`);
  return v;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'raftcluster-'));
  secretFile = join(root, 'cluster-secret');
  await writeFile(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  for (const id of ['m1', 'm2', 'm3']) {
    const port = await freePort();
    procs.push({ id, port, url: managerUrl(port), child: null });
  }
  peers = peersSpec(procs);
  for (const p of procs) start(p);
});

afterAll(async () => {
  await Promise.all(procs.map((p) => (p.child ? killChild(p.child) : undefined)));
  await rm(root, { recursive: true, force: true });
});

describe('a three-manager Raft cluster of real processes', () => {
  const acknowledged = new Map<string, string>();

  it('elects a leader and commits proposals sent to any manager', async () => {
    // Generous: three processes load TypeScript through tsx at once on a busy 2-core machine.
    const leader = await waitForLeader(
      procs.map((p) => p.url),
      30_000,
    );
    expect(procs.map((p) => p.id)).toContain(leader.id);
    // Two managers elect a leader without the third, which may still be starting: writes below go
    // to all three.
    for (const p of procs) await until(`${p.id} answering`, () => fetchRaftView(p.url, 2_000), 30_000);
    for (let i = 0; i < 10; i++) {
      const key = `before-kill-${i}`;
      const value = `v${i}-${randomBytes(4).toString('hex')}`;
      const res = await put(procs[i % 3]!.url, key, value);
      expect(res.status).toBe(200);
      acknowledged.set(key, value);
    }
    for (const p of procs)
      expect(await get(p.url, 'before-kill-9')).toEqual({
        status: 200,
        value: acknowledged.get('before-kill-9'),
      });

    const follower = procs.find((p) => p.id !== leader.id)!;
    const redirected = await fetch(`${follower.url}/v1/kv/redirected?x=1`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ value: 'r' }),
      redirect: 'manual',
      signal: AbortSignal.timeout(5_000),
    });
    expect(redirected.status).toBe(307);
    expect(redirected.headers.get('location')).toBe(`${leader.url}/v1/kv/redirected?x=1`);

    const unauthenticated = await fetch(`${leader.url}/v1/cluster/transfer-leader`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ to: follower.id }),
      signal: AbortSignal.timeout(5_000),
    });
    expect(unauthenticated.status).toBe(401);
    expect(((await unauthenticated.json()) as { error: { code: string } }).error.code).toBe('Unauthorized');
  });

  it('survives kill -9 of the leader: a new leader holds every acknowledged write', async () => {
    const old = await waitForLeader(
      procs.map((p) => p.url),
      10_000,
    );
    const victim = procs.find((p) => p.id === old.id)!;
    await killChild(victim.child!);
    victim.child = null;
    const survivors = procs.filter((p) => p !== victim);
    const fresh = await waitForLeader(
      survivors.map((p) => p.url),
      10_000,
    );
    expect(fresh.id).not.toBe(victim.id);
    for (const [key, value] of acknowledged)
      expect(await get(fresh.url, key)).toEqual({ status: 200, value });
    const res = await put(fresh.url, 'after-kill', 'new-term');
    expect(res.status).toBe(200);
    acknowledged.set('after-kill', 'new-term');

    start(victim);
    await until(
      'the old leader rejoins and applies the new write',
      async () => {
        const v = await fetchRaftView(victim.url, 500);
        return (
          v &&
          v.leader?.id === fresh.id &&
          v.applied >= (await view(procs.find((p) => p.id === fresh.id)!)).commit
        );
      },
      20_000,
    );
    expect(await get(victim.url, 'after-kill')).toEqual({ status: 200, value: 'new-term' });
  });

  it('brings a follower that missed a log compaction up to date with InstallSnapshot', async () => {
    const leaderInfo = await waitForLeader(
      procs.map((p) => p.url),
      10_000,
    );
    const leader = procs.find((p) => p.id === leaderInfo.id)!;
    const lagging = procs.find((p) => p !== leader)!;
    const laggingLastIndex = (await view(lagging)).lastIndex;
    await stopChild(lagging.child!);
    lagging.child = null;

    for (let i = 0; i < SNAPSHOT_THRESHOLD * 3; i++) {
      const res = await put(leader.url, `while-down-${i}`, `w${i}`);
      expect(res.status).toBe(200);
      acknowledged.set(`while-down-${i}`, `w${i}`);
    }
    const leaderView = await view(leader);
    // The entries the lagging follower needs are gone from the leader's log: only a snapshot helps.
    expect(leaderView.firstIndex).toBeGreaterThan(laggingLastIndex + 1);

    start(lagging);
    const caughtUp = await until(
      'the lagging follower catches up',
      async () => {
        const v = await fetchRaftView(lagging.url, 500);
        return v && v.applied >= leaderView.commit ? v : null;
      },
      20_000,
    );
    expect(caughtUp.snapshotIndex).toBeGreaterThanOrEqual(leaderView.snapshotIndex);
    const log = await readFile(join(root, `${lagging.id}.log`), 'utf8');
    expect(log).toContain('"event":"raft.snapshot_installed"');
    for (const [key, value] of acknowledged)
      expect(await get(lagging.url, key)).toEqual({ status: 200, value });
  });
  it('refuses to restart a founding manager whose data folder was lost, naming the way back', async () => {
    const leaderInfo = await waitForLeader(
      procs.map((p) => p.url),
      10_000,
    );
    const lost = procs.find((p) => p.id !== leaderInfo.id && p.child !== null)!;
    await until(
      'the leader has seen the follower acknowledge entries',
      async () => ((await view(procs.find((p) => p.id === leaderInfo.id)!)).peers?.[lost.id]?.match ?? 0) > 1,
      10_000,
    );
    await stopChild(lost.child!);
    lost.child = null;
    await rm(join(root, lost.id), { recursive: true, force: true });

    start(lost);
    const child = lost.child!;
    const code = await Promise.race([
      new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c))),
      new Promise<'still running'>((resolve) => setTimeout(() => resolve('still running'), 10_000)),
    ]);
    if (code === 'still running') await killChild(child);
    lost.child = null;
    expect(code).toBe(1);
    const log = await readFile(join(root, `${lost.id}.log`), 'utf8');
    expect(log).toContain('"event":"manager.start_failed"');
    expect(log).toContain(`DELETE /v1/cluster/members/${lost.id}`);
    // The other two go on committing.
    const res = await put(procs.find((p) => p.id === leaderInfo.id)!.url, 'after-refusal', 'ok');
    expect(res.status).toBe(200);
  });
});
