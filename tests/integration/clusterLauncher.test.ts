// `imgvault cluster` as an operator meets it, run as a real child process with its own process
// group (as a terminal runs it): pid files, a second cluster on taken ports, restarts of killed
// children, one Ctrl-C for a clean stop, and a start with a drained worker.

import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ClassicLevel } from 'classic-level';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { fetchRaftView, waitForLeader } from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
const IDS = ['m1', 'm2', 'm3', 'w1', 'w2', 'w3'];
const START_MS = 90_000;
const STOP_BOUND_MS = 15_000;

interface Launcher {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
}

function launch(dataDir: string, basePort: number, workerBasePort: number): Launcher {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      MAIN,
      'cluster',
      '--data',
      dataDir,
      '--base-port',
      String(basePort),
      '--worker-base-port',
      String(workerBasePort),
      '--leader-timeout',
      '60000',
    ],
    // Its own process group, so the test can signal the group as a terminal's Ctrl-C does.
    {
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, IMGVAULT_LOG_LEVEL: 'info' },
    },
  );
  let out = '';
  child.stdout?.on('data', (b: Buffer) => (out += b.toString()));
  child.stderr?.on('data', (b: Buffer) => (out += b.toString()));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, output: () => out, exited };
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

/** A first port whose next n-1 are free too. */
async function freeRun(n: number): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const base = await freePort();
    let ok = base + n < 65_535;
    for (let i = 1; ok && i < n; i++) ok = await portFree(base + i);
    if (ok) return base;
  }
  throw new Error('no run of free ports');
}

async function readPid(dataDir: string, id: string): Promise<number | null> {
  try {
    return Number.parseInt(await readFile(join(dataDir, `${id}.pid`), 'utf8'), 10);
  } catch {
    return null;
  }
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function logsOf(dataDir: string): Promise<string> {
  const texts = await Promise.all(
    IDS.map((id) => readFile(join(dataDir, `${id}.log`), 'utf8').catch(() => '')),
  );
  return texts.join('\n');
}

/** One SIGINT to the launcher's process group, as a terminal's Ctrl-C; the time until it exited. */
async function ctrlC(l: Launcher): Promise<{ ms: number; code: number | null }> {
  const began = Date.now();
  process.kill(-l.child.pid!, 'SIGINT');
  const code = await Promise.race([
    l.exited,
    new Promise<'timeout'>((r) => setTimeout(() => r('timeout'), STOP_BOUND_MS)),
  ]);
  if (code === 'timeout') throw new Error(`launcher still running ${STOP_BOUND_MS} ms after one SIGINT`);
  return { ms: Date.now() - began, code };
}

let root: string;
let dataDir: string;
let basePort: number;
let workerBasePort: number;
const launchers: Launcher[] = [];

function start(dir = dataDir): Launcher {
  const l = launch(dir, basePort, workerBasePort);
  launchers.push(l);
  return l;
}

async function pidsOf(dir: string): Promise<number[]> {
  return (await Promise.all(IDS.map((id) => readPid(dir, id)))).filter((p): p is number => p !== null);
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-launcher-'));
  dataDir = join(root, 'a');
  basePort = await freeRun(3);
  workerBasePort = await freeRun(3);
});

afterAll(async () => {
  for (const l of launchers) {
    if (l.child.exitCode === null && l.child.signalCode === null) {
      process.kill(-l.child.pid!, 'SIGINT');
      await Promise.race([l.exited, new Promise((r) => setTimeout(r, STOP_BOUND_MS))]);
    }
  }
  // Whatever a failed test left behind: every child named by a pid file.
  for (const dir of [dataDir, join(root, 'b')])
    for (const pid of await pidsOf(dir)) if (alive(pid)) process.kill(pid, 'SIGKILL');
  await rm(root, { recursive: true, force: true });
}, 60_000);

describe('imgvault cluster', () => {
  let first: Launcher;

  it(
    'starts, writes one pid file per child naming that very process',
    async () => {
      first = start();
      await until('cluster ready', () => first.output().includes('imgvault cluster ready'), START_MS);
      for (const id of IDS) {
        const pid = await readPid(dataDir, id);
        expect(pid, id).not.toBeNull();
        const cmdline = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
        expect(cmdline[cmdline.indexOf('--id') + 1], `pid file of ${id}`).toBe(id);
        expect(cmdline).toContain(join(dataDir, id));
      }
    },
    START_MS + 10_000,
  );

  it('a second cluster on the same ports says the port is in use and advises no removal', async () => {
    const other = start(join(root, 'b'));
    const code = await Promise.race([
      other.exited,
      new Promise((r) => setTimeout(() => r('timeout'), 60_000)),
    ]);
    expect(code).toBe(1);
    expect(other.output()).toMatch(/port \d+ \(manager m1\) on 127\.0\.0\.1 is in use/);
    const all = other.output() + (await logsOf(join(root, 'b')));
    expect(all).not.toMatch(/Remove it|DELETE \/v1\/cluster\/members/);
    // The running cluster is untouched.
    await waitForLeader(
      [0, 1, 2].map((i) => `http://127.0.0.1:${basePort + i}`),
      30_000,
    );
  }, 70_000);

  it('a second launcher on the same data folder is refused, leaving the first one its pid file', async () => {
    const other = start();
    const code = await Promise.race([
      other.exited,
      new Promise((r) => setTimeout(() => r('timeout'), 60_000)),
    ]);
    expect(code).toBe(1);
    expect(other.output()).toMatch(/data folder .* is in use by another imgvault cluster \(pid \d+\)/);
    expect(Number.parseInt(await readFile(join(dataDir, 'cluster.pid'), 'utf8'), 10)).toBe(first.child.pid);
  }, 70_000);

  it('restarts a killed worker and a killed manager, with a new pid file each', async () => {
    const oldWorker = (await readPid(dataDir, 'w2'))!;
    const oldManager = (await readPid(dataDir, 'm1'))!;
    process.kill(oldWorker, 'SIGKILL');
    process.kill(oldManager, 'SIGKILL');
    await until(
      'restart reported',
      () => first.output().includes('worker w2 restarted') && first.output().includes('manager m1 restarted'),
      30_000,
    );
    expect(first.output()).toMatch(/worker w2 exited \(SIGKILL\); restarting in 1 s/);
    const newWorker = (await readPid(dataDir, 'w2'))!;
    const newManager = (await readPid(dataDir, 'm1'))!;
    expect(newWorker).not.toBe(oldWorker);
    expect(newManager).not.toBe(oldManager);
    await until(
      'w2 answers again',
      () =>
        fetch(`http://127.0.0.1:${workerBasePort + 1}/healthz`).then(
          (r) => r.ok,
          () => false,
        ),
      30_000,
    );
    await until(
      'm1 back in the cluster',
      async () => (await fetchRaftView(`http://127.0.0.1:${basePort}`))?.leader,
      30_000,
    );
  }, 70_000);

  it(
    'one SIGINT to the process group stops everything cleanly',
    async () => {
      const pids = await pidsOf(dataDir);
      const { ms, code } = await ctrlC(first);
      console.log(`clean stop after one SIGINT: ${ms} ms`);
      expect(code).toBe(0);
      expect(pids.filter(alive)).toEqual([]);
      expect(await pidsOf(dataDir)).toEqual([]);
      const logs = await logsOf(dataDir);
      expect(logs).not.toMatch(/forced_exit|handover_timed_out|handover_failed/);
      expect(logs).toMatch(/manager\.stopped/);
      expect(logs).toMatch(/worker\.stopped/);
    },
    STOP_BOUND_MS + 5_000,
  );

  it(
    'starts with a drained worker, warning about it, and without one removed from the cluster',
    async () => {
      const again = start();
      await until('cluster ready', () => again.output().includes('imgvault cluster ready'), START_MS);
      const secret = (
        await readFile(join(dataDir, 'credentials/operator/operator.credential'), 'utf8')
      ).trim();
      const leader = await waitForLeader(
        [0, 1, 2].map((i) => `http://127.0.0.1:${basePort + i}`),
        30_000,
      );
      const res = await fetch(`${leader.url}/v1/cluster/nodes/w3/drain`, {
        method: 'POST',
        headers: { [CLUSTER_SECRET_HEADER]: secret },
      });
      expect(res.status).toBe(202);
      await until(
        'w3 drained',
        async () => {
          const r = await fetch(`${leader.url}/v1/cluster/nodes/w3/drain`, {
            headers: { [CLUSTER_SECRET_HEADER]: secret },
          });
          return ((await r.json()) as { state?: string }).state === 'drained';
        },
        30_000,
      );
      expect((await ctrlC(again)).code).toBe(0);

      const third = start();
      await until('cluster ready', () => third.output().includes('imgvault cluster ready'), START_MS);
      expect(third.output()).toMatch(/worker w3 is drained/);
      expect(third.output()).toMatch(/2 of 3 workers taking images/);
      expect(third.child.exitCode).toBeNull();

      // Retired for good: the running w3 stops, and the next start neither waits for it (up to
      // --leader-timeout) nor counts it among the workers.
      const leaderNow = await waitForLeader(
        [0, 1, 2].map((i) => `http://127.0.0.1:${basePort + i}`),
        30_000,
      );
      const removed = await fetch(`${leaderNow.url}/v1/cluster/nodes/w3`, {
        method: 'DELETE',
        headers: { [CLUSTER_SECRET_HEADER]: secret },
      });
      expect(removed.status).toBe(200);
      await until(
        'w3 stopped, not restarted',
        () => /worker w3 exited \(exit code 3\)/.test(third.output()),
        30_000,
      );
      expect((await ctrlC(third)).code).toBe(0);
      const fourth = start();
      await until('cluster ready', () => fourth.output().includes('imgvault cluster ready'), START_MS);
      expect(fourth.output()).toMatch(/worker w3 exited \(exit code 3\).*not restarted/);
      expect(fourth.output()).toMatch(/2 of 2 workers taking images \(w3 removed from the cluster\)/);
      expect(fourth.output()).not.toMatch(/worker w3 has not started/);
      expect((await ctrlC(fourth)).code).toBe(0);
      expect(existsSync(join(dataDir, 'cluster.pid'))).toBe(false);
    },
    3 * START_MS + 60_000,
  );

  it(
    'leaves down a manager whose Raft log is gone (its folder removed, or an empty store a refused start left), naming the way back, and starts with the others',
    async () => {
      // A lost disk: the folder of m2, a follower or not, gone while the cluster was stopped. Started
      // as a founder it would bootstrap, a voter with no log and no votes.
      await rm(join(dataDir, 'm2'), { recursive: true, force: true });
      const fourth = start();
      await until('cluster ready', () => fourth.output().includes('imgvault cluster ready'), START_MS);
      expect(fourth.output()).toMatch(
        /manager m2 not started: its Raft log \(.*\) is gone; .*imgvault manager remove m2, then --join/,
      );
      expect(fourth.output()).toMatch(/ready: 2 of 3 managers/);
      expect(await readPid(dataDir, 'm2')).toBeNull();
      expect(existsSync(join(dataDir, 'm2', 'raft'))).toBe(false);
      const leader = await waitForLeader(
        [0, 2].map((i) => `http://127.0.0.1:${basePort + i}`),
        30_000,
      );
      expect(['m1', 'm3']).toContain(leader.id);
      expect((await ctrlC(fourth)).code).toBe(0);

      // A start the cluster refused (here: m2 as a founder the members no longer list) opens its
      // store first and leaves it empty behind: no log either, and m2 stays down.
      await mkdir(join(dataDir, 'm2', 'raft'), { recursive: true });
      const empty = new ClassicLevel(join(dataDir, 'm2', 'raft'));
      await empty.open();
      await empty.close();
      const fifth = start();
      await until('cluster ready', () => fifth.output().includes('imgvault cluster ready'), START_MS);
      expect(fifth.output()).toMatch(/manager m2 not started: its Raft log \(.*\) is gone/);
      expect(await readPid(dataDir, 'm2')).toBeNull();
      expect((await ctrlC(fifth)).code).toBe(0);
    },
    2 * START_MS + 30_000,
  );
});
