/**
 * End-to-end upload throughput of an embedded cluster against the raw cost of its minimum work.
 *
 *   npm run bench:upload            (BENCH_SECS=4 BENCH_ROUNDS=2 by default; BENCH_SIZES, BENCH_CONCURRENCY narrow it)
 *
 * Starts 3 managers and 3 workers as child processes (fresh temp folder, free ports), then PUTs
 * 100 KiB, 1 MiB and 8 MiB PNG images with fresh ids to the leader at concurrency 1 and 8 through
 * undici keep-alive connections, BENCH_ROUNDS runs of BENCH_SECS each. Alternating with those runs,
 * this process does the minimum durable work of an upload directly: the same bytes written three times (temp file,
 * write, fsync, close, rename, fsync of the folder), the three in sequence, at the same
 * concurrency. Printed: uploads/s, MB/s, p50/p99 latency, the raw figures, their ratio, the CPU
 * time the cluster's processes spent per upload (steadier than throughput on a shared machine), in
 * total and per process, the leader's resident memory (VmRSS) after each size, which must not grow
 * with the image size since uploads are streamed, and, when ../shared/bench/swift-bench.sh ran on
 * this machine, the ratio to Swift's PUT at the same size and concurrency (run them back to back:
 * bench/swiftAnchor.ts), and the leader's upload phases per upload (its /metrics histograms).
 * Nothing is deleted until the end (freshly deleted space writes faster).
 */

import { randomBytes, randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { request } from 'undici';
import { pngImage } from '../tests/integration/imageCluster.ts';
import { combine, drive, percentile, type RunResult } from './closedLoop.ts';
import { childrenFromBuild } from './fromBuild.ts';
import { startImageBenchCluster } from './imageBenchCluster.ts';
import { cpuSeconds } from './processCpu.ts';
import { ratioToSwift, swiftCell } from './swiftAnchor.ts';

const USAGE = `npm run bench:upload [-- --help]

Starts 3 managers and 3 workers (fresh temp folder, free ports) and PUTs PNG images to the leader,
alternating with the raw durable writes of the same bytes, then prints per size and concurrency:
uploads/s, MB/s, p50/p99 ms, the raw figures and the ratio, the CPU (user + system, all threads)
of the 6 cluster processes per upload and the leader's share, the leader's RSS, and the ratio to
Swift's PUT when ../shared/bench/swift-bench.sh ran on this machine; then the CPU per upload of
each process (managers m1-m3, the leader marked, workers w1-w3), and where the leader saw each
upload's time go: the body coming in, both copies confirmed after it, the Raft record (mean ms).

Environment:
  BENCH_SECS=4            seconds per run
  BENCH_ROUNDS=2          runs per side and cell, alternating which side goes first
  BENCH_SIZES=100KiB,1MiB,8MiB   sizes to run
  BENCH_CONCURRENCY=1,8   concurrencies to run
  BENCH_WARMUP_SECS=30    seconds of unmeasured uploads per size first, at the highest concurrency
                          (V8's optimizing compiler is busy on the workers and followers for about
                          30 s, on the leader longer: the targets are about a store that runs for
                          days, not its first half minute)
  IMGVAULT_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=prof"   profiles every cluster process
  BENCH_FROM_SOURCE=1     starts the cluster from the source through tsx, not from dist/ (built first)
Targets (issue 17): >= 2x Swift at concurrency 8, >= 1.5x at 1; cluster CPU <= 10 ms per 1 MiB upload.`;

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  console.log(USAGE);
  process.exit(0);
}

const SECS = Number(process.env.BENCH_SECS ?? 4);
/** Runs per side and cell, alternating which side goes first (the disk's speed drifts). */
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const ALL_SIZES = [
  { label: '100 KiB', bytes: 100 * 1024 },
  { label: '1 MiB', bytes: 1024 * 1024 },
  { label: '8 MiB', bytes: 8 * 1024 * 1024 },
];
/** BENCH_SIZES=1MiB,8MiB and BENCH_CONCURRENCY=8 narrow a run (e.g. to compare two builds). */
const SIZES = ALL_SIZES.filter(
  (s) => !process.env.BENCH_SIZES || process.env.BENCH_SIZES.split(',').includes(s.label.replace(' ', '')),
);
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,8').split(',').map(Number);
/**
 * Uploads at each size's first concurrency before anything is measured: one upload opens the
 * connections, but V8 is still compiling the hot paths for seconds after (a profile of the first
 * 6 s of 1 MiB uploads at concurrency 8 put 11-24% of every process's CPU in its optimizing
 * compiler), which a long-running cluster does not pay per upload. 3 s were not enough: 100 KiB at
 * concurrency 8 alone ran at 117 uploads/s and 14.0 ms of cluster CPU each after 3 s, at 253/s
 * and 6.0 ms after 20 s (docs/measurements.md, "Uploads of one slab held whole").
 */
const WARMUP_SECS = Number(process.env.BENCH_WARMUP_SECS ?? 30);
const PAYLOADS_PER_SIZE = 8;
const MB = 1_000_000;

async function fsyncDir(dir: string): Promise<void> {
  const handle = await fs.open(dir, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/** The durable write a worker does per copy, without HTTP, hashing or bookkeeping. */
async function writeDurably(dir: string, name: string, bytes: Buffer): Promise<void> {
  const tmp = path.join(dir, `${name}.tmp`);
  const handle = await fs.open(tmp, 'wx');
  try {
    await handle.writeFile(bytes);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.rename(tmp, path.join(dir, name));
  await fsyncDir(dir);
}

function leaderRssMiB(pid: number | undefined): string {
  if (pid === undefined) return '?';
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kib = Number(/^VmRSS:\s+(\d+)\s+kB/m.exec(status)?.[1]);
  return (kib / 1024).toFixed(0);
}

/** The leader's upload phase histograms (docs/metrics.md): their sums (s) and counts, by series. */
const PHASE_SERIES = [
  ['body', 'imgvault_upload_phase_seconds', 'stage'],
  ['copies', 'imgvault_upload_phase_seconds', 'replicate'],
  ['commit', 'imgvault_upload_phase_seconds', 'commit'],
  ['whole', 'imgvault_upload_duration_seconds', 'created'],
] as const;

async function phaseTotals(url: string): Promise<Map<string, number>> {
  const res = await request(`${url}/metrics`);
  const text = await res.body.text();
  const totals = new Map<string, number>();
  for (const [name, series, label] of PHASE_SERIES) {
    for (const part of ['sum', 'count'] as const) {
      const prefix = `${series}_${part}{${series.endsWith('phase_seconds') ? 'phase' : 'outcome'}="${label}"} `;
      const line = text.split('\n').find((l) => l.startsWith(prefix));
      totals.set(`${name}.${part}`, line ? Number(line.slice(prefix.length)) : 0);
    }
  }
  return totals;
}

function fmt(n: number, digits = 1): string {
  return Number.isFinite(n) ? n.toFixed(digits) : '-';
}

async function main(): Promise<void> {
  console.log(`bench:upload: starting 3 managers and 3 workers (${ROUNDS} x ${SECS} s per side and cell)...`);
  const bench = await startImageBenchCluster('imgvault-bench-upload');
  const { cluster, agent } = bench;
  const rawDirs = ['a', 'b', 'c'].map((d) => path.join(cluster.root, 'raw', d));
  for (const d of rawDirs) await fs.mkdir(d, { recursive: true });
  const rows: string[][] = [];
  const perProcess: string[] = [];
  const leaderPhases: string[] = [];
  try {
    const leader = await cluster.leader();
    console.log(
      `leader ${leader.id} (pid ${leader.child?.pid}), RSS at start ${leaderRssMiB(leader.child?.pid)} MiB`,
    );
    for (const size of SIZES) {
      const payloads = Array.from({ length: PAYLOADS_PER_SIZE }, () => pngImage(size.bytes));
      const upload = async (n: number) => {
        const body = payloads[n % payloads.length]!;
        const res = await request(`${leader.url}/v1/images/bench-${randomUUID()}`, {
          method: 'PUT',
          body,
          headers: { 'content-type': 'image/png' },
          dispatcher: agent,
        });
        const text = await res.body.text();
        if (res.statusCode !== 201)
          throw new Error(`upload answered ${res.statusCode}: ${text.slice(0, 200)}`);
        return body.length;
      };
      const raw = async (n: number) => {
        const body = payloads[n % payloads.length]!;
        const name = `${n}-${randomBytes(4).toString('hex')}`;
        for (const dir of rawDirs) await writeDurably(dir, name, body);
        return body.length;
      };
      await upload(0); // connections
      await drive(Math.max(...CONCURRENCY), WARMUP_SECS, upload); // JIT (WARMUP_SECS)
      const procs = [...cluster.managers, ...cluster.workers];
      const pids = procs.map((p) => p.child?.pid);
      const clusterCpu = () => pids.reduce<number>((sum, pid) => sum + cpuSeconds(pid), 0);
      for (const concurrency of CONCURRENCY) {
        let clusterCpuSeconds = 0;
        let leaderCpuSeconds = 0;
        const procCpuSeconds = pids.map(() => 0);
        const phases = new Map<string, number>();
        const clusterRun = async (): Promise<RunResult> => {
          const cpu0 = clusterCpu();
          const leaderCpu0 = cpuSeconds(leader.child?.pid);
          const each0 = pids.map(cpuSeconds);
          const phases0 = await phaseTotals(leader.url);
          const result = await drive(concurrency, SECS, upload);
          for (const [k, v] of await phaseTotals(leader.url))
            phases.set(k, (phases.get(k) ?? 0) + v - phases0.get(k)!);
          clusterCpuSeconds += clusterCpu() - cpu0;
          leaderCpuSeconds += cpuSeconds(leader.child?.pid) - leaderCpu0;
          pids.forEach((pid, i) => {
            procCpuSeconds[i]! += cpuSeconds(pid) - each0[i]!;
          });
          return result;
        };
        const ups: RunResult[] = [];
        const bases: RunResult[] = [];
        for (let round = 0; round < ROUNDS; round++) {
          // Alternate who goes first, so neither side always runs in the other's wake.
          if (round % 2 === 0) {
            ups.push(await clusterRun());
            bases.push(await drive(concurrency, SECS, raw));
          } else {
            bases.push(await drive(concurrency, SECS, raw));
            ups.push(await clusterRun());
          }
        }
        const up = combine(ups);
        const base = combine(bases);
        const cpuMsPerUpload = (clusterCpuSeconds * 1000) / up.ops;
        const leaderMsPerUpload = (leaderCpuSeconds * 1000) / up.ops;
        const sorted = up.latenciesMs.sort((a, b) => a - b);
        const rawSorted = base.latenciesMs.sort((a, b) => a - b);
        const upPerSec = up.ops / up.seconds;
        const rawPerSec = base.ops / base.seconds;
        const swift = swiftCell(`swift PUT ${size.label.replace(' ', '')}`, concurrency);
        const meanMs = (name: string) =>
          fmt((1000 * (phases.get(`${name}.sum`) ?? 0)) / (phases.get(`${name}.count`) ?? 0), 2);
        leaderPhases.push(
          `${size.label} c${concurrency}: ${meanMs('whole')} = body in ${meanMs('body')}, then both copies ` +
            `${meanMs('copies')}, then the record ${meanMs('commit')} (the rest: the answer, admission)`,
        );
        perProcess.push(
          `${size.label} c${concurrency}: ` +
            procs
              .map((p, i) => {
                const label = p === leader ? `${p.id} (leader)` : p.id;
                return `${label} ${fmt((procCpuSeconds[i]! * 1000) / up.ops, 2)}`;
              })
              .join(', '),
        );
        rows.push([
          size.label,
          String(concurrency),
          String(up.ops),
          fmt(upPerSec),
          fmt(up.bytes / MB / up.seconds),
          fmt(percentile(sorted, 50)),
          fmt(percentile(sorted, 99)),
          fmt(rawPerSec),
          fmt(base.bytes / MB / base.seconds),
          fmt(percentile(rawSorted, 50)),
          `${fmt((100 * upPerSec) / rawPerSec, 0)}%`,
          fmt(cpuMsPerUpload),
          fmt(leaderMsPerUpload),
          '',
          swift ? fmt(swift.objPerSec) : '-',
          ratioToSwift(upPerSec, swift),
        ]);
      }
      rows[rows.length - 1]![13] = leaderRssMiB(leader.child?.pid);
    }
  } finally {
    await bench.close();
  }
  const header = [
    'size',
    'conc',
    'uploads',
    'uploads/s',
    'MB/s',
    'p50 ms',
    'p99 ms',
    'raw ops/s',
    'raw MB/s',
    'raw p50',
    'vs raw',
    'CPU ms/upload',
    'leader CPU ms',
    'leader RSS MiB',
    'Swift PUT/s',
    'vs Swift',
  ];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
  console.log(
    'raw = the same bytes written and fsynced three times in sequence (file, rename, folder fsync).\n' +
      'CPU ms/upload = CPU time (user + system) of all 6 cluster processes per upload; leader CPU ms = its share.\n' +
      'targets: >= 2x Swift at concurrency 8, >= 1.5x at 1; cluster CPU <= 10 ms per 1 MiB upload.',
  );
  console.log('CPU ms per upload, per process:');
  for (const line of perProcess) console.log(`  ${line}`);
  console.log("The leader's own view, mean ms per upload (its upload phase histograms):");
  for (const line of leaderPhases) console.log(`  ${line}`);
}

childrenFromBuild();
main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
