// Starting one of our entry points as a child process, as `imgvault cluster`, the integration tests
// and the benchmarks do for managers and workers alike: the ahead-of-time build's when this module
// runs from it (dist/, see scripts/build.mjs), else the TypeScript source through tsx.

import { type ChildProcess, spawn } from 'node:child_process';
import { randomInt } from 'node:crypto';
import { closeSync, openSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { fileURLToPath } from 'node:url';

/** Resolved here so the children load tsx from this checkout whatever their working directory. */
const tsxLoader = () => import.meta.resolve('tsx');

/**
 * Whether this module was bundled into dist/. Under tsx its URL is its own .ts file; in the build
 * it is a chunk directly in dist/, beside the entries scripts/build.mjs writes.
 */
const BUILT = !import.meta.url.endsWith('.ts');

/** The processes a launcher starts: the `imgvault` command, and one storage worker on its own. */
export type CliEntry = 'main' | 'workerMain';

const ENTRIES: Record<CliEntry, { source: string; built: string }> = {
  main: { source: './main.ts', built: './main.mjs' },
  workerMain: { source: './workerMain.ts', built: './workerMain.mjs' },
};

export interface ChildOptions {
  /** Extra arguments for node itself, e.g. ['--cpu-prof']. */
  nodeArgs?: string[];
  /** Appends the child's stdout and stderr (pino JSON) here; otherwise they are discarded. */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
  /**
   * Runs the child in its own process group, so a terminal's Ctrl-C (sent to the foreground
   * group) reaches only the parent, which alone decides how its children stop.
   */
  detached?: boolean;
  /** Opens a Node IPC channel to the child (see childControl.ts: how a launcher stops it). */
  ipc?: boolean;
}

/** What a local manager or worker is started as: who, where it listens, its folder, its credential. */
export interface LocalProcessSpec extends ChildOptions {
  id: string;
  port: number;
  dataDir: string;
  /** The single cluster secret's file; ignored when credentialsDir is given. */
  secretFile?: string;
  /** Its folder of `imgvault credentials init`. */
  credentialsDir?: string;
  /** Extra flags, e.g. ['--quota-bytes', '1MiB']. */
  args?: string[];
}

export function localUrl(port: number): string {
  return `http://127.0.0.1:${port}`;
}

/** --credentials-dir when given, else --secret-file. */
export function credentialFlags(spec: { secretFile?: string; credentialsDir?: string }): string[] {
  if (spec.credentialsDir) return ['--credentials-dir', spec.credentialsDir];
  if (spec.secretFile) return ['--secret-file', spec.secretFile];
  throw new Error('a local process needs a secretFile or a credentialsDir');
}

/** The flags every local manager and worker starts with: id, address on 127.0.0.1, folder, credential. */
export function localProcessFlags(spec: LocalProcessSpec): string[] {
  return [
    '--id',
    spec.id,
    '--listen',
    `127.0.0.1:${spec.port}`,
    '--data',
    spec.dataDir,
    ...credentialFlags(spec),
  ];
}

/**
 * V8 heap flags for every manager and worker process (also in bin/imgvault.js's shebang). V8 counts
 * the request bodies in flight (ArrayBuffers outside its heap) against the old generation's limit,
 * and with these small heaps its default limit sets off mark-compacts every few dozen milliseconds
 * under load. The leader holds each upload's bytes three times over (received, and read back for
 * two workers), so it needs the larger start; 128 MB was the best of those measured
 * (docs/measurements.md). The heap still shrinks back when idle.
 */
export const HEAP_FLAGS: readonly string[] = ['--initial-old-space-size=128'];

/**
 * IMGVAULT_CHILD_NODE_ARGS (space-separated) is added to every child's node arguments: how a
 * benchmark's whole cluster is profiled (`--cpu-prof --cpu-prof-dir=prof`), which NODE_OPTIONS
 * refuses. Read at each spawn, so a benchmark may set it after importing this module.
 */
function childNodeArgs(): string[] {
  return (process.env.IMGVAULT_CHILD_NODE_ARGS ?? '').split(' ').filter((a) => a !== '');
}

/**
 * glibc gives threads that allocate at once their own malloc arenas (up to 8 per core), and each
 * arena keeps the memory freed into it: LevelDB's compaction thread and libuv's pool threads
 * spread a loaded manager's native memory over a dozen of them. Two arenas keep less of it idle
 * (docs/operations.md, "Manager memory"); the caller's environment wins if it sets its own.
 */
export const CHILD_ENV: Readonly<Record<string, string>> = { MALLOC_ARENA_MAX: '2' };

/**
 * Set to 1 by a launcher that runs from the source (a benchmark) for children started from the
 * build in dist/ all the same, as a deployment runs them: tsx's loader costs a manager 30-50 MiB
 * of memory a built one never pays. The caller makes sure dist/ is built from the current source.
 */
export const CHILDREN_FROM_BUILD_ENV = 'IMGVAULT_CHILDREN_FROM_BUILD';

/**
 * Runs `entry` as this process runs: built JavaScript from the build, TypeScript from the source
 * (unless CHILDREN_FROM_BUILD_ENV asks for the build).
 */
export function spawnEntry(entry: CliEntry, args: string[], opts: ChildOptions = {}): ChildProcess {
  const { source, built } = ENTRIES[entry];
  if (BUILT) return spawnNode([fileURLToPath(new URL(built, import.meta.url)), ...args], opts);
  if (process.env[CHILDREN_FROM_BUILD_ENV] === '1') {
    return spawnNode([fileURLToPath(new URL(`../../dist/${built}`, import.meta.url)), ...args], opts);
  }
  return spawnTypeScript(fileURLToPath(new URL(source, import.meta.url)), args, opts);
}

/** Runs a TypeScript file through tsx's loader. */
export function spawnTypeScript(entry: string, args: string[], opts: ChildOptions = {}): ChildProcess {
  return spawnNode(['--import', tsxLoader(), entry, ...args], opts);
}

function spawnNode(args: string[], opts: ChildOptions): ChildProcess {
  const out = opts.logFile ? openSync(opts.logFile, 'a', 0o600) : 'ignore';
  const nodeArgs = [...HEAP_FLAGS, ...childNodeArgs(), ...(opts.nodeArgs ?? [])];
  const child = spawn(process.execPath, [...nodeArgs, ...args], {
    stdio: opts.ipc ? ['ignore', out, out, 'ipc'] : ['ignore', out, out],
    env: { ...CHILD_ENV, ...process.env, ...opts.env },
    detached: opts.detached ?? false,
  });
  // The child holds its own copy of the descriptor.
  if (typeof out === 'number') closeSync(out);
  return child;
}

/**
 * A port free on 127.0.0.1 right now, for a child that must know its address before it starts.
 * Between this probe and the child's listen the port lies open, and a port from the kernel's
 * ephemeral range can be handed in that gap to any process's outgoing connection or port-0 server:
 * a parallel test file took one that way in CI (EADDRINUSE). So the port is drawn at random from
 * below that range, where the kernel never hands one out on its own; only when that room is too
 * small does it fall back to asking the kernel.
 */
export async function freePort(): Promise<number> {
  const ephemeralLow = await ephemeralRangeStart();
  if (ephemeralLow - UNASSIGNED_FLOOR >= 1_000) {
    for (let attempt = 0; attempt < 64; attempt++) {
      const port = UNASSIGNED_FLOOR + randomInt(ephemeralLow - UNASSIGNED_FLOOR);
      if (handedOut.has(port)) continue;
      if ((await listenOnce(port)) !== null) return handOut(port);
    }
  }
  for (let attempt = 0; attempt < 64; attempt++) {
    const port = await listenOnce(0);
    if (port === null) break;
    if (!handedOut.has(port)) return handOut(port);
  }
  throw new Error('no free port on 127.0.0.1');
}

/**
 * Every port this process has handed out. A child that has not started yet leaves its port open,
 * so the probe alone would hand it out again: two managers of one drill once got the same port in
 * CI, and the drill waited in vain for a leader. A port stays handed out for the process's life, as
 * a stopped child's restart reuses its port.
 */
const handedOut = new Set<number>();

function handOut(port: number): number {
  handedOut.add(port);
  return port;
}

// Below this sit the ports well-known services register; our children stay clear of them.
const UNASSIGNED_FLOOR = 10_000;

/** The first port of the kernel's ephemeral range: Linux's setting, else the IANA range (49152). */
async function ephemeralRangeStart(): Promise<number> {
  try {
    const text = await readFile('/proc/sys/net/ipv4/ip_local_port_range', 'utf8');
    const low = Number.parseInt(text.trim().split(/\s+/)[0] ?? '', 10);
    if (Number.isInteger(low) && low > 0) return low;
  } catch {
    // Not Linux: the IANA default that macOS and Windows follow.
  }
  return 49_152;
}

/** Listens on `port` (0: any) and closes again; the port it got, or null when it was taken. */
function listenOnce(port: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) =>
      err.code === 'EADDRINUSE' || err.code === 'EACCES' ? resolve(null) : reject(err),
    );
    srv.listen(port, '127.0.0.1', () => {
      const got = (srv.address() as { port: number }).port;
      srv.close(() => resolve(got));
    });
  });
}
