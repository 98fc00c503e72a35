// The launcher's restart policy with real child processes: a child that keeps failing is restarted
// after 1x, 2x, 4x... the first delay up to the cap, each report naming the child's own reason;
// its pid file names the running process and is gone after a stop.

import { spawn } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { managerUrl, peersSpec, spawnManager } from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { SupervisedChild, stoppedOnPurpose } from '../../src/cli/supervisedChild.ts';
import { until } from '../helpers/until.ts';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'supervised-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

function nodeChild(logFile: string, script: string) {
  return () => {
    const out = openSync(logFile, 'a');
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', out, out, 'ipc'] });
    closeSync(out);
    return child;
  };
}

/** A manager `id` that exits 1 at once, restarted after 20 ms unless `refuseRestart` says why not. */
function failingManager(id: string, refuseRestart: () => Promise<string | null>) {
  const lines: string[] = [];
  const logFile = join(root, `${id}.log`);
  let spawned = 0;
  const spawnOne = nodeChild(logFile, 'process.exit(1)');
  const child = new SupervisedChild({
    kind: 'manager',
    id,
    pidFile: join(root, `${id}.pid`),
    logFile,
    policy: { firstDelayMs: 20, maxDelayMs: 20, stableAfterMs: 60_000 },
    say: (l) => lines.push(l),
    refuseRestart,
    spawn: () => {
      spawned += 1;
      return spawnOne();
    },
  });
  return { child, lines, spawned: () => spawned };
}

describe('SupervisedChild', () => {
  it('restarts a failing child with doubling, capped delays and names its reason', async () => {
    const lines: string[] = [];
    const logFile = join(root, 'w9.log');
    const child = new SupervisedChild({
      kind: 'worker',
      id: 'w9',
      pidFile: join(root, 'w9.pid'),
      logFile,
      policy: { firstDelayMs: 50, maxDelayMs: 200, stableAfterMs: 60_000 },
      say: (l) => lines.push(l),
      spawn: nodeChild(logFile, 'console.error("imgvault worker w9: the disk is on fire"); process.exit(1)'),
    });
    await child.start();
    const restarting = () => lines.filter((l) => l.includes('restarting in'));
    await until('five restarts reported', () => restarting().length >= 5, 30_000);
    await child.stop(5_000);
    const delays = restarting().map((l) => /restarting in (\d+ m?s)/.exec(l)?.[1]);
    expect(delays.slice(0, 5)).toEqual(['50 ms', '100 ms', '200 ms', '200 ms', '200 ms']);
    for (const l of restarting()) expect(l).toContain('worker w9 exited (exit code 1): the disk is on fire;');
    expect(existsSync(join(root, 'w9.pid'))).toBe(false);
  }, 40_000);

  it('does not restart a child its refuseRestart check condemns (a manager whose Raft log is gone)', async () => {
    const { child, lines, spawned } = failingManager('m9', async () => 'its Raft log is gone');
    await child.start();
    await until('the refusal reported', () => lines.some((l) => l.includes('not restarted')), 10_000);
    await new Promise((r) => setTimeout(r, 200));
    expect(spawned()).toBe(1);
    expect(lines.at(-1)).toContain('manager m9 exited (exit code 1); not restarted: its Raft log is gone');
    await child.stop(5_000);
  }, 20_000);

  it('asks again just before the restart: a folder removed while the restart waited is not started on', async () => {
    let asked = 0;
    // The folder is there when the child exits, and gone by the time its restart is due.
    const { child, lines, spawned } = failingManager('m8', async () =>
      ++asked === 1 ? null : 'its Raft log is gone',
    );
    await child.start();
    await until('the refusal reported', () => lines.some((l) => l.includes('not restarted')), 10_000);
    expect(lines).toEqual([
      expect.stringContaining('manager m8 exited (exit code 1); restarting in 20 ms'),
      'imgvault cluster: manager m8 not restarted: its Raft log is gone',
    ]);
    expect(spawned()).toBe(1);
    await child.stop(5_000);
  }, 20_000);

  it('restarts a child an operator stopped with SIGTERM after the first delay each time, as no crash', async () => {
    // A real manager: alone of its three members it waits to found, handling SIGTERM (exit 0).
    const ports = await Promise.all([0, 1, 2].map(() => freePort()));
    const secretFile = join(root, 'secret');
    await writeFile(secretFile, 'x'.repeat(64), { mode: 0o600 });
    const lines: string[] = [];
    const logFile = join(root, 'm7.log');
    const child = new SupervisedChild({
      kind: 'manager',
      id: 'm7',
      pidFile: join(root, 'm7.pid'),
      logFile,
      policy: { firstDelayMs: 50, maxDelayMs: 60_000, stableAfterMs: 60_000 },
      say: (l) => lines.push(l),
      spawn: () =>
        spawnManager({
          id: 'm7',
          port: ports[0]!,
          dataDir: join(root, 'm7'),
          peers: peersSpec(['m7', 'm7b', 'm7c'].map((id, i) => ({ id, port: ports[i]! }))),
          secretFile,
          logFile,
          detached: true,
          ipc: true,
        }),
    });
    const answering = async () => {
      const res = await fetch(`${managerUrl(ports[0]!)}/v1/cluster/raft`).catch(() => null);
      await res?.body?.cancel();
      return res !== null;
    };
    try {
      await child.start();
      for (let stop = 1; stop <= 3; stop++) {
        await until(`m7 answering before stop ${stop}`, answering, 30_000);
        const pid = child.pid!;
        process.kill(pid, 'SIGTERM');
        await until(`m7 restarted after stop ${stop}`, () => child.running && child.pid !== pid, 30_000);
      }
    } finally {
      await child.stop(5_000);
    }
    const reports = lines.filter((l) => l.includes('restarting in'));
    expect(reports).toHaveLength(3);
    for (const l of reports) {
      expect(l).toMatch(
        /manager m7 stopped cleanly \(exit code 0\) by a signal sent to it: a stop on purpose, not a crash; restarting in 50 ms/,
      );
    }
  }, 120_000);

  it('counts a child ended by SIGTERM before it could handle it as stopped, not crashed; SIGKILL as a crash', () => {
    expect(stoppedOnPurpose(0, null)).toContain('exit code 0');
    expect(stoppedOnPurpose(null, 'SIGTERM')).toBe('by SIGTERM');
    expect(stoppedOnPurpose(null, 'SIGINT')).toBe('by SIGINT');
    expect(stoppedOnPurpose(143, null)).toContain('second SIGTERM');
    expect(stoppedOnPurpose(null, 'SIGKILL')).toBeNull();
    expect(stoppedOnPurpose(1, null)).toBeNull();
  });

  it('keeps a pid file naming the running child, stops it with one message and removes the file', async () => {
    const logFile = join(root, 'm9.log');
    // Stops only on the launcher's message, as managers and workers do.
    const script = `process.on('message', (m) => { if (m === 'imgvault:cluster-stop') process.exit(0); });`;
    const child = new SupervisedChild({
      kind: 'manager',
      id: 'm9',
      pidFile: join(root, 'm9.pid'),
      logFile,
      say: () => {},
      spawn: nodeChild(logFile, script),
    });
    await child.start();
    const pid = Number.parseInt(await readFile(join(root, 'm9.pid'), 'utf8'), 10);
    expect(pid).toBe(child.pid);
    expect(child.running).toBe(true);
    const began = Date.now();
    await child.stop(20_000);
    // Well inside the grace: the message stopped it, not the SIGKILL after the grace.
    expect(Date.now() - began).toBeLessThan(15_000);
    expect(child.running).toBe(false);
    expect(existsSync(join(root, 'm9.pid'))).toBe(false);
  }, 40_000);
});
