// The closed-loop driver the cluster benchmarks share: `concurrency` loops, each doing one
// operation after another until the time is up, with every latency and, per process, the CPU spent.

import { cpuSeconds } from './processCpu.ts';

export interface RunResult {
  ops: number;
  /** The numbers the operations returned, added up (bytes moved, for those that say). */
  bytes: number;
  seconds: number;
  latenciesMs: number[];
  /** CPU seconds each of `pids` spent during the run. */
  cpu: number[];
}

/** The middle value, or the mean of the middle two; NaN for none. */
export function median(xs: readonly number[]): number {
  const sorted = [...xs].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  if (sorted.length === 0) return Number.NaN;
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

/** `concurrency` loops doing `op` back to back until `secs` have passed. */
export async function drive(
  concurrency: number,
  secs: number,
  op: (n: number) => Promise<unknown>,
  pids: (number | undefined)[] = [],
): Promise<RunResult> {
  const latenciesMs: number[] = [];
  let bytes = 0;
  let seq = 0;
  const cpu0 = pids.map(cpuSeconds);
  const started = performance.now();
  const end = started + secs * 1000;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        const moved = await op(seq++);
        if (typeof moved === 'number') bytes += moved;
        latenciesMs.push(performance.now() - t0);
      }
    }),
  );
  return {
    ops: latenciesMs.length,
    bytes,
    seconds: (performance.now() - started) / 1000,
    latenciesMs,
    cpu: pids.map((pid, i) => cpuSeconds(pid) - cpu0[i]!),
  };
}

/** Several runs of one side as if they were one. */
export function combine(runs: RunResult[]): RunResult {
  return {
    ops: runs.reduce((a, r) => a + r.ops, 0),
    bytes: runs.reduce((a, r) => a + r.bytes, 0),
    seconds: runs.reduce((a, r) => a + r.seconds, 0),
    latenciesMs: runs.flatMap((r) => r.latenciesMs),
    cpu: (runs[0]?.cpu ?? []).map((_, i) => runs.reduce((a, r) => a + r.cpu[i]!, 0)),
  };
}
