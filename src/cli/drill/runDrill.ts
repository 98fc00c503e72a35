// One drill from start to verdict: start a cluster of its own, run the load, strike, let the
// load run on until writes succeed again, wait for recovery, check every image, stop everything.

import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DRILL_MANAGER_ARGS, DRILL_WORKER_ARGS, DrillCluster } from './drillCluster.ts';
import { DrillLedger } from './drillLedger.ts';
import {
  checkFields,
  type DrillReport,
  drillFailed,
  failedByStatus,
  requestCounts,
  writeWindow,
} from './drillReport.ts';
import { type DrillName, FAULTS, type Fault } from './drillScenarios.ts';
import { type CheckResult, judgeReadings, readEverything } from './imageChecker.ts';
import { firstNewTermCommitAt, type LeaderSample, LeaderWatch, noLeaderMs } from './leaderWatch.ts';
import { LoadGenerator } from './loadGenerator.ts';

export interface DrillOptions {
  name: DrillName;
  /** Data folder; a fresh temp folder (removed afterwards unless keepData) when absent. */
  dataDir?: string;
  keepData?: boolean;
  basePort?: number;
  workerBasePort?: number;
  /** Total load time; the fault strikes a third of the way in. */
  durationMs: number;
  clients: number;
  /** Pause of each client between two requests. */
  clientPauseMs: number;
  /** Bound on every wait for recovery (a leader, a write, full replication, a catch-up). */
  recoveryTimeoutMs: number;
  pauseMs: number;
  logLevel: string;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Lets the load run until `durationMs` after its start and one upload after the fault succeeded. */
async function runOn(
  ledger: DrillLedger,
  loadStart: number,
  fault: Fault,
  opts: DrillOptions,
): Promise<void> {
  const deadline = Date.now() + opts.recoveryTimeoutMs;
  const wroteAgain = () => ledger.outcomes.some((o) => o.op === 'upload' && o.ok && o.at > fault.at);
  while (Date.now() < loadStart + opts.durationMs || !wroteAgain()) {
    if (Date.now() > deadline)
      throw new Error(`no upload succeeded within ${opts.recoveryTimeoutMs} ms of the fault`);
    await sleep(50);
  }
}

/** Load, fault, load until writes succeed again, and the wait for full replication where it applies. */
async function strike(cluster: DrillCluster, ledger: DrillLedger, opts: DrillOptions) {
  const load = new LoadGenerator(ledger, {
    clients: opts.clients,
    pauseMs: opts.clientPauseMs,
    // Above a follower's default --leader-wait-ms (2.5 s): a request held through an election is
    // answered, not abandoned by the drill.
    requestTimeoutMs: 5_000,
    targets: () => cluster.runningUrls(),
  });
  const watch = new LeaderWatch(
    () => ledger.now(),
    () => Promise.all(cluster.running().map((m) => cluster.raftView(m, 400))),
  );
  let fault: Fault | null = null;
  let error: string | undefined;
  let fullReplicationMs: number | null = null;
  try {
    watch.start();
    const loadStart = Date.now();
    load.start();
    await sleep(opts.durationMs / 3);
    const ctx = { cluster, ledger, recoveryTimeoutMs: opts.recoveryTimeoutMs, pauseMs: opts.pauseMs };
    fault = await FAULTS[opts.name](ctx);
    await runOn(ledger, loadStart, fault, opts);
    await load.stop();
    if (fault.replicated) fullReplicationMs = (await fault.replicated) - fault.atEpoch;
  } catch (err) {
    error = err instanceof Error ? err.message : String(err);
  } finally {
    await load.stop();
    await watch.stop();
  }
  return { fault, error, fullReplicationMs, samples: watch.samples };
}

export async function runDrill(opts: DrillOptions): Promise<DrillReport> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), `imgvault-drill-${opts.name}-`)));
  const cluster = await DrillCluster.start({
    dataDir,
    ...(opts.basePort === undefined ? {} : { basePort: opts.basePort }),
    ...(opts.workerBasePort === undefined ? {} : { workerBasePort: opts.workerBasePort }),
    managers: 3,
    workers: 3,
    managerArgs: DRILL_MANAGER_ARGS,
    workerArgs: DRILL_WORKER_ARGS,
    logLevel: opts.logLevel,
    startTimeoutMs: 60_000,
  });
  // Ctrl-C ends the drill, not the children: a SIGSTOPped manager would ignore the terminal's signal.
  const interrupted = () => void cluster.stop().then(() => process.exit(130));
  process.once('SIGINT', interrupted);
  const ledger = new DrillLedger();
  const { fault, error, fullReplicationMs, samples } = await strike(cluster, ledger, opts);
  try {
    await cluster.leader(opts.recoveryTimeoutMs);
    const managers = cluster.running();
    const expected = ledger.expected();
    const readings = await readEverything(
      expected,
      managers.map((m) => m.url),
      Date.now() + opts.recoveryTimeoutMs,
    );
    const check = judgeReadings(expected, readings, ledger.problems);
    const report = buildReport(opts.name, {
      ledger,
      samples,
      fault,
      check,
      fullReplicationMs,
      error,
    });
    report.managersChecked = managers.map((m) => m.id);
    report.ok = !drillFailed(report);
    return report;
  } finally {
    process.off('SIGINT', interrupted);
    await cluster.stop();
    if (opts.dataDir === undefined && !opts.keepData) await cluster.removeData();
  }
}

function relative(t: number | null, from: number): number | null {
  return t === null ? null : Math.round(t - from);
}

interface DrillRecord {
  ledger: DrillLedger;
  samples: LeaderSample[];
  fault: Fault | null;
  check: CheckResult;
  fullReplicationMs: number | null;
  error: string | undefined;
}

function buildReport(drill: string, r: DrillRecord): DrillReport {
  const { ledger, samples, fault } = r;
  const at = fault?.at ?? ledger.now();
  return {
    drill,
    ok: false,
    fault: fault?.description ?? 'not struck',
    faultAt: Math.round(at),
    managersChecked: [],
    ...checkFields(r.check),
    noLeaderMs: noLeaderMs(samples, at),
    ...writeWindow(ledger.outcomes, at),
    firstCommitMs: fault ? relative(firstNewTermCommitAt(samples, at, fault.termBefore), at) : null,
    failedByStatus: failedByStatus(ledger.outcomes),
    fullReplicationMs: r.fullReplicationMs,
    requests: requestCounts(ledger.outcomes),
    notes: fault?.notes ?? [],
    ...(r.error === undefined ? {} : { error: r.error }),
  };
}
