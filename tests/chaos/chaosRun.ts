// One chaos run: a fresh cluster behind proxies, clients and the nemesis for `faultMs`, then heal
// everything, wait (bounded) for the cluster to converge, read every id from every manager, and
// judge the state at rest and the history. Shared by the vitest file and `npm run chaos`.

import { appendFileSync } from 'node:fs';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { ChaosCluster } from './chaosCluster.ts';
import { convergenceProblems, historyProblems } from './checks.ts';
import type { Operation } from './linearizability.ts';
import { Nemesis } from './nemesis.ts';
import { Rng } from './rng.ts';
import { Workload } from './workload.ts';

export interface ChaosRunOptions {
  seed: number;
  faultMs: number;
  /** Bound on the wait for convergence after healing. */
  convergeMs?: number;
  clients?: number;
  log?: (line: string) => void;
}

export interface ChaosRunResult {
  seed: number;
  operations: number;
  acknowledged: number;
  /** Ids whose acknowledged upload the final reads contradict. */
  lost: string[];
  violations: string[];
  faults: Record<string, number>;
  /** How many operations ended each way (created, conflict, unknown...). */
  outcomes: Record<string, number>;
  /** Why operations ended unknown or reads got no answer (status and error code, or the fetch error). */
  unknownReasons: Record<string, number>;
  /** The run's folder (logs and data), kept when there are violations. */
  root: string;
}

export function replayCommand(seed: number, faultMs: number): string {
  return `npm run chaos -- --seed ${seed} --runs 1 --fault-seconds ${Math.round(faultMs / 1000)}`;
}

export async function runChaos(opts: ChaosRunOptions): Promise<ChaosRunResult> {
  const log = opts.log ?? (() => {});
  const rng = new Rng(opts.seed);
  const nemesisRng = rng.fork();
  const clientRng = rng.fork();
  const t0 = performance.now();
  const now = () => performance.now() - t0;
  const cluster = await ChaosCluster.start();
  // The nemesis's timeline also goes to <root>/chaos.log, next to the processes' logs.
  const stamp = (line: string) => {
    const stamped = `[seed ${opts.seed} +${(now() / 1000).toFixed(1)}s] ${line}`;
    appendFileSync(join(cluster.root, 'chaos.log'), `${stamped}\n`);
    log(stamped);
  };
  stamp(`cluster up in ${cluster.root}`);
  let result: ChaosRunResult | null = null;
  try {
    const workload = new Workload({
      seed: opts.seed,
      rng: clientRng,
      managerUrls: () => cluster.managerUrls(),
      clients: opts.clients ?? 4,
      opsPerId: 20,
      activeIds: 8,
      requestTimeoutMs: 10_000,
      now,
    });
    const nemesis = new Nemesis(cluster, { rng: nemesisRng, stepMs: [2_000, 6_000], log: stamp });
    const stop = new Promise<void>((r) => setTimeout(r, opts.faultMs));
    await Promise.all([workload.run(stop), nemesis.run(stop)]);
    await nemesis.healAll();
    await cluster.healEverything();
    stamp(`healed after ${workload.history.length} operations; waiting for convergence`);
    const violations = [...(await converge(cluster, opts.convergeMs ?? 120_000, stamp))];
    const { finals, failures } = await finalReads(cluster, workload);
    const verdict = historyProblems([...workload.history, ...finals], finals);
    violations.push(...failures);
    violations.push(...verdict.problems, ...workload.unexpected.map((u) => `unexpected answer: ${u}`));
    violations.push(...cluster.unexpectedExits.map((e) => `unexpected exit: ${e}`));
    const lost = [...new Set(verdict.lost.map((l) => l.split(':')[0]!))];
    violations.push(...verdict.lost.map((l) => `lost: ${l}`));
    result = {
      seed: opts.seed,
      operations: workload.history.length,
      acknowledged: workload.history.filter((o) => o.output.kind === 'created' || o.output.kind === 'same')
        .length,
      lost,
      violations,
      faults: Object.fromEntries(nemesis.counts),
      outcomes: outcomes(workload.history),
      unknownReasons: Object.fromEntries(workload.unknownReasons),
      root: cluster.root,
    };
    return result;
  } finally {
    const keep = result === null || result.violations.length > 0;
    await cluster.close({ keepData: keep || process.env.IMGVAULT_KEEP_TEST_DATA !== undefined });
  }
}

function outcomes(history: Operation[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of history) {
    const key = `${o.input.kind}:${o.output.kind}`;
    counts[key] = (counts[key] ?? 0) + 1;
  }
  return counts;
}

/** Polls until the cluster has converged; the problems still there when the bound ran out. */
async function converge(cluster: ChaosCluster, boundMs: number, log: (l: string) => void): Promise<string[]> {
  const deadline = Date.now() + boundMs;
  let problems: string[] = ['not checked yet'];
  while (Date.now() < deadline) {
    problems = await convergenceProblems(cluster).catch((err: Error) => [`check failed: ${err.message}`]);
    if (problems.length === 0) {
      log('converged');
      return [];
    }
    await new Promise((r) => setTimeout(r, 1_000));
  }
  log(`not converged within ${boundMs} ms`);
  return problems.map((p) => `not converged: ${p}`);
}

/**
 * Reads every id the clients touched from every manager; each read joins the history. A read that
 * gets no clear answer (no response, a 5xx) after convergence is itself a failure.
 */
async function finalReads(
  cluster: ChaosCluster,
  workload: Workload,
): Promise<{ finals: Operation[]; failures: string[] }> {
  const before = workload.history.length;
  const failures: string[] = [];
  for (const id of workload.ids.keys()) {
    for (const m of cluster.managers()) {
      const got = await workload.get(`final-${m.name}`, m.proxy.url, id);
      if (got === null) failures.push(`final read of ${id} from ${m.name} got no answer`);
    }
  }
  return { finals: workload.history.splice(before), failures };
}
