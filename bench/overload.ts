// Overload benchmark (npm run bench:overload): the embedded cluster (`imgvault cluster`: 3 managers,
// 3 workers) under a burst of uploads far past its admission caps, as a new user would try it:
//   hey -n 2048 -c 256 -m POST -D <1 MiB PNG> <leader>/v1/images
// Before it, the same hey at concurrency 8 gives the throughput the burst must keep. Printed:
// answers by status, uploads/s, leader changes (new terms, and the leader before and after), how
// often a manager lost sight of the leader (its imgvault_raft_leader_changes_total counts a
// follower that stops hearing heartbeats and pre-votes in vain, then hears them again, twice) and
// the verdict against issue 17's target: 0 leader changes,
// every answer 201 or 503, burst throughput at least the concurrency-8 figure.
//   node --import tsx bench/overload.ts [--requests 2048] [--conc 256] [--base-conc 8]
//     [--base-requests 512] [--size 1048576] [--base-port P] [--keep]
// Needs `hey` on the PATH.

import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';
import { fetchRaftView, managerUrl, stopChild, waitForLeader } from '../src/cli/localManagers.ts';
import { pngImage } from '../tests/integration/imageCluster.ts';
import { childrenFromBuild } from './fromBuild.ts';

const { values: args } = parseArgs({
  options: {
    requests: { type: 'string', default: '2048' },
    conc: { type: 'string', default: '256' },
    'base-requests': { type: 'string', default: '512' },
    'base-conc': { type: 'string', default: '8' },
    size: { type: 'string', default: String(1024 * 1024) },
    'base-port': { type: 'string' },
    keep: { type: 'boolean', default: false },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(
    'npm run bench:overload -- [--requests 2048] [--conc 256] [--base-conc 8] [--base-requests 512]\n' +
      '  [--size 1048576] [--base-port P] [--keep]\n\n' +
      'Runs hey at --base-conc against the embedded cluster, then the burst (--requests at --conc), and\n' +
      'prints answers by status, uploads/s, leader changes and the verdict against issue 17: 0 leader\n' +
      'changes, every answer 201 or 503, burst throughput at least the base figure. Needs hey on the PATH.',
  );
  process.exit(0);
}
const MANAGERS = 3;
const WORKERS = 3;
const run = promisify(execFile);

interface HeyResult {
  statuses: Record<string, number>;
  errors: number;
  errorLines: string[];
  perSecond: number;
  p50Ms: number | null;
  p99Ms: number | null;
}

/** Runs hey and reads its summary: requests/s, latency percentiles, status codes, error lines. */
async function hey(url: string, file: string, n: number, c: number): Promise<HeyResult> {
  const { stdout } = await run(
    'hey',
    ['-n', String(n), '-c', String(c), '-t', '60', '-m', 'POST', '-T', 'image/png', '-D', file, url],
    { maxBuffer: 16 * 1024 * 1024, timeout: 600_000 },
  );
  const statuses: Record<string, number> = {};
  for (const m of stdout.matchAll(/\[(\d{3})\]\s+(\d+) responses/g)) statuses[m[1]!] = Number(m[2]);
  const errorSection = stdout.split('Error distribution:')[1] ?? '';
  let errors = 0;
  const errorLines: string[] = [];
  for (const m of errorSection.matchAll(/^\s*\[(\d+)\]\s*(.*)$/gm)) {
    errors += Number(m[1]);
    errorLines.push(`${m[1]}x ${m[2]!.slice(0, 160)}`);
  }
  const pct = (p: number) => {
    const m = stdout.match(new RegExp(`${p}%+ in ([\\d.]+) secs`));
    return m ? +(Number(m[1]) * 1000).toFixed(1) : null;
  };
  const rps = stdout.match(/Requests\/sec:\s+([\d.]+)/);
  return {
    statuses,
    errors,
    errorLines,
    perSecond: rps ? Number(rps[1]) : 0,
    p50Ms: pct(50),
    p99Ms: pct(99),
  };
}

/** The leader places images only once workers have heartbeated it: upload until one is stored. */
async function untilUploadsWork(url: string, file: string): Promise<void> {
  const body = await readFile(file);
  const deadline = Date.now() + 60_000;
  while (Date.now() < deadline) {
    const res = await fetch(`${url}/v1/images`, {
      method: 'POST',
      headers: { 'content-type': 'image/png' },
      body,
      signal: AbortSignal.timeout(10_000),
    }).catch(() => null);
    await res?.arrayBuffer().catch(() => {});
    if (res?.status === 201) return;
    await new Promise((r) => setTimeout(r, 500));
  }
  throw new Error('no upload succeeded within 60 s of the cluster starting');
}

async function leaderChanges(
  urls: string[],
): Promise<{ total: number; terms: (number | null)[]; leader: string | null }> {
  let total = 0;
  const terms: (number | null)[] = [];
  for (const url of urls) {
    const text = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })
      .then((r) => r.text())
      .catch(() => '');
    const m = text.match(/^imgvault_raft_leader_changes_total (\d+)/m);
    total += m ? Number(m[1]) : 0;
    terms.push((await fetchRaftView(url, 2_000))?.term ?? null);
  }
  const leader = await waitForLeader(urls, 10_000).catch(() => null);
  return { total, terms, leader: leader?.id ?? null };
}

/**
 * The first of the cluster's ports (managers from it, workers from it + 5): --base-port, else a
 * block in 17000-17999 drawn from our pid, so runs of this bench beside others rarely collide (the
 * cluster checks every port before it starts a child, and says which is taken).
 */
function basePortOf(): number {
  if (args['base-port']) return Number(args['base-port']);
  return 17_000 + (process.pid % 99) * 10;
}

async function startCluster(root: string, basePort: number, workerBase: number): Promise<ChildProcess> {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, '../src/cli/main.ts'),
      'cluster',
      '--data',
      join(root, 'data'),
      '--managers',
      String(MANAGERS),
      '--workers',
      String(WORKERS),
      '--base-port',
      String(basePort),
      '--worker-base-port',
      String(workerBase),
    ],
    { stdio: ['ignore', 'ignore', 'inherit'], env: { ...process.env, IMGVAULT_LOG_LEVEL: 'warn' } },
  );
  return child;
}

async function main() {
  const root = await mkdtemp(join(tmpdir(), 'imgvault-bench-overload-'));
  const file = join(root, 'image.png');
  await writeFile(file, pngImage(Number(args.size)));
  const basePort = basePortOf();
  const workerBase = basePort + 5;
  const urls = Array.from({ length: MANAGERS }, (_, i) => managerUrl(basePort + i));
  const cluster = await startCluster(root, basePort, workerBase);
  try {
    const leader = await waitForLeader(urls, 60_000);
    await untilUploadsWork(leader.url, file);
    console.error(`cluster up: leader ${leader.id} at ${leader.url}; data in ${root}`);
    const base = await hey(
      `${leader.url}/v1/images`,
      file,
      Number(args['base-requests']),
      Number(args['base-conc']),
    );
    console.log(
      JSON.stringify({ bench: 'imgvault-overload-baseline', conc: Number(args['base-conc']), ...base }),
    );
    const before = await leaderChanges(urls);
    const burst = await hey(`${leader.url}/v1/images`, file, Number(args.requests), Number(args.conc));
    const after = await leaderChanges(urls);
    const termOf = (t: (number | null)[]) => Math.max(0, ...t.map((x) => x ?? 0));
    const changes = termOf(after.terms) - termOf(before.terms) + (after.leader !== before.leader ? 1 : 0);
    const lostSight = after.total - before.total;
    const answered = Object.values(burst.statuses).reduce((a, b) => a + b, 0);
    const good = (burst.statuses['201'] ?? 0) + (burst.statuses['503'] ?? 0);
    const uploadsPerS = burst.perSecond * ((burst.statuses['201'] ?? 0) / Math.max(1, answered));
    const baseAnswered = Object.values(base.statuses).reduce((a, b) => a + b, 0);
    const baseUploadsPerS = base.perSecond * ((base.statuses['201'] ?? 0) / Math.max(1, baseAnswered));
    const row = {
      bench: 'imgvault-overload',
      conc: Number(args.conc),
      requests: Number(args.requests),
      ...burst,
      uploads_per_s: +uploadsPerS.toFixed(1),
      leader_changes: changes,
      leader_before: before.leader,
      leader_after: after.leader,
      leader_contact_changes: lostSight,
      terms_before: before.terms,
      terms_after: after.terms,
    };
    console.log(JSON.stringify(row));
    console.log(
      `\noverload: hey -n ${args.requests} -c ${args.conc} -m POST -D <${args.size}-byte PNG> <leader>/v1/images`,
    );
    console.log(`answers: ${JSON.stringify(burst.statuses)}, transport errors ${burst.errors}`);
    console.log(
      `uploads/s: burst ${uploadsPerS.toFixed(1)} vs concurrency ${args['base-conc']} ${baseUploadsPerS.toFixed(1)} (ratio ${(uploadsPerS / Math.max(0.001, baseUploadsPerS)).toFixed(2)})`,
    );
    console.log(
      `leader changes: ${changes} (terms ${before.terms.join(',')} -> ${after.terms.join(',')}, leader ${before.leader} -> ${after.leader}); managers' leader contact lost or regained: ${lostSight}`,
    );
    const ok = changes === 0 && good === Number(args.requests) && uploadsPerS >= baseUploadsPerS;
    console.log(
      `target (0 leader changes, only 201/503, burst >= c=${args['base-conc']}): ${ok ? 'met' : 'NOT met'}`,
    );
  } finally {
    await stopChild(cluster, 20_000);
    if (!args.keep) await rm(root, { recursive: true, force: true });
  }
}

childrenFromBuild();
await main();
