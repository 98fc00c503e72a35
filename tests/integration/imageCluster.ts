// A real image cluster for integration tests and the upload benchmark: N managers and M workers as
// child processes on free 127.0.0.1 ports, in a temp folder with a generated cluster secret. Every
// wait is bounded; close() kills whatever is still running and removes the folder.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { pngChunk } from '../../src/cli/drill/pngImages.ts';
import {
  killChild,
  managerUrl,
  peersSpec,
  spawnManager,
  waitForLeader,
} from '../../src/cli/localManagers.ts';
import { freePort, type LocalProcessSpec } from '../../src/cli/localProcess.ts';
import { spawnWorker, workerUrl } from '../../src/cli/localWorkers.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import {
  ensureCredentialTree,
  managerDir,
  OPERATOR_CREDENTIAL_FILE,
  operatorDir,
  readManagerKeys,
  readOperatorCredential,
  readWorkerCredentials,
  workerDir,
  writeWorkerCredentials,
} from '../../src/http/credentialFiles.ts';
import { loadTlsFiles, useInternalTls } from '../../src/http/tls.ts';
import { fetchRaftView } from '../../src/manager/raftView.ts';
import { until, WaitAborted } from '../helpers/until.ts';

export { until, WaitAborted };

export interface ManagerProc {
  id: string;
  port: number;
  url: string;
  dataDir: string;
  child: ChildProcess | null;
  /** The S3 endpoint's port, when the cluster runs one (ImageClusterOptions.s3). */
  s3Port?: number;
}

export interface WorkerProc {
  id: string;
  port: number;
  url: string;
  dataDir: string;
  zone: string;
  args: string[];
  child: ChildProcess | null;
}

export interface ImageClusterOptions {
  managers?: number;
  workers?: number;
  /** Extra flags for every manager, e.g. ['--max-image-bytes', '65536']. */
  managerArgs?: string[];
  /** Extra flags for every worker started with the cluster. */
  workerArgs?: string[];
  /** Zone of the workers started with the cluster; default one zone per worker (`zone-<id>`). */
  workerZone?: string;
  /** pino level of the children (their logs go to <root>/<id>.log); default `warn`. */
  logLevel?: string;
  /** Bound on the wait for a leader and for the workers to register. */
  startTimeoutMs?: number;
  /** Prefix of the temp folder's name. */
  name?: string;
  /** Where the managers' data folders are made (`<it>/m1`...), e.g. a small disk; default the temp folder. */
  managerDataRoot?: string;
  /** Run the S3 endpoint on every manager, each on a free port (ManagerProc.s3Port). */
  s3?: boolean;
  /** Bearer token for the cluster's own probes, when managerArgs turn client tokens on. */
  clientToken?: string;
  /**
   * Bearer tokens every manager takes, written to files under the cluster's folder (`tokenFile`)
   * and passed as --client-tokens-file, --read-only-tokens-file and --metrics-token-file; the
   * cluster's own probes use the first client token unless `clientToken` names another.
   */
  tokens?: { client: string[]; readOnly?: string[]; metrics?: string };
  /**
   * A credential per role (`<root>/credentials`, as `imgvault credentials init` writes it) instead
   * of the single cluster secret; `secret` and `secretFile` are then the operator's credential.
   */
  perRole?: boolean;
  /**
   * Every manager and worker serves HTTPS with this certificate (one for 127.0.0.1 does for all)
   * and trusts this CA; URLs are https://. The test process trusts the CA too, from then on, so
   * the cluster's probes and the test's own fetch calls reach it (tests/helpers/testCa.ts).
   */
  tls?: { caFile: string; certFile: string; keyFile: string };
}

/** One sample of a manager's /metrics; 0 when the series does not exist yet. */
export async function metric(m: ManagerProc, series: string): Promise<number> {
  const text = await (await fetch(`${m.url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

const MAIN = fileURLToPath(new URL('../../src/cli/main.ts', import.meta.url));

/** Runs `imgvault <args>` as a child process; killed after `timeoutMs` (30 s). */
export function runCli(
  args: string[],
  timeoutMs = 30_000,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return spawnCli(args, timeoutMs).done;
}

/**
 * `imgvault <args>` as a child process a test can signal while it runs; `done` resolves when it
 * has ended (SIGKILL after `timeoutMs`), `stderr()` is what it wrote so far.
 */
export function spawnCli(args: string[], timeoutMs: number) {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d) => {
    stdout += d;
  });
  child.stderr.on('data', (d) => {
    stderr += d;
  });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve) => {
    // 'close', not 'exit': it comes after the last output has been read.
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
  return { child, done, stderr: () => stderr };
}

/**
 * A well-formed 1x1 PNG of exactly `size` bytes (at least 57): the padding is random bytes in a
 * private ancillary chunk, so every call gives distinct content that sniffs as image/png.
 */
export function pngImage(size: number): Buffer {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0);
  ihdr.writeUInt32BE(1, 4);
  ihdr[8] = 8; // bit depth; colour type 0 (grey), default compression, filter, no interlace
  const fixed = signature.length + 12 + 13 + 12 + 12;
  if (size < fixed) throw new Error(`a PNG here is at least ${fixed} bytes`);
  return Buffer.concat([
    signature,
    pngChunk('IHDR', ihdr),
    pngChunk('prVt', randomBytes(size - fixed)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

export class ImageCluster {
  readonly managers: ManagerProc[] = [];
  readonly workers: WorkerProc[] = [];
  private readonly exits: ChildProcess[] = [];

  private constructor(
    readonly root: string,
    readonly secretFile: string,
    readonly secret: string,
    private readonly opts: ImageClusterOptions,
  ) {}

  /** Starts the managers, waits for a leader, then starts the workers and waits for them to be up. */
  static async start(opts: ImageClusterOptions = {}): Promise<ImageCluster> {
    const root = await mkdtemp(join(tmpdir(), `${opts.name ?? 'imagecluster'}-`));
    let secret = randomBytes(32).toString('hex');
    let secretFile = join(root, 'cluster-secret');
    if (opts.perRole) {
      await ensureCredentialTree(join(root, 'credentials'), []);
      secretFile = join(operatorDir(join(root, 'credentials')), OPERATOR_CREDENTIAL_FILE);
      secret = readOperatorCredential(join(root, 'credentials'));
    } else {
      await writeFile(secretFile, secret, { mode: 0o600 });
    }
    const cluster = new ImageCluster(root, secretFile, secret, opts);
    if (opts.tls) useInternalTls(loadTlsFiles({ caFile: opts.tls.caFile }));
    try {
      await cluster.writeTokenFiles();
      for (let i = 1; i <= (opts.managers ?? 3); i++) {
        const port = await freePort();
        cluster.managers.push({
          id: `m${i}`,
          port,
          url: cluster.https(managerUrl(port)),
          dataDir: join(opts.managerDataRoot ?? root, `m${i}`),
          child: null,
          ...(opts.s3 ? { s3Port: await freePort() } : {}),
        });
      }
      for (const m of cluster.managers) cluster.spawnManager(m);
      await cluster.leader(opts.startTimeoutMs ?? 30_000);
      for (let i = 1; i <= (opts.workers ?? 3); i++) {
        await cluster.addWorker(`w${i}`, opts.workerArgs ?? [], opts.workerZone);
      }
      await cluster.waitForWorkersUp(
        cluster.workers.map((w) => w.id),
        opts.startTimeoutMs ?? 30_000,
      );
      return cluster;
    } catch (err) {
      await cluster.close();
      throw err;
    }
  }

  /** Where a per-role cluster keeps its credentials (credentialFiles.ts layout). */
  get credentialsRoot(): string {
    return join(this.root, 'credentials');
  }

  /** Where the file of `tokens[kind]` is (ImageClusterOptions.tokens). */
  tokenFile(kind: keyof NonNullable<ImageClusterOptions['tokens']>): string {
    return join(this.root, `${kind}-tokens`);
  }

  private async writeTokenFiles(): Promise<void> {
    for (const [kind, tokens] of Object.entries(this.opts.tokens ?? {})) {
      const lines = typeof tokens === 'string' ? [tokens] : tokens;
      await writeFile(this.tokenFile(kind as 'client'), `${lines.join('\n')}\n`, { mode: 0o600 });
    }
  }

  /** The flags of `tokens` (none without it). */
  private tokenArgs(): string[] {
    const t = this.opts.tokens;
    if (!t) return [];
    return [
      ...['--client-tokens-file', this.tokenFile('client')],
      ...(t.readOnly ? ['--read-only-tokens-file', this.tokenFile('readOnly')] : []),
      ...(t.metrics ? ['--metrics-token-file', this.tokenFile('metrics')] : []),
    ];
  }

  authHeaders(): Record<string, string> {
    const token = this.opts.clientToken ?? this.opts.tokens?.client[0];
    return token ? { authorization: `Bearer ${token}` } : {};
  }

  /** `url` with https:// when the cluster serves TLS. */
  private https(url: string): string {
    return this.opts.tls ? url.replace(/^http:/, 'https:') : url;
  }

  /** The TLS flags every manager and worker gets (none without `tls`). */
  private tlsArgs(): string[] {
    const t = this.opts.tls;
    return t ? ['--tls-cert', t.certFile, '--tls-key', t.keyFile, '--tls-ca', t.caFile] : [];
  }

  private env(): NodeJS.ProcessEnv {
    return { IMGVAULT_LOG_LEVEL: this.opts.logLevel ?? 'warn' };
  }

  /** What every child starts with: its identity and folder, its credential (`roleDir` per role), its log. */
  private processSpec(p: ManagerProc | WorkerProc, roleDir: string): LocalProcessSpec {
    return {
      id: p.id,
      port: p.port,
      dataDir: p.dataDir,
      ...(this.opts.perRole ? { credentialsDir: roleDir } : { secretFile: this.secretFile }),
      logFile: join(this.root, `${p.id}.log`),
      env: this.env(),
    };
  }

  private watch(child: ChildProcess): ChildProcess {
    this.exits.push(child);
    return child;
  }

  spawnManager(m: ManagerProc): void {
    if (m.child) throw new Error(`manager ${m.id} is already running`);
    m.child = this.watch(
      spawnManager({
        ...this.processSpec(m, managerDir(this.credentialsRoot)),
        peers: this.opts.tls
          ? this.managers.map((p) => `${p.id}=${p.url}`).join(',')
          : peersSpec(this.managers),
        args: [
          ...this.tlsArgs(),
          ...this.tokenArgs(),
          ...(this.opts.managerArgs ?? []),
          ...(m.s3Port !== undefined ? ['--s3-port', String(m.s3Port)] : []),
        ],
      }),
    );
  }

  /** Starts a worker (by default in a zone of its own); does not wait for it to register. */
  async addWorker(id: string, args: string[], zone = `zone-${id}`): Promise<WorkerProc> {
    const port = await freePort();
    const w: WorkerProc = {
      id,
      port,
      url: this.https(workerUrl(port)),
      dataDir: join(this.root, id),
      zone,
      args,
      child: null,
    };
    this.workers.push(w);
    if (this.opts.perRole) {
      await writeWorkerCredentials(
        this.credentialsRoot,
        readManagerKeys(managerDir(this.credentialsRoot)),
        id,
      );
    }
    this.spawnWorker(w);
    return w;
  }

  spawnWorker(w: WorkerProc): void {
    if (w.child) throw new Error(`worker ${w.id} is already running`);
    w.child = this.watch(
      spawnWorker({
        ...this.processSpec(w, workerDir(this.credentialsRoot, w.id)),
        managers: this.managers.map((m) => m.url),
        zone: w.zone,
        args: [...this.tlsArgs(), ...w.args],
      }),
    );
  }

  running(): ManagerProc[] {
    return this.managers.filter((m) => m.child !== null);
  }

  /** The manager every running manager agrees leads. */
  async leader(timeoutMs = 15_000): Promise<ManagerProc> {
    const running = this.running();
    // A manager that dies (a port taken, a crash) ends the wait at once, with where to look.
    const detach: (() => void)[] = [];
    const died = new Promise<never>((_, reject) => {
      for (const m of running) {
        const child = m.child;
        if (!child) continue;
        const onExit = (code: number | null, signal: string | null) =>
          reject(
            new Error(`manager ${m.id} exited (${signal ?? code}); see ${join(this.root, `${m.id}.log`)}`),
          );
        child.once('exit', onExit);
        detach.push(() => child.off('exit', onExit));
      }
    });
    died.catch(() => {});
    // waitForLeader returns once any manager names a leader; a manager just restarted may not be
    // listening yet, and a test that then kills "a follower" could take the cluster's majority.
    const agreed = async (): Promise<string> => {
      await waitForLeader(
        running.map((m) => m.url),
        timeoutMs,
        this.authHeaders(),
      );
      return until(
        'every running manager to follow one leader',
        async () => {
          const views = await Promise.all(
            running.map((m) => fetchRaftView(m.url, 1_000, this.authHeaders())),
          );
          const ids = new Set(views.map((v) => v?.leader?.id ?? null));
          const [id] = ids;
          return ids.size === 1 && id ? id : null;
        },
        timeoutMs,
      );
    };
    let found: { id: string };
    try {
      found = { id: await Promise.race([agreed(), died]) };
    } finally {
      for (const off of detach) off();
    }
    const leader = this.managers.find((m) => m.id === found.id);
    if (!leader) throw new Error(`unknown leader ${found.id}`);
    return leader;
  }

  /** Stores `bytes` under `id` through the leader; throws unless it answers 201 Created. */
  async putImage(id: string, bytes: Buffer): Promise<void> {
    const leader = await this.leader();
    const res = await fetch(`${leader.url}/v1/images/${id}`, {
      method: 'PUT',
      body: bytes,
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`PUT ${id} answered ${res.status}: ${text}`);
  }

  async followers(): Promise<ManagerProc[]> {
    const leader = await this.leader();
    return this.running().filter((m) => m !== leader);
  }

  /** Waits until the leader's own liveness view shows every one of `ids` up. */
  async waitForWorkersUp(ids: string[], timeoutMs = 20_000): Promise<void> {
    await until(
      `workers ${ids.join(', ')} up`,
      async () => {
        for (const w of this.workers) {
          if (ids.includes(w.id) && w.child && w.child.exitCode !== null) {
            const log = await readFile(join(this.root, `${w.id}.log`), 'utf8').catch(() => '');
            throw new WaitAborted(`worker ${w.id} exited (${w.child.exitCode}): ${log.slice(-500)}`);
          }
        }
        const leader = await this.leader(timeoutMs);
        const res = await fetch(`${leader.url}/v1/cluster/nodes`, {
          headers: this.authHeaders(),
          signal: AbortSignal.timeout(2_000),
        });
        const body = (await res.json()) as { nodes: { id: string; state: string }[] };
        const up = new Set(body.nodes.filter((n) => n.state === 'up').map((n) => n.id));
        return ids.every((id) => up.has(id));
      },
      timeoutMs,
    );
  }

  worker(id: string): WorkerProc {
    const w = this.workers.find((x) => x.id === id);
    if (!w) throw new Error(`no worker ${id}`);
    return w;
  }

  /** kill -9: no handover, no flush; what is durable is what was fsynced. */
  async killManager(m: ManagerProc): Promise<void> {
    if (m.child) await killChild(m.child);
    m.child = null;
  }

  async killWorker(w: WorkerProc): Promise<void> {
    if (w.child) await killChild(w.child);
    w.child = null;
  }

  /** What the managers present to worker `id`: its access credential, or the single secret. */
  workerAccess(id: string): string {
    return this.opts.perRole
      ? readWorkerCredentials(workerDir(this.credentialsRoot, id), id).access
      : this.secret;
  }

  /** A worker's copy of a blob, read with the credential the managers use. */
  async workerBlob(w: WorkerProc, id: string): Promise<{ status: number; bytes: Buffer }> {
    const res = await fetch(`${w.url}/blobs/${encodeURIComponent(id)}`, {
      headers: { [CLUSTER_SECRET_HEADER]: this.workerAccess(w.id) },
      signal: AbortSignal.timeout(5_000),
    });
    return { status: res.status, bytes: Buffer.from(await res.arrayBuffer()) };
  }

  async close(): Promise<void> {
    if (process.env.IMGVAULT_CHILD_NODE_ARGS?.includes('--cpu-prof')) {
      // A profile is written on a clean exit only: stop the children gently first.
      await Promise.all(
        this.exits.map(async (c) => {
          if (c.exitCode !== null || c.signalCode !== null) return;
          const exited = new Promise((r) => c.once('exit', r));
          c.kill('SIGTERM');
          await Promise.race([exited, new Promise((r) => setTimeout(r, 15_000))]);
        }),
      );
    }
    await Promise.all(this.exits.map((c) => killChild(c)));
    for (const p of [...this.managers, ...this.workers]) p.child = null;
    if (!process.env.IMGVAULT_KEEP_TEST_DATA) await rm(this.root, { recursive: true, force: true });
  }
}
