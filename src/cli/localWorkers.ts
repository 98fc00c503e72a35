// Running storage workers as local child processes on 127.0.0.1: shared by `imgvault cluster`,
// the image integration tests and the upload benchmark.

import type { ChildProcess } from 'node:child_process';
import { type LocalProcessSpec, localProcessFlags, localUrl, spawnEntry } from './localProcess.ts';

export interface LocalWorkerSpec extends LocalProcessSpec {
  /** Manager base URLs. */
  managers: string[];
  zone?: string;
}

export const workerUrl = localUrl;

export function spawnWorker(spec: LocalWorkerSpec): ChildProcess {
  return spawnEntry(
    'workerMain',
    [
      ...localProcessFlags(spec),
      '--managers',
      spec.managers.join(','),
      '--zone',
      spec.zone ?? 'default',
      ...(spec.args ?? []),
    ],
    spec,
  );
}
