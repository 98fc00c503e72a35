// A worker whose disk is full cannot open its index; its one plain line (what the cluster launcher
// shows) says the disk is full and where, not LevelDB's bare "Database failed to open". A real
// worker process; /dev/full (every write fails with ENOSPC) stands in for the full disk.

import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { freePort } from '../../src/cli/localProcess.ts';
import { spawnWorker } from '../../src/cli/localWorkers.ts';

let root: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'worker-start-failure-'));
});

afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

it.skipIf(!existsSync('/dev/full'))('a full disk: the worker says so and names its folder', async () => {
  const dataDir = join(root, 'w1');
  await mkdir(join(dataDir, 'index'), { recursive: true, mode: 0o700 });
  await symlink('/dev/full', join(dataDir, 'index', 'MANIFEST-000001'));
  const secretFile = join(root, 'cluster-secret');
  await writeFile(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const logFile = join(root, 'w1.log');
  const child = spawnWorker({
    id: 'w1',
    port: await freePort(),
    dataDir,
    secretFile,
    logFile,
    // Nothing listens there: the index is opened before any manager is asked.
    managers: [`http://127.0.0.1:${await freePort()}`],
  });
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  const line = (await readFile(logFile, 'utf8')).split('\n').find((l) => l.startsWith('imgvault worker w1:'));
  expect(code).not.toBe(0);
  expect(line).toContain(`the disk holding ${dataDir} is full (No space left on device)`);
});
