// The benchmark's side of heapProbe.mjs: loads the probe into every child spawned afterwards and
// asks a child for its heap after a full GC.

import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const MiB = 1024 * 1024;
let probeDir: string | undefined;

/** Children spawned after this call load the probe (IMGVAULT_CHILD_NODE_ARGS, read at each spawn). */
export function loadHeapProbeInChildren(): void {
  probeDir = mkdtempSync(join(tmpdir(), 'imgvault-heap-probe-'));
  const probe = `--expose-gc --import ${fileURLToPath(new URL('./heapProbe.mjs', import.meta.url))}`;
  const given = process.env.IMGVAULT_CHILD_NODE_ARGS ?? '';
  process.env.IMGVAULT_CHILD_NODE_ARGS = given === '' ? probe : `${given} ${probe}`;
  process.env.IMGVAULT_HEAP_PROBE_DIR = probeDir;
}

export function removeHeapProbeDir(): void {
  if (probeDir !== undefined) rmSync(probeDir, { recursive: true, force: true });
}

function readSample(file: string): { at: number; heapUsed: number } | null {
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as { at: number; heapUsed: number };
  } catch {
    return null;
  }
}

/** Asks `pid` for a full GC and its JS heap used afterwards, in MiB; NaN without an answer in 30 s. */
export async function heapAfterGcMiB(pid: number | undefined): Promise<number> {
  if (probeDir === undefined || pid === undefined) return Number.NaN;
  const file = join(probeDir, `${pid}.json`);
  // Not yet loaded in a process still starting: SIGUSR2 would end it.
  if (readSample(file) === null) return Number.NaN;
  const asked = Date.now();
  try {
    process.kill(pid, 'SIGUSR2');
  } catch {
    return Number.NaN;
  }
  const deadline = asked + 30_000;
  while (Date.now() < deadline) {
    const sample = readSample(file);
    if (sample !== null && sample.at >= asked) return sample.heapUsed / MiB;
    await new Promise((r) => setTimeout(r, 100));
  }
  return Number.NaN;
}
