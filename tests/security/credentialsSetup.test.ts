// Setting credentials up: `imgvault credentials init` writes private files that verify against the
// manager keys, and the embedded cluster generates them under ./data on its first start (also in a
// folder from before per-role credentials), where the admin commands find the operator's with no flag.

import { type ChildProcess, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { freePort } from '../../src/cli/localProcess.ts';
import { readManagerKeys } from '../../src/http/credentialFiles.ts';
import { verifyCredential } from '../../src/http/credentials.ts';
import { runCli, until } from '../integration/imageCluster.ts';

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));
// Resolved here: the children run in another folder, where `--import tsx` would not be found.
const TSX = import.meta.resolve('tsx');
const roots: string[] = [];
const children: ChildProcess[] = [];

afterAll(async () => {
  for (const child of children) if (child.exitCode === null) process.kill(-child.pid!, 'SIGKILL');
  for (const root of roots) await rm(root, { recursive: true, force: true });
});

async function tempRoot(): Promise<string> {
  const root = await mkdtemp(join(tmpdir(), 'imgvault-creds-'));
  roots.push(root);
  return root;
}

/** Every file and folder under `dir` with its permission bits. */
async function modes(dir: string): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  for (const name of await readdir(dir, { recursive: true })) {
    out.set(name, (await stat(join(dir, name))).mode & 0o777);
  }
  return out;
}

function expectPrivate(found: Map<string, number>, root: number) {
  expect(root).toBe(0o700);
  for (const [name, mode] of found) {
    const isFile = /\.(key|credential)$/.test(name);
    expect(mode, name).toBe(isFile ? 0o600 : 0o700);
  }
}

describe('imgvault credentials', () => {
  it('init writes 0600 files in 0700 folders, says where each goes, and worker mints one more', async () => {
    const dir = join(await tempRoot(), 'creds');
    const init = await runCli([
      'credentials',
      'init',
      '--dir',
      dir,
      '--managers',
      'm1,m2,m3',
      '--workers',
      'w1,w2',
    ]);
    expect(init.code, init.stderr).toBe(0);
    expect(init.stdout).toMatch(/manager\/ +-> every manager host \(m1, m2, m3\)/);
    expect(init.stdout).toMatch(/worker-w2\/ +-> worker w2's host only/);
    expect(init.stdout).toMatch(/operator\.credential +-> the operator's machine/);
    const more = await runCli(['credentials', 'worker', 'w3', '--dir', dir]);
    expect(more.code, more.stderr).toBe(0);
    const found = await modes(dir);
    expect([...found.keys()].sort()).toEqual(
      [
        'manager',
        'manager/access.key',
        'manager/operator.key',
        'manager/raft.key',
        'manager/workers.key',
        'operator',
        'operator/operator.credential',
        ...['w1', 'w2', 'w3'].flatMap((w) => [
          `worker-${w}`,
          `worker-${w}/access.credential`,
          `worker-${w}/metrics.credential`,
          `worker-${w}/worker.credential`,
        ]),
      ].sort(),
    );
    expectPrivate(found, (await stat(dir)).mode & 0o777);
    const keys = readManagerKeys(join(dir, 'manager'));
    const w3 = (await readFile(join(dir, 'worker-w3', 'worker.credential'), 'utf8')).trim();
    expect(verifyCredential(keys.workers, 'worker', w3)).toBe('w3');
    expect(verifyCredential(keys.raft, 'worker', w3)).toBeNull();
    // A re-run keeps what exists: the credentials already handed out stay valid.
    expect((await runCli(['credentials', 'init', '--dir', dir, '--workers', 'w1'])).code).toBe(0);
    expect(readManagerKeys(join(dir, 'manager'))).toEqual(keys);
  });

  it('worker refuses without the manager keys', async () => {
    const dir = join(await tempRoot(), 'none');
    const res = await runCli(['credentials', 'worker', 'w1', '--dir', dir]);
    expect(res.code).toBe(2);
    expect(res.stderr).toMatch(/no manager keys/);
  });
});

describe('the embedded cluster', () => {
  it('generates every credential under ./data, even in a folder from before them, and the CLI needs no flag', async () => {
    const cwd = await tempRoot();
    // A data folder as the single-secret launcher left it.
    await mkdir(join(cwd, 'data'), { mode: 0o700 });
    await writeFile(join(cwd, 'data', 'cluster-secret'), 'an-old-cluster-secret-0123456789\n', {
      mode: 0o600,
    });
    const basePort = await freePort();
    const workerBasePort = await freePort();
    const launcher = spawn(
      process.execPath,
      [
        '--import',
        TSX,
        MAIN,
        'cluster',
        '--managers',
        '1',
        '--workers',
        '2',
        '--base-port',
        String(basePort),
        '--worker-base-port',
        String(workerBasePort),
      ],
      {
        cwd,
        detached: true,
        stdio: ['ignore', 'pipe', 'pipe'],
        env: { ...process.env, IMGVAULT_LOG_LEVEL: 'warn' },
      },
    );
    children.push(launcher);
    let out = '';
    launcher.stdout?.on('data', (b: Buffer) => (out += b.toString()));
    launcher.stderr?.on('data', (b: Buffer) => (out += b.toString()));
    await until('cluster ready', async () => out.includes('imgvault cluster ready'), 120_000).catch((err) => {
      throw new Error(`${(err as Error).message}\n${out}`);
    });
    const creds = join(cwd, 'data', 'credentials');
    expectPrivate(await modes(creds), (await stat(creds)).mode & 0o777);
    // No --secret-file, no --url: the operator credential is found under ./data, the URL in the environment.
    const drain = await runCliIn(cwd, ['worker', 'drain', 'w2', '--wait-ms', '0'], {
      IMGVAULT_URL: `http://127.0.0.1:${basePort}`,
    });
    expect(drain.code, drain.stdout + drain.stderr).toBe(0);
    const undrain = await runCliIn(cwd, ['worker', 'undrain', 'w2'], {
      IMGVAULT_URL: `http://127.0.0.1:${basePort}`,
    });
    expect(undrain.code, undrain.stdout + undrain.stderr).toBe(0);
    const exited = new Promise((r) => launcher.once('exit', r));
    process.kill(-launcher.pid!, 'SIGINT');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 30_000))]);
  }, 240_000);
});

/** `imgvault <args>` in `cwd` with extra environment variables; killed after 60 s. */
function runCliIn(
  cwd: string,
  args: string[],
  env: Record<string, string>,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, ['--import', TSX, MAIN, ...args], {
      cwd,
      env: { ...process.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}
