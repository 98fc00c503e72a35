// Running storage workers as local child processes on 127.0.0.1: shared by `imgvault cluster`,
// the image integration tests and the upload benchmark.

import { type ChildProcess, spawn } from 'node:child_process';
import { closeSync, openSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const WORKER_MAIN = fileURLToPath(new URL('../storagenode/workerMain.ts', import.meta.url));
const TSX = import.meta.resolve('tsx');

export interface LocalWorkerSpec {
  id: string;
  port: number;
  dataDir: string;
  /** Manager base URLs. */
  managers: string[];
  secretFile: string;
  zone?: string;
  /** Extra flags, e.g. ['--quota-bytes', '1MiB']. */
  args?: string[];
  /** Appends the child's stdout and stderr (pino JSON) here; otherwise they are discarded. */
  logFile?: string;
  env?: NodeJS.ProcessEnv;
}

export function workerUrl(port: number): string {
  return `http://127.0.0.1:${port}`;
}

export function spawnWorker(spec: LocalWorkerSpec): ChildProcess {
  const args = [
    '--import',
    TSX,
    WORKER_MAIN,
    '--id',
    spec.id,
    '--listen',
    `127.0.0.1:${spec.port}`,
    '--data',
    spec.dataDir,
    '--managers',
    spec.managers.join(','),
    '--secret-file',
    spec.secretFile,
    '--zone',
    spec.zone ?? 'default',
    ...(spec.args ?? []),
  ];
  const out = spec.logFile ? openSync(spec.logFile, 'a') : 'ignore';
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', out, out],
    env: { ...process.env, ...spec.env },
  });
  if (typeof out === 'number') closeSync(out);
  return child;
}
