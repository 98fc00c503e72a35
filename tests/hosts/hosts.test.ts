// The documented one-process-per-host deployment, beyond loopback: deploy/hosts-demo.sh gives three
// managers, three workers and a client a network namespace each on a private bridge, and runs the
// systemd units' commands with the example env files, each host holding only its own folder of
// `imgvault credentials init`. The operator's credential moves leadership from the client host, a
// worker's is refused there. Upload through one manager host, cut the
// leader's host off, read everything back byte for byte through another; then cut a worker host
// off as well and read everything again. No host has a route beyond the private /24, and the root
// namespace has no address on it. Needs root and iproute2; skips, saying why, without them.
// IMGVAULT_KEEP_TEST_DATA=1 keeps the folder with the credentials, env files and each host's log.

import { type ChildProcess, execFile, execFileSync, spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { pngImage, until, WaitAborted } from '../integration/imageCluster.ts';

const run = promisify(execFile);
const REPO = fileURLToPath(new URL('../..', import.meta.url));
const DEMO = join(REPO, 'deploy/hosts-demo.sh');
const PROBE = fileURLToPath(new URL('./clientProbe.mjs', import.meta.url));
const CLI = join(REPO, 'bin/imgvault.js');
const PREFIX = `ivt-${process.pid}-${randomBytes(3).toString('hex')}`;
const NET = `10.213.${20 + (process.pid % 200)}`;

/** Why this machine cannot run the namespaces, or null when it can. */
function skipReason(): string | null {
  if (process.platform !== 'linux') return 'network namespaces need Linux';
  if (process.getuid?.() !== 0) return 'ip netns needs root';
  try {
    execFileSync('ip', ['-V'], { stdio: 'ignore' });
  } catch {
    return 'no `ip` command: install iproute2';
  }
  const probe = `${PREFIX}-probe`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
    execFileSync('ip', ['netns', 'exec', probe, 'ip', 'link', 'set', 'lo', 'up'], { stdio: 'pipe' });
  } catch (err) {
    return `ip netns fails here: ${String((err as { stderr?: Buffer }).stderr ?? err).trim()}`;
  } finally {
    spawnSync('ip', ['netns', 'del', probe], { stdio: 'ignore' });
  }
  return null;
}

const SKIP = skipReason();
const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

interface ReadResult {
  status: number;
  size?: number;
  sha256?: string;
  replicas?: string[] | null;
  error?: string;
}

let demo: ChildProcess | null = null;
let demoOut = '';
let work = '';
let token = '';

/** Runs a command on the client host; its stdout. */
async function onClient(cmd: string, args: string[]): Promise<string> {
  const { stdout } = await run('ip', ['netns', 'exec', `${PREFIX}-c`, cmd, ...args], {
    timeout: 300_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  return stdout;
}

async function raftOf(manager: string): Promise<{ role: string; leader: { id: string } | null }> {
  return JSON.parse(await onClient(process.execPath, [PROBE, 'raft', `http://${manager}:7001`, token]));
}

async function readAll(manager: string, ids: string[]): Promise<Record<string, ReadResult>> {
  return JSON.parse(
    await onClient(process.execPath, [PROBE, 'read', `http://${manager}:7001`, token, ...ids]),
  );
}

/** Unplugs a host's cable at the switch: its processes keep running, cut off from every other host. */
async function cutOff(host: string): Promise<void> {
  await run('ip', ['-n', `${PREFIX}-sw`, 'link', 'set', host, 'down'], { timeout: 10_000 });
}

const managerName = (id: string) => `manager-${id.slice(1)}.internal`;

async function stopDemo(): Promise<void> {
  const child = demo;
  demo = null;
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child.once('exit', r));
    child.kill('SIGTERM');
    const stopped = await Promise.race([exited.then(() => true), new Promise((r) => setTimeout(r, 60_000))]);
    if (!stopped) child.kill('SIGKILL');
  }
  // Whatever the script could not remove (it was killed): the namespaces of this run, by name.
  await run('bash', [DEMO, 'clean', PREFIX], { timeout: 60_000 });
}

describe.skipIf(SKIP !== null)(`one process per host${SKIP ? ` (skipped: ${SKIP})` : ''}`, () => {
  beforeAll(async () => {
    await run('bash', [DEMO, 'clean'], { timeout: 60_000 });
    work = await mkdtemp(join(tmpdir(), 'imgvault-hosts-'));
    demo = spawn('bash', [DEMO], {
      env: {
        ...process.env,
        IVT_PREFIX: PREFIX,
        IVT_NET: NET,
        IVT_WORK: work,
        IVT_KEEP: '1',
        IMGVAULT_LOG_LEVEL: 'warn',
        IVT_READY_TIMEOUT_S: '150',
      },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    demo.stdout?.on('data', (d) => {
      demoOut += d;
    });
    demo.stderr?.on('data', (d) => {
      demoOut += d;
    });
    const child = demo;
    await until(
      'deploy/hosts-demo.sh to report ready',
      async () => {
        if (child.exitCode !== null)
          throw new WaitAborted(`hosts-demo.sh exited (${child.exitCode}): ${demoOut}`);
        return demoOut.includes('hosts-demo: ready');
      },
      200_000,
    );
    token = (await readFile(join(work, 'client-tokens'), 'utf8')).trim();
  }, 240_000);

  afterAll(async () => {
    try {
      await stopDemo();
    } finally {
      if (work && !process.env.IMGVAULT_KEEP_TEST_DATA) await rm(work, { recursive: true, force: true });
    }
    const { stdout } = await run('ip', ['netns', 'list']);
    expect(stdout.split('\n').filter((l) => l.startsWith(PREFIX))).toEqual([]);
  }, 150_000);

  it('keeps every host on the private /24 alone: no default route, nothing in the root namespace', async () => {
    for (const host of ['m1', 'm2', 'm3', 'w1', 'w2', 'w3', 'c']) {
      const { stdout } = await run('ip', ['-n', `${PREFIX}-${host}`, '-4', 'route', 'show'], {
        timeout: 10_000,
      });
      expect(stdout.trim().split('\n'), host).toEqual([
        expect.stringMatching(/^10\.213\.\d+\.0\/24 dev eth0 /),
      ]);
    }
    const { stdout } = await run('ip', ['-4', 'addr', 'show'], { timeout: 10_000 });
    expect(stdout).not.toContain(` ${NET}.`);
  });

  it('gives every host only its own credentials folder', async () => {
    const managerKeys = ['access.key', 'operator.key', 'raft.key', 'workers.key'];
    for (const host of ['m1', 'm2', 'm3']) {
      expect((await readdir(join(work, host, 'credentials'))).sort(), host).toEqual(managerKeys);
      const env = await readFile(join(work, host, 'manager.env'), 'utf8');
      expect(env).toContain(`\nIMGVAULT_CREDENTIALS_DIR=${join(work, host, 'credentials')}\n`);
      expect(env).not.toMatch(/^IMGVAULT_CLUSTER_SECRET/m);
    }
    for (const host of ['w1', 'w2', 'w3']) {
      expect((await readdir(join(work, host, 'credentials'))).sort(), host).toEqual([
        'access.credential',
        'metrics.credential',
        'worker.credential',
      ]);
      const own = await readFile(join(work, host, 'credentials/worker.credential'), 'utf8');
      expect(own.trim().startsWith(`worker.${host}.`), host).toBe(true);
      const env = await readFile(join(work, host, 'worker.env'), 'utf8');
      expect(env).toContain(`\nIMGVAULT_CREDENTIALS_DIR=${join(work, host, 'credentials')}\n`);
      expect(env).not.toMatch(/^IMGVAULT_CLUSTER_SECRET/m);
    }
  });

  it("moves leadership from the client host with the operator's credential, not with a worker's", async () => {
    const leader = (await raftOf(managerName('m1'))).leader?.id;
    expect(leader).toMatch(/^m[123]$/);
    const target = ['m1', 'm2', 'm3'].find((m) => m !== leader) as string;
    const transfer = (credential: string) =>
      onClient(CLI, [
        'raft',
        'transfer-leader',
        '--url',
        ['m1', 'm2', 'm3'].map((m) => `http://${managerName(m)}:7001`).join(','),
        '--secret-file',
        credential,
        '--wait-ms',
        '60000',
        target,
      ]);
    // Refused (401/403 named on stderr), not merely failing to reach a manager.
    await expect(transfer(join(work, 'w1/credentials/worker.credential'))).rejects.toMatchObject({
      stderr: expect.stringMatching(/\b40[13]\b/),
    });
    expect((await raftOf(managerName(target))).leader?.id).toBe(leader);
    await transfer(join(work, 'credentials/operator/operator.credential'));
    await until(
      `${target} to lead`,
      async () => (await raftOf(managerName(target))).leader?.id === target,
      60_000,
    );
  }, 180_000);

  it('uploads through one manager host and reads every image back through another after the leader host and then a worker host are cut off', async () => {
    const leader = (await raftOf(managerName('m1'))).leader?.id;
    expect(leader).toMatch(/^m[123]$/);
    const [via, reader] = ['m1', 'm2', 'm3'].filter((m) => m !== leader) as [string, string];

    const images = new Map<string, Buffer>();
    const folder = join(work, 'upload');
    await mkdir(folder);
    for (const [i, size] of [100, 4_000, 70_000, 300_000, 1_200_000, 2_500_000].entries()) {
      const bytes = pngImage(size);
      await writeFile(join(folder, `img-${i}.png`), bytes);
      images.set(`img-${i}.png`, bytes);
    }
    // Through a follower: its 307 names the leader by the URL it advertises (IMGVAULT_MANAGER_URL).
    const out = await onClient(CLI, [
      'upload',
      '--url',
      `http://${managerName(via)}:7001`,
      '--token',
      token,
      folder,
    ]);
    const expected = new Map<string, Buffer>();
    for (const line of out.trim().split('\n')) {
      const [id, file] = line.split('\t') as [string, string];
      expected.set(id, images.get(file.slice(folder.length + 1)) as Buffer);
    }
    expect(expected.size).toBe(images.size);
    const ids = [...expected.keys()];

    const check = (got: Record<string, ReadResult>) => {
      for (const [id, bytes] of expected) {
        expect(got[id], id).toMatchObject({ status: 200, size: bytes.length, sha256: sha256(bytes) });
      }
    };
    const before = await readAll(managerName(via), ids);
    check(before);
    for (const id of ids) {
      const replicas = before[id]?.replicas ?? [];
      expect(new Set(replicas).size, `${id} on ${replicas}`).toBe(2);
    }

    await cutOff(leader as string);
    await until(
      `a new leader other than ${leader}`,
      async () => {
        const l = (await raftOf(managerName(reader))).leader?.id;
        return l !== undefined && l !== leader;
      },
      60_000,
    );
    check(await readAll(managerName(reader), ids));

    // A worker holding copies: each of them is read from its other copy.
    const worker = before[ids[0] as string]?.replicas?.[0] as string;
    await cutOff(worker);
    check(await readAll(managerName(reader), ids));
  }, 900_000);
});
