/**
 * Two builds' CPU per upload, side by side under the same load: a comparison for a shared machine.
 *
 *   node --import tsx bench/uploadPair.ts <tree A> <tree B> [slices=8] [secs=4] [concurrency=8] [bytes=1048576]
 *
 * A tree is a checkout of this repository (a `git archive` of another commit unpacked beside it,
 * with a node_modules link, will do). Starts an embedded cluster (3 managers, 3 workers) from each
 * tree at once, warms both up for 3 s, then PUTs images of `bytes` to one cluster and then the
 * other, `secs` seconds at a time, `slices` times each, alternating which goes first. Each slice
 * prints its uploads/s and the CPU (user + system, all threads) per upload of the whole cluster,
 * its leader, a follower (mean) and a worker (mean); the end prints the medians and in how many
 * paired slices B's leader and cluster were cheaper than A's. A machine whose load moves by the
 * minute (other work beside it) moves both sides alike. Run it both ways round (A B, then B A):
 * the two clusters do not sit alike on the machine (their folders, say), which an A-against-A run
 * shows as a difference of up to 1 ms per upload either way.
 */

import { randomUUID } from 'node:crypto';
import { Agent, request } from 'undici';
import { drive } from './closedLoop.ts';
import { childrenFromBuild } from './fromBuild.ts';
import { cpuSeconds } from './processCpu.ts';

interface Proc {
  child?: { pid?: number };
}
interface Cluster {
  managers: Proc[];
  workers: Proc[];
  leader(): Promise<Proc & { url: string }>;
  close(): Promise<void>;
}
interface ClusterModule {
  ImageCluster: { start(opts: Record<string, unknown>): Promise<Cluster> };
  pngImage(bytes: number): Buffer;
}

interface Slice {
  ups: number;
  cluster: number;
  leader: number;
  follower: number;
  worker: number;
}

/**
 * Seconds of unmeasured uploads on each cluster first: V8 is still compiling the hot paths for
 * many seconds (a perf profile put a quarter of every process's CPU in its optimizing compiler
 * 8 s into a run), and a longer warm-up brings the slices nearer a long-running cluster.
 */
const WARMUP_SECS = Number(process.env.BENCH_WARMUP_SECS ?? 3);

const [treeA, treeB, slicesArg = '8', secsArg = '4', concArg = '8', bytesArg = '1048576'] =
  process.argv.slice(2);
if (!treeA || !treeB || process.argv.includes('--help')) {
  console.log(
    'node --import tsx bench/uploadPair.ts <tree A> <tree B> [slices] [secs] [concurrency] [bytes]',
  );
  process.exit(treeA && treeB ? 0 : 1);
}

async function startSide(tree: string, name: string, payloads: Buffer[]) {
  const mod = (await import(`${tree}/tests/integration/imageCluster.ts`)) as ClusterModule;
  const cluster = await mod.ImageCluster.start({ name, managers: 3, workers: 3, startTimeoutMs: 120_000 });
  const agent = new Agent({ connections: 16, keepAliveTimeout: 30_000, pipelining: 1 });
  const leader = await cluster.leader();
  const procs = [...cluster.managers, ...cluster.workers];
  const role = (p: Proc) => (p === leader ? 'leader' : cluster.managers.includes(p) ? 'follower' : 'worker');
  const upload = async (n: number) => {
    const body = payloads[n % payloads.length]!;
    const res = await request(`${leader.url}/v1/images/pair-${randomUUID()}`, {
      method: 'PUT',
      body,
      headers: { 'content-type': 'image/png' },
      dispatcher: agent,
    });
    const text = await res.body.text();
    if (res.statusCode !== 201) throw new Error(`upload answered ${res.statusCode}: ${text.slice(0, 200)}`);
    return body.length;
  };
  const slice = async (concurrency: number, secs: number): Promise<Slice> => {
    const pids = procs.map((p) => p.child?.pid);
    const cpu0 = pids.map(cpuSeconds);
    const run = await drive(concurrency, secs, upload);
    const perUpload = pids.map((pid, i) => ((cpuSeconds(pid) - cpu0[i]!) * 1000) / run.ops);
    const mean = (r: string) => {
      const v = perUpload.filter((_, i) => role(procs[i]!) === r);
      return v.reduce((a, b) => a + b, 0) / v.length;
    };
    const cluster = perUpload.reduce((a, b) => a + b, 0);
    const ups = run.ops / run.seconds;
    return { ups, cluster, leader: mean('leader'), follower: mean('follower'), worker: mean('worker') };
  };
  return {
    name,
    upload,
    slice,
    close: async () => {
      await agent.close();
      await cluster.close();
    },
  };
}

const fmt = (s: Slice) =>
  `up/s ${s.ups.toFixed(1)}  cluster ${s.cluster.toFixed(2)}  leader ${s.leader.toFixed(2)}  ` +
  `follower ${s.follower.toFixed(2)}  worker ${s.worker.toFixed(2)}`;

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)]!;
}

async function main(): Promise<void> {
  const concurrency = Number(concArg);
  const secs = Number(secsArg);
  childrenFromBuild([treeA!, treeB!]);
  const { pngImage } = (await import(`${treeB}/tests/integration/imageCluster.ts`)) as ClusterModule;
  const payloads = Array.from({ length: 8 }, () => pngImage(Number(bytesArg)));
  const sides = [await startSide(treeA!, 'pair-a', payloads), await startSide(treeB!, 'pair-b', payloads)];
  const results: Slice[][] = [[], []];
  try {
    for (const side of sides) await drive(concurrency, WARMUP_SECS, side.upload);
    for (let i = 0; i < Number(slicesArg); i++) {
      for (const k of i % 2 === 0 ? [0, 1] : [1, 0]) {
        const s = await sides[k]!.slice(concurrency, secs);
        results[k]!.push(s);
        console.log(`${new Date().toISOString().slice(11, 19)} ${k === 0 ? 'A' : 'B'}  ${fmt(s)}`);
      }
    }
  } finally {
    for (const side of sides) await side.close();
  }
  for (const k of [0, 1]) {
    const r = results[k]!;
    const med: Slice = {
      ups: median(r.map((s) => s.ups)),
      cluster: median(r.map((s) => s.cluster)),
      leader: median(r.map((s) => s.leader)),
      follower: median(r.map((s) => s.follower)),
      worker: median(r.map((s) => s.worker)),
    };
    console.log(`${k === 0 ? 'A' : 'B'} (${k === 0 ? treeA : treeB}) median of ${r.length}:  ${fmt(med)}`);
  }
  const [a, b] = results as [Slice[], Slice[]];
  const lower = (key: 'leader' | 'cluster') =>
    a.filter((s, i) => b[i] !== undefined && b[i]![key] < s[key]).length;
  console.log(
    `B cheaper than A in ${lower('leader')} of ${a.length} pairs (leader), ${lower('cluster')} (cluster)`,
  );
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
