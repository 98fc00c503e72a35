/**
 * Repair after a worker loss, on an embedded cluster of real processes.
 *
 *   npm run bench:repair       (BENCH_OBJECTS=2000 BENCH_SIZE_KIB=256 BENCH_DOWN_MS=2000 by default)
 *
 * Starts 3 managers and 4 workers (one zone each) on 127.0.0.1, uploads BENCH_OBJECTS PNG images
 * of BENCH_SIZE_KIB at concurrency 8, then kills one worker with SIGKILL and measures, from the
 * leader's point of view: detection (kill -> committed down verdict, bounded below by
 * --down-after-ms), repair (down verdict -> every object back at two up replicas), the repair
 * rate in objects/s and MiB/s, and the leader's repair duration histogram (mean per repair).
 * The floor beside it: the same blobs copied between two folders of this disk by one process, with
 * a worker's durable steps, from sources in the page cache and from sources on the disk (a holder's
 * blobs, written with O_DIRECT, are read from the disk).
 * Then it restarts the worker and measures rejoin reconciliation (restart -> every object at
 * exactly two replicas again, the excess copies removed).
 *
 * CPU is printed per repaired object, for the whole cluster and per process. To profile the repair
 * alone: IMGVAULT_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=prof" BENCH_MARKS=1 prints the kill
 * and repaired instants on the monotonic clock (µs), the time base of the profiles' samples.
 */

import { randomBytes } from 'node:crypto';
import { closeSync } from 'node:fs';
import { mkdir, mkdtemp, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { fsyncPath } from '../src/fileWrites.ts';
import {
  AlignedSlabs,
  createExclusive,
  directWritesWork,
  writeDirect,
} from '../src/storagenode/directWrites.ts';
import { ImageCluster, pngImage } from '../tests/integration/imageCluster.ts';
import { childrenFromBuild } from './fromBuild.ts';
import { cpuSeconds } from './processCpu.ts';
import { envConfiguredBench } from './usage.ts';

envConfiguredBench(`npm run bench:repair

Uploads BENCH_OBJECTS PNG images of BENCH_SIZE_KIB to an embedded cluster (3 managers, 4 workers),
kills a worker and prints detection, repair and rejoin times, the repair rate and the CPU per
repaired object of the cluster and of each process.

Environment: BENCH_OBJECTS=2000, BENCH_SIZE_KIB=256, BENCH_DOWN_MS=2000 (the managers'
--down-after-ms); BENCH_MARKS=1 prints the kill and repaired instants (monotonic µs);
IMGVAULT_CHILD_NODE_ARGS="--cpu-prof --cpu-prof-dir=prof" profiles every cluster process.`);

const OBJECTS = Number(process.env.BENCH_OBJECTS ?? 2_000);
const SIZE = Number(process.env.BENCH_SIZE_KIB ?? 256) * 1024;
const DOWN_MS = Number(process.env.BENCH_DOWN_MS ?? 2_000);
const MiB = 1024 * 1024;

interface NodeJson {
  id: string;
  tableState: string;
  stateSince: string;
  stored: { objects: number };
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
  return (await res.json()) as T;
}

async function metric(url: string, series: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}

/**
 * Probes every `everyMs` until `probe` answers. Each probe of the node table is a linearizable read
 * (a ReadIndex round to the followers): polling faster than needed loads the cluster being measured.
 */
async function poll<T>(
  what: string,
  probe: () => Promise<T | null>,
  timeoutMs: number,
  everyMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe().catch(() => null);
    if (v !== null) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

/**
 * The floor under repair: the same number of blobs of the same size copied between two folders
 * on this disk with the durability a worker owes a blob (read, write, fsync, rename, folder fsync),
 * 8 at a time (the repair loop runs 32). Sources are written first, untimed, into new space:
 * `warm` through the page cache, so the copy reads them from memory; `cold` with O_DIRECT, as a
 * worker writes its blobs (directWrites.ts), so the copy reads them from the disk as a holder does.
 */
async function rawCopy(
  count: number,
  size: number,
  sources: 'warm' | 'cold',
): Promise<{ mibs: number; cpuMsPerBlob: number } | null> {
  const root = await mkdtemp(join(tmpdir(), 'imgvault-bench-rawcopy-'));
  try {
    const from = join(root, 'from');
    const to = join(root, 'to');
    await mkdir(from);
    await mkdir(to);
    const payload = randomBytes(size);
    const slabs = new AlignedSlabs();
    if (sources === 'cold' && !(await directWritesWork(join(root, 'probe'), slabs))) return null;
    for (let i = 0; i < count; i++) {
      const file = join(from, `b${i}`);
      if (sources === 'warm') {
        await writeFile(file, payload);
        continue;
      }
      const opened = createExclusive(file, true);
      await writeDirect(
        opened,
        file,
        (async function* () {
          yield payload;
        })(),
        slabs,
      );
      closeSync(await opened);
      await fsyncPath(file);
    }
    const dir = await open(to, 'r');
    let next = 0;
    const started = performance.now();
    const cpu0 = process.cpuUsage();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        for (let i = next++; i < count; i = next++) {
          const bytes = await readFile(join(from, `b${i}`));
          const tmp = join(to, `b${i}.tmp`);
          const fh = await open(tmp, 'w');
          await fh.writeFile(bytes);
          await fh.sync();
          await fh.close();
          await rename(tmp, join(to, `b${i}`));
          await dir.sync();
        }
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    const cpu = process.cpuUsage(cpu0);
    await dir.close();
    return { mibs: (count * size) / MiB / seconds, cpuMsPerBlob: (cpu.user + cpu.system) / 1000 / count };
  } finally {
    await rm(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const cluster = await ImageCluster.start({
    name: 'imgvault-bench-repair',
    managers: 3,
    workers: 4,
    managerArgs: [
      '--suspect-after-ms',
      String(Math.min(1_000, DOWN_MS / 2)),
      '--down-after-ms',
      String(DOWN_MS),
      '--heartbeat-interval-ms',
      '200',
      '--usage-summary-ms',
      '1000',
      '--orphan-grace-ms',
      '600000',
    ],
  });
  const agent = new Agent({ connections: 8, keepAliveTimeout: 30_000 });
  try {
    let leader = await cluster.leader();
    const images = Array.from({ length: 8 }, () => pngImage(SIZE));
    let next = 0;
    const t0 = performance.now();
    await Promise.all(
      Array.from({ length: 8 }, async () => {
        while (next < OBJECTS) {
          const i = next++;
          const res = await request(`${leader.url}/v1/images/bench-${i}`, {
            method: 'PUT',
            body: images[i % images.length]!,
            dispatcher: agent,
          });
          await res.body.dump();
          // Same bytes under several ids is fine: each id is its own object.
          if (res.statusCode !== 201) throw new Error(`upload ${i} answered ${res.statusCode}`);
        }
      }),
    );
    console.log(
      `uploaded ${OBJECTS} x ${SIZE / 1024} KiB in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );

    const nodes = async () =>
      new Map(
        (await getJson<{ nodes: NodeJson[] }>(`${(await cluster.leader()).url}/v1/cluster/nodes`)).nodes.map(
          (n) => [n.id, n],
        ),
      );
    const victim = cluster.worker('w1');
    const held = (await nodes()).get('w1')?.stored.objects ?? 0;
    const clusterCpu = () =>
      [...cluster.managers, ...cluster.workers].reduce<number>((sum, p) => sum + cpuSeconds(p.child?.pid), 0);
    const leaderAtKill = await cluster.leader();
    const killedAt = Date.now();
    if (process.env.BENCH_MARKS) console.log(`MARK kill ${process.hrtime.bigint() / 1000n}`);
    await cluster.killWorker(victim);
    const downAt = await poll(
      'down verdict',
      async () => {
        const n = (await nodes()).get('w1');
        return n?.tableState === 'down' ? Date.parse(n.stateSince) : null;
      },
      DOWN_MS + 30_000,
      50,
    );
    // From the verdict (seen within a poll of 50 ms), so the quiet wait before it is not counted.
    const cpuAtVerdict = clusterCpu();
    const perProcessAtVerdict = new Map(
      [...cluster.managers, ...cluster.workers].map((p) => [p, cpuSeconds(p.child?.pid)]),
    );
    await poll(
      'repair',
      async () => ((await nodes()).get('w1')?.stored.objects === 0 ? true : null),
      600_000,
      100,
    );
    const repairedAt = Date.now();
    if (process.env.BENCH_MARKS) console.log(`MARK repaired ${process.hrtime.bigint() / 1000n}`);
    const repairCpu = clusterCpu() - cpuAtVerdict;
    const perProcess = [...perProcessAtVerdict].map(
      ([p, at]) =>
        `${p.id}${p === leaderAtKill ? ' (leader)' : ''} ${(((cpuSeconds(p.child?.pid) - at) * 1000) / Math.max(1, held)).toFixed(1)}`,
    );
    leader = await cluster.leader();
    const seconds = (repairedAt - downAt) / 1000;
    const sum = await metric(leader.url, 'imgvault_repair_duration_seconds_sum');
    const count = await metric(leader.url, 'imgvault_repair_duration_seconds_count');
    console.log(`worker w1 held ${held} objects (${((held * SIZE) / MiB).toFixed(1)} MiB)`);
    console.log(`detection: ${downAt - killedAt} ms (down timeout ${DOWN_MS} ms)`);
    console.log(
      `cluster CPU from the down verdict until repaired: ${repairCpu.toFixed(1)} s, ` +
        `${((repairCpu * 1000) / Math.max(1, held)).toFixed(1)} ms per repaired object (all processes)`,
    );
    console.log(`  ms per repaired object by process: ${perProcess.join(', ')}`);
    console.log(
      `repair: ${seconds.toFixed(2)} s after the verdict, ${(held / seconds).toFixed(0)} objects/s, ` +
        `${((held * SIZE) / MiB / seconds).toFixed(1)} MiB/s; mean per repair ${((sum / Math.max(1, count)) * 1000).toFixed(1)} ms ` +
        `(${count} repairs, ${await metric(leader.url, 'imgvault_repair_fallbacks_total')} fallbacks)`,
    );

    const repairMiBs = (held * SIZE) / MiB / seconds;
    const repairCpuMs = (repairCpu * 1000) / Math.max(1, held);
    for (const sources of ['warm', 'cold'] as const) {
      const raw = await rawCopy(held, SIZE, sources);
      if (raw === null) {
        console.log('raw copy with sources on the disk: skipped, this filesystem refuses O_DIRECT');
        continue;
      }
      console.log(
        `raw copy of the same ${held} blobs between two folders, sources ${sources === 'warm' ? 'in the page cache' : 'on the disk (written with O_DIRECT)'} ` +
          `(fsync, rename, folder fsync; 8 at a time): ${raw.mibs.toFixed(1)} MiB/s, ${raw.cpuMsPerBlob.toFixed(2)} ms CPU per blob; ` +
          `repair ran at ${((repairMiBs / raw.mibs) * 100).toFixed(0)}% of it, ${(repairCpuMs / raw.cpuMsPerBlob).toFixed(2)}x its CPU`,
      );
    }

    const restartAt = Date.now();
    cluster.spawnWorker(victim);
    await poll(
      'rejoin reconciled',
      async () => {
        const listed = (await nodes()).get('w1')?.stored.objects ?? 0;
        const under = await metric(
          (await cluster.leader()).url,
          'imgvault_reconcile_decisions_total{decision="excessRemoved"}',
        );
        return listed === held && under >= held ? true : null;
      },
      600_000,
      200,
    );
    console.log(
      `rejoin: ${((Date.now() - restartAt) / 1000).toFixed(2)} s from restart until its ${held} copies were re-adopted ` +
        'and the replacements removed (process start included)',
    );
  } finally {
    await agent.close();
    await cluster.close();
  }
}

childrenFromBuild();
main().catch((err) => {
  console.error(err);
  process.exit(1);
});
