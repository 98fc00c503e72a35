// Running storage workers as local child processes on 127.0.0.1: shared by `imgvault cluster`,
// the image integration tests and the upload benchmark.

import type { ChildProcess } from 'node:child_process';
import { credentialFlags } from './localManagers.ts';
import { type ChildOptions, spawnEntry } from './localProcess.ts';

export interface LocalWorkerSpec extends ChildOptions {
  id: string;
  port: number;
  dataDir: string;
  /** Manager base URLs. */
  managers: string[];
  /** The single cluster secret's file; ignored when credentialsDir is given. */
  secretFile?: string;
  /** This worker's folder of `imgvault credentials init`. */
  credentialsDir?: string;
  zone?: string;
  /** Extra flags, e.g. ['--quota-bytes', '1MiB']. */
  args?: string[];
}

export function workerUrl(port: number): string {
  return `http://127.0.0.1:${port}`;
}

export function spawnWorker(spec: LocalWorkerSpec): ChildProcess {
  return spawnEntry(
    'workerMain',
    [
      '--id',
      spec.id,
      '--listen',
      `127.0.0.1:${spec.port}`,
      '--data',
      spec.dataDir,
      '--managers',
      spec.managers.join(','),
      ...credentialFlags(spec),
      '--zone',
      spec.zone ?? 'default',
      ...(spec.args ?? []),
    ],
    spec,
  );
}
