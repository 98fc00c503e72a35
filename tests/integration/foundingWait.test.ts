// A manager whose data folder was lost, started while no leader can vouch for it, must not found
// the cluster again (src/manager/foundingWait.ts). The sequence of a user's try that lost 30
// acknowledged uploads: every manager down, m3's folder wiped, m3 started first, then m1. Here m3
// waits with its log empty (its own Raft view says so) through both, and once m2 is back and a
// leader answers, it refuses with the way back. Real manager processes on 127.0.0.1.

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
  spawnManager,
  waitForLeader,
} from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';

let root: string;
let secret: string;
let secretFile: string;
let peers: string;
const ports = new Map<string, number>();
const children: ChildProcess[] = [];

function start(id: string): ChildProcess {
  const child = spawnManager({
    id,
    port: ports.get(id)!,
    dataDir: join(root, id),
    peers,
    secretFile,
    logFile: join(root, `${id}.log`),
  });
  children.push(child);
  return child;
}

const view = (id: string) =>
  fetchRaftView(managerUrl(ports.get(id)!), 1_000, { [CLUSTER_SECRET_HEADER]: secret });
const urls = () => [...ports.values()].map((p) => managerUrl(p));

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'founding-wait-'));
  secret = randomBytes(32).toString('hex');
  secretFile = join(root, 'cluster-secret');
  await writeFile(secretFile, secret, { mode: 0o600 });
  for (const id of ['m1', 'm2', 'm3']) ports.set(id, await freePort());
  peers = peersSpec([...ports].map(([id, port]) => ({ id, port })));
});

afterAll(async () => {
  await Promise.all(children.map((c) => killChild(c)));
  await rm(root, { recursive: true, force: true });
});

describe('a founding manager with an empty data folder', () => {
  it('waits while no leader can say what it acknowledged, then refuses once one says its data was lost', async () => {
    const first = ['m1', 'm2', 'm3'].map(start);
    const leader = await waitForLeader(urls(), 30_000);
    // Every member acknowledged the leader's first entry (past the founders' snapshot).
    await until('m3 acknowledged the leader', async () => {
      const v = await view(leader.id);
      return (v?.peers?.m3?.match ?? 0) > 1;
    });
    await Promise.all(first.map((c) => killChild(c)));
    await rm(join(root, 'm3'), { recursive: true, force: true });

    const m3 = start('m3');
    const exited = new Promise<number | null>((resolve) => m3.once('exit', (code) => resolve(code)));
    let gone = false;
    void exited.then(() => {
      gone = true;
    });
    // Alone: no peer answers. Founding now would make it a voter without its votes or its log.
    await until('m3 answers as a waiting founder', async () => (await view('m3'))?.lastIndex === 0);
    start('m1');
    // m1 holds entries but cannot lead alone: still no word on m3, and m3 must not help it lead.
    await until('m1 answers', async () => (await view('m1')) !== null);
    for (let i = 0; i < 8; i++) {
      await new Promise((r) => setTimeout(r, 250));
      expect(gone).toBe(false);
      expect((await view('m3'))?.lastIndex).toBe(0);
      expect((await view('m1'))?.role).not.toBe('leader');
    }
    start('m2');
    const code = await exited;
    expect(code).toBe(1);
    const log = await readFile(join(root, 'm3.log'), 'utf8');
    expect(log).toMatch(
      /manager m3 has an empty data folder, but (leader m\d holds its acknowledgement|the cluster already holds log entries)/,
    );
    expect(log).toContain('DELETE /v1/cluster/members/m3');
  }, 120_000);
});
