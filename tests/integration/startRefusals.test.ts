// A manager that cannot start says why in one plain line, and each cause has its own: a port in
// use, a data folder in use or of another cluster, a wrong secret, a peer list that disagrees.
// The destructive advice (remove the member) comes only with certain evidence: our own cluster's
// leader remembering what this manager acknowledged. Real manager processes on 127.0.0.1.

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  fetchRaftView,
  killChild,
  managerUrl,
  peersSpec,
  spawnManager,
  stopChild,
  waitForLeader,
} from '../../src/cli/localManagers.ts';
import { freePort } from '../../src/cli/localProcess.ts';
import { ensureManagerKeys, managerDir } from '../../src/http/credentialFiles.ts';
import { until } from '../helpers/until.ts';

let root: string;
let secretFile: string;
let peers: string;
const members: { id: string; port: number }[] = [];
const running = new Map<string, ChildProcess>();
const strays: ChildProcess[] = [];

function startMember(id: string): ChildProcess {
  const m = members.find((x) => x.id === id)!;
  const child = spawnManager({
    id,
    port: m.port,
    dataDir: join(root, id),
    peers,
    secretFile,
    logFile: join(root, `${id}.log`),
  });
  running.set(id, child);
  return child;
}

/** Runs one manager that should refuse to start; its exit code and its plain stderr line. */
async function refusedStart(opts: {
  id: string;
  port: number;
  dataDir: string;
  peers: string;
  secretFile?: string;
  credentialsDir?: string;
}): Promise<{ code: number | null; line: string }> {
  const logFile = join(root, `refused-${randomBytes(4).toString('hex')}.log`);
  const child = spawnManager({ ...opts, secretFile: opts.secretFile ?? secretFile, logFile });
  strays.push(child);
  const code = await new Promise<number | null>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`manager ${opts.id} still running after 30 s`)), 30_000);
    child.once('exit', (c) => {
      clearTimeout(timer);
      resolve(c);
    });
  });
  const line = (await readFile(logFile, 'utf8'))
    .split('\n')
    .find((l) => l.startsWith(`imgvault manager ${opts.id}:`));
  return { code, line: line ?? '' };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'start-refusals-'));
  secretFile = join(root, 'cluster-secret');
  await writeFile(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  for (const id of ['m1', 'm2', 'm3']) members.push({ id, port: await freePort() });
  peers = peersSpec(members);
  for (const { id } of members) startMember(id);
  await waitForLeader(
    members.map((m) => managerUrl(m.port)),
    30_000,
  );
});

afterAll(async () => {
  await Promise.all([...running.values(), ...strays].map((c) => killChild(c)));
  await rm(root, { recursive: true, force: true });
});

describe('a manager that cannot start says why', () => {
  it('a port in use: says so, and never asks the peers (no advice to remove anyone)', async () => {
    const holder: Server = createServer();
    const port = await freePort();
    await new Promise<void>((r) => holder.listen(port, '127.0.0.1', () => r()));
    try {
      // m1's id and peers, a fresh folder: the guard would otherwise find m1 acknowledged entries.
      const selfPeers = peersSpec(members.map((m) => (m.id === 'm1' ? { id: 'm1', port } : m)));
      const { code, line } = await refusedStart({
        id: 'm1',
        port,
        dataDir: join(root, 'fresh-m1'),
        peers: selfPeers,
      });
      expect(code).toBe(1);
      expect(line).toContain(`port ${port} on 127.0.0.1 is in use`);
      expect(line).not.toMatch(/Remove it|lost/);
    } finally {
      holder.close();
    }
  });

  it('a data folder another running manager holds', async () => {
    const m1 = members.find((m) => m.id === 'm1')!;
    const { code, line } = await refusedStart({
      id: 'm1',
      port: await freePort(),
      dataDir: join(root, 'm1'),
      peers: `m1=${managerUrl(m1.port)}`,
    });
    expect(code).toBe(1);
    // Either check may see it first: the port differs, so the folder's lock or its recorded URL.
    expect(line).toMatch(/data folder .* is in use by another running manager|records manager m1 at/);
  });

  // /dev/full answers every write with ENOSPC: a Raft log whose first file lands there meets a
  // full disk. LevelDB says only "Database failed to open" and keeps the reason in its cause.
  it.skipIf(!existsSync('/dev/full'))('a full disk: says so and names the folder', async () => {
    const dataDir = join(root, 'full-disk-m1');
    await mkdir(join(dataDir, 'raft'), { recursive: true, mode: 0o700 });
    await symlink('/dev/full', join(dataDir, 'raft', 'MANIFEST-000001'));
    const port = await freePort();
    const { code, line } = await refusedStart({ id: 'm1', port, dataDir, peers: `m1=${managerUrl(port)}` });
    expect(code).toBe(1);
    expect(line).toContain(`the disk holding ${dataDir} is full (No space left on device)`);
  });

  it('a wrong cluster secret', async () => {
    const otherSecret = join(root, 'other-secret');
    await writeFile(otherSecret, randomBytes(32).toString('hex'), { mode: 0o600 });
    const port = await freePort();
    const { code, line } = await refusedStart({
      id: 'm4',
      port,
      dataDir: join(root, 'm4'),
      peers: `${peers},m4=${managerUrl(port)}`,
      secretFile: otherSecret,
    });
    expect(code).toBe(1);
    expect(line).toMatch(/manager m\d at .* refuses this manager's cluster secret/);
  });

  it('per-role credentials the cluster does not take: names the raft credential and --credentials-dir', async () => {
    // A manager given new keys alone (a rotation one manager at a time): --secret-file is not its flag.
    const creds = join(root, 'other-creds');
    await ensureManagerKeys(creds);
    const port = await freePort();
    const { code, line } = await refusedStart({
      id: 'm4',
      port,
      dataDir: join(root, 'm4-per-role'),
      peers: `${peers},m4=${managerUrl(port)}`,
      credentialsDir: managerDir(creds),
    });
    expect(code).toBe(1);
    expect(line).toMatch(/manager m\d at .* refuses this manager's raft credential: .*--credentials-dir/);
    expect(line).not.toContain('--secret-file');
  });

  it('a peer list that disagrees with the cluster', async () => {
    const port = await freePort();
    const m2 = members.find((m) => m.id === 'm2')!;
    const { code, line } = await refusedStart({
      id: 'm4',
      port,
      dataDir: join(root, 'm4b'),
      peers: `m1=${managerUrl(m2.port)},m4=${managerUrl(port)}`,
    });
    expect(code).toBe(1);
    expect(line).toContain(`--peers names ${managerUrl(m2.port)} as manager m1, but the manager there is m2`);
  });

  // A follower: a leader that stops hands over first, and its successor has then never heard it
  // acknowledge anything, so only a follower's loss is certain evidence.
  let victim: { id: string; port: number };

  it('a data folder recorded for another address belongs to another cluster', async () => {
    const leader = await waitForLeader(
      members.map((m) => managerUrl(m.port)),
      30_000,
    );
    victim = members.find((m) => m.id !== leader.id)!;
    await until(
      'the leader has seen the follower acknowledge entries',
      async () => ((await fetchRaftView(leader.url))?.peers?.[victim.id]?.match ?? 0) > 1,
      30_000,
    );
    await stopChild(running.get(victim.id)!);
    const port = await freePort();
    const { code, line } = await refusedStart({
      id: victim.id,
      port,
      dataDir: join(root, victim.id),
      peers: peersSpec(members.map((m) => (m.id === victim.id ? { id: victim.id, port } : m))),
    });
    expect(code).toBe(1);
    expect(line).toMatch(
      new RegExp(`data folder .* records manager ${victim.id} at .* but it is starting at`),
    );
  });

  it('lost data: only then the advice to remove the member, naming the leader', async () => {
    await rm(join(root, victim.id), { recursive: true, force: true });
    const { code, line } = await refusedStart({
      id: victim.id,
      port: victim.port,
      dataDir: join(root, victim.id),
      peers,
    });
    expect(code).toBe(1);
    expect(line).toMatch(
      new RegExp(`manager ${victim.id} has an empty data folder, but leader m\\d holds its acknowledgement`),
    );
    expect(line).toContain(`DELETE /v1/cluster/members/${victim.id}`);
  });
});
