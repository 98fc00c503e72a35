import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, open, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import v8 from 'node:v8';
import vm from 'node:vm';
import { serve } from '@hono/node-server';
import { afterAll, afterEach, beforeAll, beforeEach } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { BlobStore, type BlobStoreOptions } from '../../src/storagenode/blobStore.ts';
import { createWorkerApp, type WorkerApp } from '../../src/storagenode/workerApp.ts';

export const SECRET = 'test-cluster-secret';
export const AUTH = { [CLUSTER_SECRET_HEADER]: SECRET };

export interface RunningWorker {
  url: string;
  port: number;
  dataDir: string;
  store: BlobStore;
  worker: WorkerApp;
  /** Stops the server and closes the store; the data folder stays. */
  stop(): Promise<void>;
}

export async function makeDataDir(): Promise<string> {
  return mkdtemp(path.join(tmpdir(), 'imgvault-worker-'));
}

export async function removeDir(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
}

export interface BlobStoreFolder {
  /** This test's data folder. */
  readonly dataDir: string;
  /** Opens a store on it, closed after the test unless closed before. */
  open(options?: BlobStoreOptions): Promise<BlobStore>;
  close(store: BlobStore): Promise<void>;
  /** Leaves `store` to the test, which closes it itself. */
  disown(store: BlobStore): void;
}

/** Registers hooks that give each test of the file a fresh data folder, then close its stores and remove it. */
export function useBlobStoreFolder(): BlobStoreFolder {
  let dataDir = '';
  const open: BlobStore[] = [];
  beforeEach(async () => {
    dataDir = await makeDataDir();
  });
  afterEach(async () => {
    for (const store of open.splice(0)) await store.close();
    await removeDir(dataDir);
  });
  const disown = (store: BlobStore) => {
    open.splice(open.indexOf(store), 1);
  };
  return {
    get dataDir() {
      return dataDir;
    },
    async open(options = {}) {
      const store = await BlobStore.open(dataDir, options);
      open.push(store);
      return store;
    },
    async close(store) {
      disown(store);
      await store.close();
    },
    disown,
  };
}

export interface WorkerFolder {
  /** This test's folder: each worker keeps its data in a folder below it. */
  readonly parent: string;
  /** A worker on parent/<name>, stopped after the test. */
  start(name: string, options?: Parameters<typeof startWorker>[1]): Promise<RunningWorker>;
}

/** Registers hooks that give each test of the file a fresh folder, then stop its workers and remove it. */
export function useWorkerFolder(): WorkerFolder {
  let parent = '';
  const running: RunningWorker[] = [];
  beforeEach(async () => {
    parent = await makeDataDir();
  });
  afterEach(async () => {
    for (const w of running.splice(0)) await w.stop();
    await removeDir(parent);
  });
  return {
    get parent() {
      return parent;
    },
    async start(name, options = {}) {
      const w = await startWorker(path.join(parent, name), options);
      running.push(w);
      return w;
    },
  };
}

/** startWorker on a fresh data folder; `onCleanup` is handed what stops it and removes the folder. */
export async function startTempWorker(
  onCleanup: (undo: () => Promise<void>) => void,
): Promise<RunningWorker> {
  const dir = await makeDataDir();
  const worker = await startWorker(dir);
  onCleanup(async () => {
    await worker.stop();
    await removeDir(dir);
  });
  return worker;
}

/** A real worker: BlobStore on a real folder, the Hono app on 127.0.0.1, an OS-chosen port. */
export async function startWorker(
  dataDir: string,
  options: BlobStoreOptions & { maxBlobBytes?: number; secret?: string } = {},
): Promise<RunningWorker> {
  const store = await BlobStore.open(dataDir, options);
  const worker = createWorkerApp({
    store,
    secret: options.secret ?? SECRET,
    maxBlobBytes: options.maxBlobBytes ?? 256 * 1024 * 1024,
  });
  const server = await new Promise<ReturnType<typeof serve>>((resolve) => {
    const s = serve({ fetch: worker.app.fetch, hostname: '127.0.0.1', port: 0 }, () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    dataDir,
    store,
    worker,
    async stop() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ('closeAllConnections' in server) server.closeAllConnections();
      });
      await store.close();
    },
  };
}

const REPO = path.resolve(import.meta.dirname, '../..');

export type WorkerChild = ChildProcess & { stderrText: () => string };

/**
 * A real worker process (`src/cli/workerMain.ts <args>`, logs silenced unless `env` says otherwise),
 * for what only a process shows: exit statuses, kill -9, SIGSTOP. Its stderr is kept for messages.
 */
export function spawnWorkerProcess(args: string[], env: Record<string, string> = {}): WorkerChild {
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/workerMain.ts', ...args], {
    cwd: REPO,
    env: { ...process.env, IMGVAULT_LOG_LEVEL: 'silent', ...env },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  return Object.assign(child, { stderrText: () => stderr });
}

/** The child's exit status once it has exited; rejects if that takes longer than `ms`. */
export function exitOf(child: ChildProcess, ms: number): Promise<number | null> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve(child.exitCode);
    const timer = setTimeout(() => reject(new Error(`worker did not exit within ${ms} ms`)), ms);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve(code);
    });
  });
}

export function sha256Of(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/**
 * `size` pseudo-random bytes produced chunk by chunk (never one Buffer), with the same bytes for the
 * same seed; `sha256Stream` gives their hash without keeping them.
 */
export function patternStream(size: number, seed = 1, chunkSize = 64 * 1024): Readable {
  return Readable.from(patternChunks(size, seed, chunkSize));
}

function* patternChunks(size: number, seed: number, chunkSize: number): Generator<Buffer> {
  let state = seed >>> 0 || 1;
  for (let offset = 0; offset < size; offset += chunkSize) {
    const chunk = Buffer.allocUnsafe(Math.min(chunkSize, size - offset));
    for (let i = 0; i + 4 <= chunk.length; i += 4) {
      state ^= state << 13;
      state ^= state >>> 17;
      state ^= state << 5;
      chunk.writeUInt32LE(state >>> 0, i);
    }
    for (let i = chunk.length - (chunk.length % 4); i < chunk.length; i++) chunk[i] = state & 0xff;
    yield chunk;
  }
}

export async function sha256Stream(
  stream: AsyncIterable<Uint8Array>,
): Promise<{ sha256: string; size: number }> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of stream) {
    hash.update(chunk);
    size += chunk.byteLength;
  }
  return { sha256: hash.digest('hex'), size };
}

let gcFunction: (() => void) | undefined;

/** A full collection, so a heap measurement counts what is retained rather than garbage not yet swept. */
export function forceGc(): void {
  if (gcFunction === undefined) {
    v8.setFlagsFromString('--expose-gc');
    gcFunction = vm.runInNewContext('gc') as () => void;
  }
  gcFunction();
}

/**
 * Heap plus Buffer memory after full collections. V8 frees ArrayBuffer backing stores on a
 * concurrent sweeper thread that lags on a loaded machine, so take the least of a few collections
 * spaced 20 ms apart: garbage shows up in some samples, memory really held shows up in all of them.
 */
export async function retainedBytes(): Promise<number> {
  let least = Number.POSITIVE_INFINITY;
  for (let sample = 0; sample < 3; sample++) {
    forceGc();
    await new Promise((resolve) => setTimeout(resolve, 20));
    forceGc();
    const { heapUsed, arrayBuffers } = process.memoryUsage();
    least = Math.min(least, heapUsed + arrayBuffers);
  }
  return least;
}

/** A worker's JSON answer: a success body, or `{ error: { code, message, ...details } }`. */
export interface JsonAnswer {
  error: { code: string; message: string; [detail: string]: unknown };
  [field: string]: unknown;
}

/** Flips one byte of a file in place: same size, other bytes, as a rotten sector would. */
export async function flipByte(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const one = Buffer.alloc(1);
    await handle.read(one, 0, 1, offset);
    one[0] = one[0]! ^ 0xff;
    await handle.write(one, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

/**
 * Mounts a tmpfs of `size` (e.g. `4m`) at `dir`: a real disk that fills up. Needs root with
 * CAP_SYS_ADMIN; returns false where that is missing, so the caller skips rather than fakes.
 */
export function mountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/**
 * A real small disk for the calling suite: a tmpfs of `size` mounted before its tests and removed
 * after. Mounting needs root with CAP_SYS_ADMIN; where that is missing, `mounted` stays false and
 * the suite skips its tests rather than fake a full disk.
 */
export function smallDiskForSuite(size: string): { readonly dir: string; readonly mounted: boolean } {
  const disk = { dir: '', mounted: false };
  beforeAll(async () => {
    disk.dir = path.join(await makeDataDir(), 'small-disk');
    await mkdir(disk.dir);
    disk.mounted = mountTmpfs(disk.dir, size);
  });
  afterAll(async () => {
    if (disk.mounted) unmount(disk.dir);
    await removeDir(path.dirname(disk.dir));
  });
  return disk;
}

/** Writes `file` until the disk holding it refuses another byte (ENOSPC): a disk full to the brim. */
export async function fillDisk(file: string): Promise<void> {
  const handle = await open(file, 'w');
  try {
    let at = 0;
    for (const size of [1024 * 1024, 4096, 1]) {
      const chunk = Buffer.alloc(size, 0x5a);
      for (;;) {
        try {
          const { bytesWritten } = await handle.write(chunk, 0, size, at);
          at += bytesWritten;
          if (bytesWritten < size) break;
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code === 'ENOSPC') break;
          throw err;
        }
      }
    }
  } finally {
    await handle.close();
  }
}

export function unmount(dir: string): void {
  execFileSync('umount', [dir], { stdio: 'ignore' });
}
