// `imgvault drill <name>`: a failover drill against an embedded cluster the drill starts and stops
// itself (its own folder and ports, never a running `npm start`), with a loss report.

import { readdir } from 'node:fs/promises';
import type { Command } from 'commander';
import { type DrillReport, formatReport } from './drill/drillReport.ts';
import { DRILL_NAMES, type DrillName } from './drill/drillScenarios.ts';

interface DrillFlags {
  data?: string;
  keepData?: boolean;
  basePort?: string;
  workerBasePort?: string;
  duration: string;
  clients: string;
  clientPauseMs: string;
  recoveryTimeout: string;
  pauseMs: string;
  logLevel: string;
  json?: boolean;
}

const DESCRIPTIONS: Record<DrillName, string> = {
  'leader-kill': 'kill -9 of the Raft leader',
  'leader-pause':
    'SIGSTOP of the leader past the election timeout, then SIGCONT: it must step down, no stale read',
  'follower-restart': 'stop and restart a follower',
  'worker-kill': 'kill -9 of a worker; waits until every object has 2 copies on the others',
  'worker-return': 'worker-kill, then the worker starts again; excess copies trimmed',
  'manager-replace':
    'kill -9 of m3, wipe, remove it, add m4 with --join; all images readable from every manager',
};

function number(flag: string, value: string, min: number, max: number): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < min || n > max) {
    console.error(`imgvault drill: ${flag} must be a number from ${min} to ${max}, got "${value}"`);
    process.exit(2);
  }
  return n;
}

function port(flag: string, value: string | undefined): number | undefined {
  return value === undefined ? undefined : Math.trunc(number(flag, value, 1, 65_000));
}

function print(report: DrillReport, json: boolean): void {
  console.log(json ? JSON.stringify(report) : formatReport(report));
}

export function registerDrillCommand(program: Command): void {
  program
    .command('drill')
    .argument('<name>', `one of: ${DRILL_NAMES.join(', ')}`)
    .description(
      'run a failover drill on a cluster of its own under upload/read/delete load, then check every image',
    )
    .addHelpText(
      'after',
      `\nDrills:\n${DRILL_NAMES.map((n) => `  ${n.padEnd(17)} ${DESCRIPTIONS[n]}`).join('\n')}\n\nExit status: 0 when no image was lost, no deleted image was read back and no 5xx other than 503 was answered; 1 otherwise; 2 for bad flags.`,
    )
    .option(
      '--data <dir>',
      'data folder of the drill cluster (default: a fresh temp folder, removed afterwards)',
    )
    .option('--keep-data', 'keep the temp folder (logs of every process) after the drill')
    .option('--base-port <port>', 'port of the first manager; the others follow (default: free ports)')
    .option('--worker-base-port <port>', 'port of the first worker; the others follow (default: free ports)')
    .option('--duration <s>', 'seconds of load; the fault strikes a third of the way in', '6')
    .option('--clients <n>', 'concurrent clients uploading, reading and deleting', '3')
    .option('--client-pause-ms <ms>', 'pause of each client between two requests', '20')
    .option('--recovery-timeout <s>', 'bound on each wait for recovery (leader, writes, replication)', '30')
    .option('--pause-ms <ms>', 'leader-pause: how long the leader stays stopped', '2500')
    .option('--log-level <level>', 'pino level of the cluster processes (logs in the data folder)', 'warn')
    .option('--json', 'print one JSON object instead of the text report')
    .action(async (name: string, flags: DrillFlags) => {
      if (!(DRILL_NAMES as readonly string[]).includes(name)) {
        console.error(`imgvault drill: unknown drill "${name}"; one of: ${DRILL_NAMES.join(', ')}`);
        process.exit(2);
      }
      // A drill wipes and kills what it started: never in the folder of another cluster.
      const taken = flags.data === undefined ? [] : await readdir(flags.data).catch(() => []);
      if (taken.length > 0) {
        console.error(`imgvault drill: --data ${flags.data} is not empty; give a new or empty folder`);
        process.exit(2);
      }
      const basePort = port('--base-port', flags.basePort);
      const workerBasePort = port('--worker-base-port', flags.workerBasePort);
      const { runDrill } = await import('./drill/runDrill.ts');
      const report = await runDrill({
        name: name as DrillName,
        ...(flags.data === undefined ? {} : { dataDir: flags.data }),
        keepData: flags.keepData ?? false,
        ...(basePort === undefined ? {} : { basePort }),
        ...(workerBasePort === undefined ? {} : { workerBasePort }),
        durationMs: number('--duration', flags.duration, 1, 3_600) * 1_000,
        clients: Math.trunc(number('--clients', flags.clients, 1, 64)),
        clientPauseMs: number('--client-pause-ms', flags.clientPauseMs, 0, 60_000),
        recoveryTimeoutMs: number('--recovery-timeout', flags.recoveryTimeout, 1, 3_600) * 1_000,
        pauseMs: number('--pause-ms', flags.pauseMs, 100, 600_000),
        logLevel: flags.logLevel,
      }).catch((err: unknown) => {
        console.error(`imgvault drill ${name}: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(1);
      });
      print(report, flags.json ?? false);
      process.exit(report.ok ? 0 : 1);
    });
}
