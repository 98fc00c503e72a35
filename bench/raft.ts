// Raft benchmark (npm run bench:raft): three real manager processes on loopback with fresh data.
// 1. Closed-loop clients PUT ~200-byte values to the leader at concurrency 1, 16 and 64, for a
//    fixed time each: commits/s, p50/p99 latency, where the tail sits (latency, Ready and write
//    durations and batch sizes in bands), the client's CPU and each manager's CPU per commit.
// 2. Failover, 5 times: kill -9 the leader, time until a PUT succeeds again (probes alternate
//    over the survivors), restart the killed manager, let it catch up.
// 3. Unless --no-etcd: ../shared/bench/etcd-anchor.sh (relative to this checkout; a 3-member etcd on
//    the same machine), right after, and a table of imgvault beside etcd with their ratios.
// 4. With --pairs N, steps 1-3 N times, imgvault and etcd in alternating order, and the ratios of
//    each pair with their medians: on a 2-core machine either side's figure moves 1.5x between
//    runs a minute apart (docs/measurements.md), so one pair decides nothing.
//   node --import tsx bench/raft.ts [--secs 5] [--warmup 1] [--jit-warmup 10] [--repeats 5] [--conc 1,16,64] [--no-etcd] [--pairs 1]

import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { Agent, request } from 'undici';
import {
  fetchRaftView,
  killChild,
  managerUrl,
  peersSpec,
  spawnManager,
  stopChild,
  waitForLeader,
} from '../src/cli/localManagers.ts';
import { freePort } from '../src/cli/localProcess.ts';
import { etcdAnchorLines } from './etcdAnchor.ts';
import { childrenFromBuild } from './fromBuild.ts';
import { cpuSeconds } from './processCpu.ts';

const { values: args } = parseArgs({
  options: {
    secs: { type: 'string', default: '5' },
    warmup: { type: 'string', default: '1' },
    'jit-warmup': { type: 'string', default: '10' },
    repeats: { type: 'string', default: '5' },
    conc: { type: 'string', default: '1,16,64' },
    size: { type: 'string', default: '200' },
    keep: { type: 'boolean', default: false },
    'manager-args': { type: 'string', default: '' },
    'no-etcd': { type: 'boolean', default: false },
    pairs: { type: 'string', default: '1' },
    help: { type: 'boolean', default: false },
  },
});
if (args.help) {
  console.log(`usage: npm run bench:raft -- [options]
  --secs S            measured seconds per concurrency (default 5)
  --warmup W          unmeasured seconds before each (default 1)
  --jit-warmup J      unmeasured seconds at concurrency 16 once the cluster is up, before the
                      first concurrency (default 10): V8 compiles the managers' hot paths for
                      seconds, and etcd (Go) has no such warm-up; 0 measures the cold start
  --repeats N         leader kills for the failover figure (default 5; 0 skips it)
  --conc LIST         closed-loop client concurrencies, comma-separated (default 1,16,64)
  --size B            value bytes per PUT (default 200)
  --manager-args "A"  extra arguments for each manager process
  --keep              keep the managers' data folder
  --no-etcd           skip the etcd anchor run after
  --pairs N           N runs of imgvault and of etcd, alternating which goes first (default 1),
                      then each pair's ratios and their medians (about 4 minutes a pair; an odd
                      N has a middle pair, an even one reports the lower of the middle two)
Per concurrency it prints one JSON line: commits/s, p50/p99/p99.9/max latency, the commits per
latency band (le5 = over the band before, up to 5 ms), the largest bursts of commits over the p99
(tail_bursts: a stall shows as about conc commits at once), each manager's Ready and synced-write
durations in the same bands, the leader's entries per synced write in bands, its Ready cycles
(entries per Ready, average save and Ready time), the client's own CPU (% of one core) and each
manager's CPU, in all and per commit. The managers run from dist/, built first from this checkout;
BENCH_FROM_SOURCE=1 in the environment starts them from the source through tsx.`);
  process.exit(0);
}
const SECS = Number(args.secs);
const WARMUP = Number(args.warmup);
const JIT_WARMUP = Number(args['jit-warmup']);
const REPEATS = Number(args.repeats);
const CONCURRENCIES = args.conc!.split(',').map(Number);
const VALUE_BYTES = Number(args.size);
const PAIRS = Number(args.pairs);
if (!Number.isInteger(PAIRS) || PAIRS < 1) {
  console.error(`--pairs must be a whole number from 1, not ${args.pairs}`);
  process.exit(2);
}

const agent = new Agent({ keepAliveTimeout: 30_000, connections: 256, pipelining: 1 });
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Proc {
  id: string;
  port: number;
  url: string;
  child: ChildProcess | null;
}

/** One PUT; resolves with the HTTP status (0 on a network error or timeout). */
async function put(url: string, key: string, body: string, timeoutMs: number): Promise<number> {
  try {
    const res = await request(`${url}/v1/kv/${key}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body,
      dispatcher: agent,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body.dump();
    return res.statusCode;
  } catch {
    return 0;
  }
}

function pct(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

const BANDS_MS = [0.5, 1, 2, 5, 10, 20, 50, 100, 500];
const BATCH_BANDS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

/** Count per band `le<=x` ms (the Raft histograms' buckets), plus `more` for the rest. */
function bands(sorted: Float64Array): Record<string, number> {
  const out: Record<string, number> = {};
  let i = 0;
  for (const le of BANDS_MS) {
    let c = 0;
    while (i < sorted.length && sorted[i]! <= le) {
      i++;
      c++;
    }
    out[`le${le}`] = c;
  }
  out.more = sorted.length - i;
  return out;
}

/**
 * The commits slower than the p99, grouped into bursts (each starts within 50 ms of the one before),
 * the five largest: whether the tail is a few stalls that hold every request in flight at once (a
 * burst of about `conc` commits) or spread queueing. `at_s`: seconds into the measured run.
 */
function tailBursts(startedAt: Float64Array, lat: Float64Array) {
  const p99 = pct(lat.slice().sort(), 99);
  const slow: number[] = [];
  for (let i = 0; i < lat.length; i++) if (lat[i]! > p99) slow.push(i);
  slow.sort((a, b) => startedAt[a]! - startedAt[b]!);
  const bursts: { at_s: number; commits: number; max_ms: number }[] = [];
  let last = Number.NEGATIVE_INFINITY;
  for (const i of slow) {
    const b = bursts.at(-1);
    if (b && startedAt[i]! - last <= 50) {
      b.commits++;
      b.max_ms = Math.max(b.max_ms, lat[i]!);
    } else {
      bursts.push({ at_s: startedAt[i]! / 1000, commits: 1, max_ms: lat[i]! });
    }
    last = startedAt[i]!;
  }
  return bursts
    .sort((a, b) => b.commits - a.commits)
    .slice(0, 5)
    .map((b) => ({ at_s: +b.at_s.toFixed(2), commits: b.commits, max_ms: +b.max_ms.toFixed(1) }));
}

/**
 * A prom-client histogram's counts per bucket (not cumulative) between two scrapes, keyed as
 * `bands` keys them; a bucket's bound in the series is `bound * scale` (ms to seconds by default).
 */
function histogramDelta(
  before: Map<string, number> | undefined,
  after: Map<string, number>,
  name: string,
  bounds = BANDS_MS,
  scale = 1 / 1000,
): Record<string, number> {
  const delta = (k: string) => (after.get(k) ?? 0) - (before?.get(k) ?? 0);
  const out: Record<string, number> = {};
  let prev = 0;
  for (const b of bounds) {
    const cum = delta(`${name}_bucket{le="${b * scale}"}`);
    out[`le${b}`] = cum - prev;
    prev = cum;
  }
  out.more = delta(`${name}_count`) - prev;
  return out;
}

async function metricsOf(url: string): Promise<Map<string, number>> {
  const res = await request(`${url}/metrics`, { dispatcher: agent });
  const text = await res.body.text();
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (line.startsWith('#') || line === '') continue;
    const sp = line.lastIndexOf(' ');
    out.set(line.slice(0, sp), Number(line.slice(sp + 1)));
  }
  return out;
}

/** Unmeasured puts at concurrency 16 for `secs`, so that the first measured concurrency runs compiled code. */
async function jitWarmUp(leaderUrl: string, secs: number): Promise<void> {
  const value = JSON.stringify({ value: randomBytes(VALUE_BYTES / 2).toString('hex') });
  const end = performance.now() + secs * 1000;
  await Promise.all(
    Array.from({ length: 16 }, async (_, w) => {
      let i = 0;
      while (performance.now() < end) await put(leaderUrl, `warm-${w}-${i++ % 1000}`, value, 5_000);
    }),
  );
}

async function throughput(procs: Proc[], leaderUrl: string, conc: number) {
  const value = JSON.stringify({ value: randomBytes(VALUE_BYTES / 2).toString('hex') });
  const t0 = performance.now();
  const measureStart = t0 + WARMUP * 1000;
  const measureEnd = measureStart + SECS * 1000;
  const lat = new Float64Array(2_000_000);
  /** Each measured commit's start, ms after the measured seconds began (tailBursts). */
  const startedAt = new Float64Array(lat.length);
  let n = 0;
  let errors = 0;
  let cpu0: number[] = [];
  let client0 = process.cpuUsage();
  let m0: Map<string, number>[] = [];
  const startSnap = sleep(WARMUP * 1000).then(async () => {
    cpu0 = procs.map((p) => cpuSeconds(p.child?.pid));
    client0 = process.cpuUsage();
    m0 = await Promise.all(procs.map((p) => metricsOf(p.url)));
  });
  async function worker(w: number) {
    let i = 0;
    for (;;) {
      const st = performance.now();
      if (st >= measureEnd) return;
      const status = await put(leaderUrl, `bench-${w}-${i++ % 1000}`, value, 5_000);
      const en = performance.now();
      if (status !== 200) {
        errors++;
        continue;
      }
      if (st >= measureStart && en <= measureEnd && n < lat.length) {
        startedAt[n] = st - measureStart;
        lat[n++] = en - st;
      }
    }
  }
  await Promise.all(Array.from({ length: conc }, (_, w) => worker(w)));
  await startSnap;
  const cpu = procs.map((p, i) => +(cpuSeconds(p.child?.pid) - (cpu0[i] ?? 0)).toFixed(2));
  const client = process.cpuUsage(client0);
  const m1s = await Promise.all(procs.map((p) => metricsOf(p.url)));
  const li = procs.findIndex((p) => p.url === leaderUrl);
  const m1 = m1s[li]!;
  const d = (k: string) => (m1.get(k) ?? 0) - (m0[li]?.get(k) ?? 0);
  const readies = d('imgvault_raft_ready_seconds_count');
  const bursts = tailBursts(startedAt.subarray(0, n), lat.subarray(0, n));
  const sorted = lat.subarray(0, n).sort();
  return {
    bench: 'imgvault-raft-put',
    conc,
    leader: procs.find((p) => p.url === leaderUrl)?.id ?? null,
    secs: SECS,
    value_bytes: VALUE_BYTES,
    puts: n,
    puts_per_s: +(n / SECS).toFixed(1),
    p50_ms: +pct(sorted, 50).toFixed(3),
    p99_ms: +pct(sorted, 99).toFixed(3),
    p999_ms: +pct(sorted, 99.9).toFixed(3),
    max_ms: +pct(sorted, 100).toFixed(3),
    // Where the tail sits: commits per latency band, and each manager's Ready and synced-write
    // durations in the same bands (its histograms over the measured seconds).
    latency_ms_bands: bands(sorted),
    tail_bursts: bursts,
    ready_ms_bands: Object.fromEntries(
      procs.map((p, i) => [p.id, histogramDelta(m0[i], m1s[i]!, 'imgvault_raft_ready_seconds')]),
    ),
    save_ms_bands: Object.fromEntries(
      procs.map((p, i) => [p.id, histogramDelta(m0[i], m1s[i]!, 'imgvault_raft_save_seconds')]),
    ),
    leader_entries_per_write_bands: histogramDelta(m0[li], m1, 'imgvault_raft_ready_entries', BATCH_BANDS, 1),
    client_cpu_pct: +(((client.user + client.system) / 1e6 / SECS) * 100).toFixed(0),
    errors,
    leader_ready_cycles: readies,
    leader_entries_per_ready: readies
      ? +(d('imgvault_raft_entries_applied_total') / readies).toFixed(2)
      : null,
    leader_save_ms_avg: readies
      ? +(
          (d('imgvault_raft_save_seconds_sum') / Math.max(1, d('imgvault_raft_save_seconds_count'))) *
          1000
        ).toFixed(3)
      : null,
    leader_ready_ms_avg: readies
      ? +((d('imgvault_raft_ready_seconds_sum') / readies) * 1000).toFixed(3)
      : null,
    cpu_s_per_manager: Object.fromEntries(procs.map((p, i) => [p.id, cpu[i]])),
    // The figure to compare across runs on a shared machine: throughput there is noise.
    cpu_ms_per_commit: Object.fromEntries(
      procs.map((p, i) => [p.id, n ? +(((cpu[i] ?? 0) * 1000) / n).toFixed(3) : null]),
    ),
  };
}

async function stableLeaderWithAll(procs: Proc[], timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const leader = await waitForLeader(
      procs.map((p) => p.url),
      Math.max(1, deadline - Date.now()),
    );
    const views = await Promise.all(procs.map((p) => fetchRaftView(p.url, 500)));
    const lv = views.find((v) => v?.id === leader.id);
    if (lv && views.every((v) => v !== null && v.leader?.id === leader.id && v.applied >= lv.commit - 1))
      return leader;
    await sleep(100);
  }
  throw new Error('cluster did not settle with every manager caught up');
}

async function failover(procs: Proc[], start: (p: Proc) => void, rep: number) {
  const before = await stableLeaderWithAll(procs, 30_000);
  const victim = procs.find((p) => p.id === before.id)!;
  const survivors = procs.filter((p) => p !== victim);
  for (const s of survivors) await put(s.url, 'failover-warm', '{"value":"x"}', 2_000); // connections up
  await sleep(500);
  const body = JSON.stringify({ value: 'y'.repeat(VALUE_BYTES) });
  const tKill = performance.now();
  await killChild(victim.child!);
  victim.child = null;
  let firstOk: { ms: number; via: string } | null = null;
  let launched = 0;
  const statuses: Record<string, number> = {};
  await new Promise<void>((resolve) => {
    const deadline = tKill + 20_000;
    const timer = setInterval(() => {
      if (firstOk || performance.now() > deadline) {
        clearInterval(timer);
        resolve();
        return;
      }
      const target = survivors[launched++ % survivors.length]!;
      put(target.url, `failover-${rep}`, body, 3_000).then((status) => {
        statuses[status] = (statuses[status] ?? 0) + 1;
        if (status === 200 && !firstOk) {
          firstOk = { ms: performance.now() - tKill, via: target.id };
          clearInterval(timer);
          resolve();
        }
      });
    }, 10);
  });
  const after = await waitForLeader(
    survivors.map((p) => p.url),
    10_000,
  ).catch(() => null);
  const tRestart = performance.now();
  start(victim);
  await stableLeaderWithAll(procs, 30_000);
  const result = firstOk as { ms: number; via: string } | null;
  return {
    bench: 'imgvault-raft-failover',
    repeat: rep,
    killed: victim.id,
    term_before: before.term,
    new_leader: after?.id ?? null,
    term_after: after?.term ?? null,
    write_ok_after_kill_ms: result ? +result.ms.toFixed(1) : null,
    ok_via: result?.via ?? null,
    probes_launched: launched,
    probe_statuses: statuses,
    rejoin_ms: +(performance.now() - tRestart).toFixed(0),
  };
}

interface EtcdFigures {
  puts: Map<number, { puts_per_s: number; p50_ms: number; p99_ms: number }>;
  failoverMs: number[];
}

/** The etcd anchor's figures from its JSON lines, or why there are none. */
function etcdFigures(): EtcdFigures | string {
  const lines = etcdAnchorLines(args['no-etcd'] === true, 900_000);
  if (typeof lines === 'string') return lines;
  const figures: EtcdFigures = { puts: new Map(), failoverMs: [] };
  for (const line of lines) {
    const r = JSON.parse(line) as Record<string, unknown>;
    console.log(line);
    if (r.bench === 'etcd-put') {
      figures.puts.set(Number(r.conc), {
        puts_per_s: Number(r.puts_per_s),
        p50_ms: Number(r.p50_ms),
        p99_ms: Number(r.p99_ms),
      });
    } else if (r.bench === 'etcd-failover' && typeof r.write_ok_after_kill_ms === 'number') {
      figures.failoverMs.push(r.write_ok_after_kill_ms);
    }
  }
  return figures;
}

const medianOf = (xs: number[]) =>
  xs.length ? [...xs].sort((a, b) => a - b)[Math.floor((xs.length - 1) / 2)]! : null;

function printBeside(
  rows: { conc: number; puts_per_s: number; p50_ms: number; p99_ms: number }[],
  failoverMedian: number | null,
  etcd: EtcdFigures | string,
  etcdFirst = false,
): void {
  if (typeof etcd === 'string') {
    console.log(`etcd: ${etcd}`);
    return;
  }
  const ratio = (a: number | null, b: number | null | undefined) =>
    a !== null && b ? (a / b).toFixed(2) : '-';
  console.log(
    `\nbeside etcd, measured right ${etcdFirst ? 'before' : 'after'} on this machine (ratio imgvault/etcd)`,
  );
  console.log(
    'concurrency  commits/s imgvault  etcd  ratio   p50 ms imgvault  etcd    p99 ms imgvault  etcd  ratio',
  );
  for (const r of rows) {
    const e = etcd.puts.get(r.conc);
    console.log(
      `${String(r.conc).padStart(11)}  ${r.puts_per_s.toFixed(0).padStart(18)}  ${(e?.puts_per_s.toFixed(0) ?? '-').padStart(4)}  ${ratio(r.puts_per_s, e?.puts_per_s).padStart(5)}  ${r.p50_ms.toFixed(2).padStart(15)}  ${(e?.p50_ms.toFixed(2) ?? '-').padStart(5)}  ${r.p99_ms.toFixed(2).padStart(15)}  ${(e?.p99_ms.toFixed(2) ?? '-').padStart(5)}  ${ratio(r.p99_ms, e?.p99_ms).padStart(5)}`,
    );
  }
  const etcdFailover = medianOf(etcd.failoverMs);
  console.log(
    `failover median, ms: imgvault ${failoverMedian ?? '-'}, etcd ${etcdFailover ?? '-'} (ratio ${ratio(failoverMedian, etcdFailover)})`,
  );
}

async function main() {
  const root = await mkdtemp(join(tmpdir(), 'imgvault-bench-raft-'));
  const secretFile = join(root, 'cluster-secret');
  await writeFile(secretFile, randomBytes(32).toString('hex'), { mode: 0o600 });
  const procs: Proc[] = [];
  for (const id of ['m1', 'm2', 'm3']) {
    const port = await freePort();
    procs.push({ id, port, url: managerUrl(port), child: null });
  }
  const peers = peersSpec(procs);
  const start = (p: Proc) => {
    p.child = spawnManager({
      id: p.id,
      port: p.port,
      dataDir: join(root, p.id),
      peers,
      secretFile,
      logFile: join(root, `${p.id}.log`),
      args: ['--mode', 'kv', ...args['manager-args']!.split(' ').filter(Boolean)],
      env: { IMGVAULT_LOG_LEVEL: process.env.IMGVAULT_LOG_LEVEL ?? 'warn' },
    });
  };
  const hardStop = setTimeout(
    () => {
      console.error('bench:raft hard stop');
      for (const p of procs) p.child?.kill('SIGKILL');
      process.exit(3);
    },
    (JIT_WARMUP + CONCURRENCIES.length * (SECS + WARMUP + 10) + REPEATS * 60 + 60) * 1000,
  );
  try {
    for (const p of procs) start(p);
    const leader = await stableLeaderWithAll(procs, 30_000);
    console.error(`cluster up: leader ${leader.id}; data in ${root}`);
    if (JIT_WARMUP > 0) {
      await jitWarmUp(leader.url, JIT_WARMUP);
      console.error(`warmed up: ${JIT_WARMUP} s of puts at concurrency 16, not measured`);
    }
    const rows = [];
    for (const c of CONCURRENCIES) {
      const l = await waitForLeader(
        procs.map((p) => p.url),
        10_000,
      );
      const row = await throughput(procs, l.url, c);
      console.log(JSON.stringify(row));
      rows.push(row);
      await sleep(1000);
    }
    const failovers = [];
    for (let r = 1; r <= REPEATS; r++) {
      const row = await failover(procs, start, r);
      console.log(JSON.stringify(row));
      failovers.push(row);
    }
    console.log('\nimgvault Raft, 3 managers on loopback, %d-byte values', VALUE_BYTES);
    console.log('concurrency  commits/s    p50 ms    p99 ms  errors');
    for (const r of rows) {
      console.log(
        `${String(r.conc).padStart(11)}  ${r.puts_per_s.toFixed(1).padStart(9)}  ${r.p50_ms.toFixed(2).padStart(8)}  ${r.p99_ms.toFixed(2).padStart(8)}  ${String(r.errors).padStart(6)}`,
      );
    }
    const times = failovers.map((f) => f.write_ok_after_kill_ms).filter((x): x is number => x !== null);
    const median = medianOf(times);
    console.log(
      `failover (kill -9 leader -> next successful PUT), ms: ${times.join(', ')}; median ${median}`,
    );
    return { rows, median };
  } finally {
    clearTimeout(hardStop);
    // A clean stop, so a manager profiled with --cpu-prof (IMGVAULT_CHILD_NODE_ARGS) writes its profile.
    await Promise.all(procs.map((p) => (p.child ? stopChild(p.child) : undefined)));
    if (!args.keep) await rm(root, { recursive: true, force: true });
  }
}

interface Pair {
  ours: Awaited<ReturnType<typeof main>>;
  etcd: EtcdFigures | string;
}

/** Each pair's imgvault/etcd ratios, then their medians (the figure to judge the targets on). */
function printPairs(pairs: Pair[]): void {
  const measured = pairs.filter(
    (p): p is { ours: Pair['ours']; etcd: EtcdFigures } => typeof p.etcd !== 'string',
  );
  if (measured.length < 2) return;
  const top = Math.max(...CONCURRENCIES);
  type Measured = (typeof measured)[number];
  const ratioAt = (p: Measured, conc: number, key: 'puts_per_s' | 'p99_ms') => {
    const e = p.etcd.puts.get(conc)?.[key];
    const o = p.ours.rows.find((r) => r.conc === conc)?.[key];
    return o !== undefined && e ? o / e : null;
  };
  const columns = [
    ...CONCURRENCIES.map((c) => ({ head: `c=${c}`, of: (p: Measured) => ratioAt(p, c, 'puts_per_s') })),
    { head: `p99 c=${top}`, of: (p: Measured) => ratioAt(p, top, 'p99_ms') },
    {
      head: 'failover',
      of: (p: Measured) => {
        const e = medianOf(p.etcd.failoverMs);
        return p.ours.median !== null && e ? p.ours.median / e : null;
      },
    },
  ];
  const cell = (x: number | null) => (x === null ? '-' : x.toFixed(2)).padStart(10);
  console.log(
    `\n${measured.length} alternated pairs, ratio imgvault/etcd (commits/s; p99 and failover: lower is better)`,
  );
  console.log(`pair   ${columns.map((c) => c.head.padStart(10)).join('')}`);
  measured.forEach((p, i) => {
    console.log(`${String(i + 1).padStart(4)}   ${columns.map((c) => cell(c.of(p))).join('')}`);
  });
  const medianRatio = (c: (typeof columns)[number]) =>
    medianOf(measured.map((p) => c.of(p)).filter((x): x is number => x !== null));
  console.log(`median ${columns.map((c) => cell(medianRatio(c))).join('')}`);
}

childrenFromBuild();
const pairs: Pair[] = [];
for (let i = 0; i < PAIRS; i++) {
  // The managers are stopped before etcd starts and etcd before the managers do: each side has the
  // machine to itself. Odd pairs run etcd first, so a machine that drifts favours neither.
  const early = i % 2 === 1 && !args['no-etcd'] ? etcdFigures() : null;
  const ours = await main();
  const etcd = early ?? etcdFigures();
  pairs.push({ ours, etcd });
  printBeside(ours.rows, ours.median, etcd, early !== null);
}
printPairs(pairs);
await agent.close();
