// Failover benchmark (npm run bench:failover): `imgvault drill leader-kill` N times (10), each on
// a fresh cluster under upload/read/delete load: kill -9 of the leader, then the time to the first
// acknowledged upload (201) and to the first entry a new leader committed. Printed beside etcd's
// failover (leader kill -> next successful put) measured by ../shared/bench/etcd-anchor.sh, relative
// to this checkout, in the same run when etcd is installed.
//   node --import tsx bench/failover.ts [--repeats 10] [--duration 4] [--clients 3] [--no-etcd]

import { parseArgs } from 'node:util';
import type { DrillReport } from '../src/cli/drill/drillReport.ts';
import { runDrill } from '../src/cli/drill/runDrill.ts';
import { median } from './closedLoop.ts';
import { etcdAnchorLines } from './etcdAnchor.ts';

const { values: args } = parseArgs({
  options: {
    repeats: { type: 'string', default: '10' },
    duration: { type: 'string', default: '4' },
    clients: { type: 'string', default: '3' },
    'no-etcd': { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(`npm run bench:failover [-- --repeats 10] [--duration 4] [--clients 3] [--no-etcd]

Runs \`imgvault drill leader-kill\` --repeats times, each on a fresh embedded cluster under
--clients clients' upload/read/delete load for --duration seconds around the kill, and prints the
time from the kill to the first acknowledged upload and to the first entry a new leader committed,
beside etcd's failover from ../shared/bench/etcd-anchor.sh (skipped with --no-etcd).`);
  process.exit(0);
}

const max = (xs: number[]) => (xs.length === 0 ? Number.NaN : Math.max(...xs));
const present = (xs: (number | null)[]) => xs.filter((x): x is number => x !== null);

async function imgvaultRuns(): Promise<DrillReport[]> {
  const reports: DrillReport[] = [];
  for (let i = 1; i <= Number(args.repeats); i++) {
    const r = await runDrill({
      name: 'leader-kill',
      durationMs: Number(args.duration) * 1_000,
      clients: Number(args.clients),
      clientPauseMs: 10,
      recoveryTimeoutMs: 30_000,
      pauseMs: 2_500,
      logLevel: 'warn',
    });
    reports.push(r);
    const { firstUploadMs, firstCommitMs, noLeaderMs, writeUnavailableMs, failedByStatus, lost, ok } = r;
    const row = {
      bench: 'imgvault-failover',
      run: i,
      ok,
      firstUploadMs,
      firstCommitMs,
      noLeaderMs,
      writeUnavailableMs,
    };
    console.log(JSON.stringify({ ...row, lost, failedByStatus }));
  }
  return reports;
}

/** etcd's leader-kill -> next put (ms) from the anchor script's JSON lines, or why there are none. */
function etcdRuns(): number[] | string {
  const lines = etcdAnchorLines(args['no-etcd'] === true, 600_000);
  if (typeof lines === 'string') return lines;
  const runs = lines
    .map((l) => JSON.parse(l) as { bench?: string; write_ok_after_kill_ms?: number | null })
    .filter((r) => r.bench === 'etcd-failover' && typeof r.write_ok_after_kill_ms === 'number')
    .map((r) => r.write_ok_after_kill_ms as number);
  return runs.length > 0 ? runs : 'not measured: the anchor printed no etcd-failover line';
}

const reports = await imgvaultRuns();
const etcd = etcdRuns();
const firstUpload = present(reports.map((r) => r.firstUploadMs));
const firstCommit = present(reports.map((r) => r.firstCommitMs));
const refused507 = reports.reduce((n, r) => n + (r.failedByStatus['507'] ?? 0), 0);
const lost = reports.reduce((n, r) => n + r.lost, 0);
const fmt = (xs: number[]) =>
  `median ${median(xs).toFixed(0)} ms, max ${max(xs).toFixed(0)} ms (${xs.length} runs)`;

console.log(`\nleader kill -9 under upload load, ${reports.length} drills (imgvault drill leader-kill)`);
console.log(`  imgvault, kill -> first 201 upload:             ${fmt(firstUpload)}`);
console.log(`  imgvault, kill -> first committed Raft write:   ${fmt(firstCommit)}`);
console.log(
  `  etcd 3-member, kill -> first successful put:    ${typeof etcd === 'string' ? etcd : fmt(etcd)}`,
);
console.log(
  `  answers of 507 during the drills: ${refused507}; images lost: ${lost}; drills failed: ${reports.filter((r) => !r.ok).length}`,
);
