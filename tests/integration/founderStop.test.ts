// A manager with an empty data folder waits for founding evidence (src/manager/foundingWait.ts)
// before it starts; a stop must end that wait, as it ends a running manager. Ctrl-C of `imgvault
// cluster` while a founder waited for peers that never came up used to hang for the launcher's
// 10 s grace and end in a SIGKILL: the founder did not listen for the launcher's stop message yet.
// Real manager processes on 127.0.0.1, each alone of its three members, so it waits for good.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_STOP_MESSAGE } from '../../src/childControl.ts';
import {
  fetchRaftView,
  killChild,
  managerUrl,
  peersSpec,
  spawnManager,
} from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';

let root: string;
let secret: string;
let secretFile: string;
const children: ChildProcess[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'founder-stop-'));
  secret = randomBytes(32).toString('hex');
  secretFile = join(root, 'cluster-secret');
  await writeFile(secretFile, secret, { mode: 0o600 });
});

afterAll(async () => {
  await Promise.all(children.map((c) => killChild(c)));
  await rm(root, { recursive: true, force: true });
});

/** Manager `id` started as the launcher starts it, waiting to found with two silent peers. */
async function waitingFounder(id: string) {
  const members = [id, `${id}b`, `${id}c`];
  const ports = await Promise.all(members.map(() => freePort()));
  const child = spawnManager({
    id,
    port: ports[0]!,
    dataDir: join(root, id),
    peers: peersSpec(members.map((m, i) => ({ id: m, port: ports[i]! }))),
    secretFile,
    logFile: join(root, `${id}.log`),
    detached: true,
    ipc: true,
    env: { IMGVAULT_LOG_LEVEL: 'info' },
  });
  children.push(child);
  const exit = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('exit', (code, signal) => resolve({ code, signal })),
  );
  let exited: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  void exit.then((e) => {
    exited = e;
  });
  const url = managerUrl(ports[0]!);
  await until(
    `${id} answers as a waiting founder`,
    async () => (await fetchRaftView(url, 1_000, { [CLUSTER_SECRET_HEADER]: secret }))?.lastIndex === 0,
    30_000,
  );
  const log = () => readFile(join(root, `${id}.log`), 'utf8');
  return { child, url, log, exited: () => exited };
}

describe('a founder waiting for its peers', () => {
  it("stops at the launcher's stop message, exiting 0", async () => {
    const m = await waitingFounder('s1');
    m.child.send(CLUSTER_STOP_MESSAGE);
    const exit = await until('s1 exited', () => m.exited(), 20_000);
    expect(exit).toEqual({ code: 0, signal: null });
    const log = await m.log();
    expect(log).toContain('"event":"manager.shutdown"');
    expect(log).toContain('"signal":"cluster-stop"');
    expect(log).toContain('"event":"manager.stopped"');
    // Stopped on purpose: no start failure line for the launcher to report.
    expect(log).not.toContain('manager.start_failed');
  }, 60_000);

  it('stops at SIGTERM, exiting 0 rather than dying of the signal', async () => {
    const m = await waitingFounder('s2');
    m.child.kill('SIGTERM');
    const exit = await until('s2 exited', () => m.exited(), 20_000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await m.log()).toContain('"signal":"SIGTERM"');
  }, 60_000);

  it('stops when its launcher is gone (its control channel closes)', async () => {
    const m = await waitingFounder('s3');
    m.child.disconnect();
    const exit = await until('s3 exited', () => m.exited(), 20_000);
    expect(exit).toEqual({ code: 0, signal: null });
    expect(await m.log()).toContain('"signal":"launcher-gone"');
  }, 60_000);
});
