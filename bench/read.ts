/**
 * Whole-image GETs from an embedded cluster, through the leader and through a follower.
 *
 *   npm run bench:read        (BENCH_SECS=4 BENCH_ROUNDS=2 BENCH_OBJECTS=200 by default)
 *
 * Starts 3 managers and 3 workers as child processes (fresh temp folder, free ports), uploads
 * BENCH_OBJECTS distinct 1 MiB PNG images, then GETs them back at concurrency 1 and 8 through
 * undici keep-alive connections, BENCH_ROUNDS runs of BENCH_SECS each per cell, alternating leader
 * and follower, and the same as direct reads (`?direct=1`: the manager's signed link is followed to
 * the worker, which sends the bytes; BENCH_DIRECT=0 leaves them out). Every body is compared byte for byte with what was uploaded. Printed: GETs/s,
 * p50/p99 latency, CPU time per GET of each process (user + system, all threads), of the whole
 * cluster and of the bench's own client (it shares the cores), and, when ../shared/bench/swift-bench.sh ran on this machine, the ratio to Swift's GET
 * of 1 MiB at the same concurrency (run them back to back: see bench/swiftAnchor.ts). Then, at
 * concurrency 1, where a GET's time goes: the record alone (`/meta`: a ReadIndex round and a table
 * read) and a worker's GET of the blob alone, beside the whole GET through the leader.
 *
 * npm runs this client with the children's heap flags (HEAP_FLAGS, src/cli/localProcess.ts): with
 * V8's default limits the 1 MiB bodies it receives set off a mark-compact every few GETs, which
 * ran beside the cluster on the same two cores and inside the GETs being timed (docs/measurements.md).
 */

import { randomUUID } from 'node:crypto';
import { type Agent, type Dispatcher, request } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../src/http/clusterAuth.ts';
import { type ImageCluster, type ManagerProc, pngImage } from '../tests/integration/imageCluster.ts';
import { combine, drive, percentile, type RunResult } from './closedLoop.ts';
import { childrenFromBuild } from './fromBuild.ts';
import { startImageBenchCluster } from './imageBenchCluster.ts';
import { ratioToSwift, swiftCell } from './swiftAnchor.ts';

if (process.argv.includes('--help') || process.argv.includes('-h')) {
  console.log(`npm run bench:read [-- --help]

Uploads BENCH_OBJECTS 1 MiB PNG images to an embedded cluster (3 managers, 3 workers), then GETs
them back through the leader and through a follower, alternating, proxied by the manager and as
direct reads (?direct=1: a redirect to a worker's signed link), and prints GETs/s, p50/p99 ms,
the CPU per GET of each process, of the cluster and of this client, the ratio to Swift's GET when
../shared/bench/swift-bench.sh ran on this machine, and where a GET's time goes at concurrency 1.

Environment: BENCH_SECS=4, BENCH_ROUNDS=2, BENCH_OBJECTS=200, BENCH_CONCURRENCY=1,8,
BENCH_DIRECT=1 (0: no direct reads);
IMGVAULT_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=prof" profiles every cluster process;
BENCH_FROM_SOURCE=1 starts the cluster from the source through tsx, not from dist/ (built first).`);
  process.exit(0);
}

const SECS = Number(process.env.BENCH_SECS ?? 4);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
const OBJECTS = Number(process.env.BENCH_OBJECTS ?? 200);
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,8').split(',').map(Number);
const DIRECT = process.env.BENCH_DIRECT !== '0';
const SIZE = 1024 * 1024;
const PAYLOADS = 8;

/**
 * Whether a body is `expected`, compared chunk by chunk as it arrives: gathering it into one buffer
 * first cost this client a 1 MiB allocation per GET, and its garbage collections (which run beside
 * the cluster on the same cores, and inside the GET being timed) lengthened the tail it measures.
 */
async function bodyEquals(body: AsyncIterable<Uint8Array>, expected: Buffer): Promise<boolean> {
  let at = 0;
  let same = true;
  for await (const chunk of body) {
    const end = at + chunk.byteLength;
    if (same && (end > expected.length || expected.compare(chunk, 0, chunk.byteLength, at, end) !== 0))
      same = false;
    at = end;
  }
  return same && at === expected.length;
}

/** p50 at concurrency 1 of the parts of a GET: the record alone, a worker's GET alone, the whole. */
async function whereTheTimeGoes(
  cluster: ImageCluster,
  leader: ManagerProc,
  agent: Agent,
  ids: string[],
  whole: (n: number) => Promise<void>,
): Promise<void> {
  const sample = ids.slice(0, 50);
  const holder = new Map<string, string>();
  for (const id of sample) {
    const res = await request(`${leader.url}/v1/images/${id}/meta`, { dispatcher: agent });
    const meta = (await res.body.json()) as { replicas: string[] };
    const w = cluster.workers.find((x) => x.id === meta.replicas[0]);
    if (w) holder.set(id, w.url);
  }
  const parts: [string, (n: number) => Promise<void>][] = [
    [
      'record only (GET /meta via the leader: ReadIndex + table read)',
      async (n) => {
        const res = await request(`${leader.url}/v1/images/${sample[n % sample.length]}/meta`, {
          dispatcher: agent,
        });
        await res.body.dump();
      },
    ],
    [
      "a worker's GET alone (checked by the worker)",
      async (n) => {
        const id = sample[n % sample.length]!;
        const res = await request(`${holder.get(id)}/blobs/${id}`, {
          dispatcher: agent,
          headers: { [CLUSTER_SECRET_HEADER]: cluster.secret },
        });
        const body = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode !== 200 || body.length !== SIZE)
          throw new Error(`worker GET answered ${res.statusCode}`);
      },
    ],
    ['the whole GET via the leader', whole],
  ];
  console.log('\nwhere a GET of 1 MiB goes, concurrency 1:');
  for (const [what, op] of parts) {
    const r = await drive(1, SECS, op);
    const sorted = r.latenciesMs.sort((a, b) => a - b);
    console.log(
      `  ${what}: p50 ${percentile(sorted, 50).toFixed(2)} ms, ${(r.ops / r.seconds).toFixed(0)}/s`,
    );
  }
}

/** One upload, to whichever manager leads now: a leader change on a busy machine is waited out. */
let knownLeader: ManagerProc | undefined;
async function upload(cluster: ImageCluster, agent: Agent, id: string, body: Buffer): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    knownLeader ??= await cluster.leader();
    const leader = knownLeader;
    const res = await request(`${leader.url}/v1/images/${id}`, {
      method: 'PUT',
      body,
      headers: { 'content-type': 'image/png' },
      dispatcher: agent,
    });
    const text = await res.body.text();
    if (res.statusCode === 201) return;
    if (!(res.statusCode === 307 || res.statusCode === 503) || attempt === 10)
      throw new Error(`upload answered ${res.statusCode}: ${text.slice(0, 200)}`);
    if (knownLeader === leader) knownLeader = undefined;
    await new Promise((r) => setTimeout(r, 200 * attempt));
  }
}

async function main(): Promise<void> {
  console.log(`bench:read: starting 3 managers and 3 workers (${ROUNDS} x ${SECS} s per cell)...`);
  const bench = await startImageBenchCluster('imgvault-bench-read');
  const { cluster, agent } = bench;
  try {
    const payloads = Array.from({ length: PAYLOADS }, () => pngImage(SIZE));
    const ids = Array.from({ length: OBJECTS }, () => `bench-read-${randomUUID()}`);
    const payloadOf = (i: number) => payloads[i % PAYLOADS]!;
    process.stderr.write(`uploading ${OBJECTS} images of 1 MiB...\n`);
    await Promise.all(
      Array.from({ length: 8 }, async (_, lane) => {
        for (let i = lane; i < ids.length; i += 8) await upload(cluster, agent, ids[i]!, payloadOf(i));
      }),
    );
    // Asked after the uploads: on a loaded machine the leadership may have moved during them.
    const leader = await cluster.leader();
    const follower = (await cluster.followers())[0]!;
    const check = async (i: number, res: Dispatcher.ResponseData) => {
      if (res.statusCode !== 200)
        throw new Error(`GET answered ${res.statusCode}: ${(await res.body.text()).slice(0, 200)}`);
      if (!(await bodyEquals(res.body, payloadOf(i))))
        throw new Error(`GET of ${ids[i]} returned other bytes`);
    };
    const get = (via: ManagerProc) => async (n: number) => {
      const i = (n * 7919) % ids.length;
      await check(i, await request(`${via.url}/v1/images/${ids[i]}`, { dispatcher: agent }));
    };
    // ?direct=1: the manager answers with a signed link to a worker, which sends the bytes.
    const getDirect = (via: ManagerProc) => async (n: number) => {
      const i = (n * 7919) % ids.length;
      const link = await request(`${via.url}/v1/images/${ids[i]}?direct=1`, { dispatcher: agent });
      await link.body.dump();
      const location = link.headers.location;
      if (link.statusCode !== 307 || typeof location !== 'string')
        throw new Error(`GET ?direct=1 answered ${link.statusCode}`);
      await check(i, await request(location, { dispatcher: agent }));
    };
    const modes = DIRECT ? [false, true] : [false];
    const procs = [...cluster.managers, ...cluster.workers];
    // The bench itself last: it shares the cores, and its receiving and comparing of every body is
    // CPU the cluster cannot use.
    const pids = [...procs.map((p) => p.child?.pid), process.pid];
    await drive(8, 1, get(leader), pids); // warm-up: connections, JIT
    await drive(8, 1, get(follower), pids);
    if (DIRECT) await drive(8, 1, getDirect(leader), pids);
    const rows: string[][] = [];
    for (const concurrency of CONCURRENCY) {
      const cells = modes.flatMap((direct) => [
        { via: leader, direct, runs: [] as RunResult[] },
        { via: follower, direct, runs: [] as RunResult[] },
      ]);
      for (let round = 0; round < ROUNDS; round++) {
        const order = round % 2 === 0 ? cells : [...cells].reverse();
        for (const cell of order) {
          const op = cell.direct ? getDirect(cell.via) : get(cell.via);
          cell.runs.push(await drive(concurrency, SECS, op, pids));
        }
      }
      const swift = swiftCell('swift GET 1MiB', concurrency);
      for (const { via, direct, runs } of cells) {
        const r = combine(runs);
        const sorted = r.latenciesMs.sort((a, b) => a - b);
        const perSec = r.ops / r.seconds;
        const msPerGet = (seconds: number) => ((seconds * 1000) / r.ops).toFixed(2);
        const perProc = procs.map((p, i) => `${p.id} ${msPerGet(r.cpu[i]!)}`).join(' ');
        const total = r.cpu.slice(0, procs.length).reduce((a, b) => a + b, 0);
        rows.push([
          `${direct ? 'direct ' : ''}${via === leader ? 'leader' : 'follower'} ${via.id}`,
          String(concurrency),
          String(r.ops),
          perSec.toFixed(1),
          percentile(sorted, 50).toFixed(1),
          percentile(sorted, 99).toFixed(1),
          ((total * 1000) / r.ops).toFixed(2),
          swift ? `${swift.objPerSec} (p50 ${swift.p50Ms})` : '-',
          ratioToSwift(perSec, swift),
          msPerGet(r.cpu[procs.length]!),
          perProc,
        ]);
      }
    }
    const header = [
      'via',
      'conc',
      'GETs',
      'GETs/s',
      'p50 ms',
      'p99 ms',
      'CPU ms/GET',
      'Swift GET/s',
      'vs Swift',
      'client CPU ms/GET',
      'CPU ms/GET per process',
    ];
    const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
    const line = (cells: string[]) =>
      cells.map((c, i) => (i === cells.length - 1 ? c : c.padStart(widths[i]!))).join('  ');
    console.log(
      `\nGET of 1 MiB images (${ROUNDS} x ${SECS} s per cell, every body compared with what was uploaded)`,
    );
    console.log(line(header));
    for (const r of rows) console.log(line(r));
    console.log(
      'target: >= 1.5x Swift GET at concurrency 1 and 8, through the leader and through a follower.',
    );
    await whereTheTimeGoes(cluster, leader, agent, ids, get(leader));
  } finally {
    await bench.close();
  }
}

childrenFromBuild();
main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
