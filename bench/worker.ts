/**
 * Storage worker PUT throughput against the raw cost of the same durable writes.
 *
 *   npm run bench:worker            (BENCH_SECS=1 BENCH_ROUNDS=8 by default)
 *   BENCH_SIZES=1MiB BENCH_ROUNDS=12 npm run bench:worker   (one size, more rounds)
 *
 * One worker process on 127.0.0.1 (fresh temp folder, registered with an in-process stand-in
 * manager) takes PUTs of 100 KiB, 1 MiB and 8 MiB blobs at concurrency 1 and 8 through undici
 * keep-alive connections. Beside it, this process writes the same payloads directly: temp file,
 * write, fsync, close, rename into one of 256 folders (the worker's layout), fsync of the folder,
 * with the same concurrency. The raw write is O_DIRECT by default, one write of the whole payload,
 * as the worker writes its blobs; BENCH_RAW=buffered writes through the page cache instead, whose
 * cost on a virtual machine depends on how much of the guest's free memory the host has taken back
 * (docs/measurements.md, "bench:worker's raw side"): 1-1.4 ms of CPU per MiB in one round, 3.5-4.4
 * in the next. Both sides always write into new space (nothing is deleted until the end: freshly
 * deleted space writes faster, see ../shared/bench/README.md) and take turns in many short rounds,
 * each side in every place of the order in turn; each round's worker is compared with the same
 * round's raw side, and the spread of those ratios is printed beside the ratio of the sums.
 * Figures: MiB/s of each side, their ratio, and CPU time per blob of the process doing the writes
 * (the worker process, all threads; this process for the raw side), and the worker's context
 * switches per blob (all threads: how often it waits and is woken). PUTs carry the sha256 and the
 * CRC32C, as the manager sends them; the worker checks the CRC32C. A third side sends the same
 * PUTs to a bare node:http server (a child process) that only computes the body's CRC32C: the cost
 * of the transfer alone. `ceiling` is the best ratio a worker could reach if a PUT cost nothing but that
 * transfer followed by the raw side's fsync, rename and folder fsync.
 *
 * BENCH_BODY=forwarded sends each body as the leader forwards an upload (workerClient's
 * putBlobStreamed): 256 KiB slabs written one by one, each on a later turn of this process's event
 * loop, then the 36-byte checksum trailer, with no checksum header; BENCH_BODY=trailing sends the
 * same bytes in one buffer (the trailer protocol without the pacing). BENCH_BASE_TREE=<checkout of
 * another commit> starts a second worker from it beside this tree's and alternates the two run by
 * run: their CPU per blob compared under the same load (a shared machine's).
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, fsync, readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { CHILD_ENV, HEAP_FLAGS } from '../src/cli/localProcess.ts';
import { writeAllAt } from '../src/fileWrites.ts';
import { CLUSTER_SECRET_HEADER } from '../src/http/clusterAuth.ts';
import { CRC32C_HEADER, crc32cHex } from '../src/protocol/checksums.ts';
import {
  CHECKSUM_TRAILER_BYTES,
  CHECKSUMS_HEADER,
  encodeChecksumTrailer,
  TRAILING_CHECKSUMS,
} from '../src/protocol/checksumTrailer.ts';
import { SHA256_HEADER } from '../src/protocol/workerHeaders.ts';
import { createExclusive, DIRECT_ALIGN, pageAlignedBuffer } from '../src/storagenode/directWrites.ts';
import { startManagerStandIn } from '../tests/storagenode/managerStandIn.ts';
import { median } from './closedLoop.ts';
import { childrenFromBuild, childrenRunBuilt } from './fromBuild.ts';
import { cpuSeconds } from './processCpu.ts';
import { envConfiguredBench } from './usage.ts';

envConfiguredBench(`npm run bench:worker

One worker process takes PUTs of 100 KiB, 1 MiB and 8 MiB blobs at concurrency 1 and 8, beside
the raw durable write of the same payloads (temp file, fsync, rename, folder fsync) and a bare HTTP
server that only checksums the body; prints MiB/s of each side, the worker's share of raw and the
CPU per blob.

Environment: BENCH_SECS=1 (per side and round), BENCH_ROUNDS=8, BENCH_SIZES=100KiB,1MiB,8MiB (a subset),
BENCH_RAW=direct (the raw side's writes: O_DIRECT, or buffered through the page cache),
BENCH_CONCURRENCY=1,8, BENCH_WARMUP_SECS=10 (unmeasured PUTs to each worker first);
BENCH_BODY=buffer (one buffer, checksums in headers), trailing (one buffer ending in the checksum
trailer) or forwarded (256 KiB slabs one by one and the trailer, as the leader forwards an upload); BENCH_BASE_TREE=<another checkout> runs its
worker beside this one, alternated, as "base"; BENCH_PROFILE=1 profiles the worker
(BENCH_PROFILE_DIR, default prof/). Workers get the launcher's environment (MALLOC_ARENA_MAX=2
unless set) and run from dist/, built first in each tree (BENCH_FROM_SOURCE=1: from the source
through tsx).`);

const SECS = Number(process.env.BENCH_SECS ?? 1);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 8);
const WARMUP_SECS = Number(process.env.BENCH_WARMUP_SECS ?? 10);
/** Set BENCH_PROFILE=1 to have the worker write a V8 CPU profile to BENCH_PROFILE_DIR (or ./prof). */
const PROFILE = process.env.BENCH_PROFILE === '1';
const ALL_SIZES = [
  { label: '100 KiB', bytes: 100 * 1024 },
  { label: '1 MiB', bytes: 1024 * 1024 },
  { label: '8 MiB', bytes: 8 * 1024 * 1024 },
];
/** BENCH_SIZES: labels without spaces, comma-separated (e.g. `1MiB,8MiB`); default all. */
const SIZES = process.env.BENCH_SIZES
  ? ALL_SIZES.filter((s) => process.env.BENCH_SIZES!.split(',').includes(s.label.replace(' ', '')))
  : ALL_SIZES;
if (SIZES.length === 0)
  throw new Error(`BENCH_SIZES matches none of ${ALL_SIZES.map((s) => s.label.replace(' ', ''))}`);
const CONCURRENCY = (process.env.BENCH_CONCURRENCY ?? '1,8').split(',').map(Number);
const BODY = process.env.BENCH_BODY ?? 'buffer';
if (BODY !== 'buffer' && BODY !== 'forwarded' && BODY !== 'trailing') {
  throw new Error('BENCH_BODY is buffer, trailing or forwarded');
}
/** The leader's forwarding unit (SLAB_BYTES in src/manager/heldBodies.ts). */
const FORWARD_SLAB_BYTES = 256 * 1024;
/**
 * The raw side writes each payload with O_DIRECT in one write (then the same fsync, rename and folder
 * fsync), as the worker writes its blobs; BENCH_RAW=buffered through the page cache.
 */
const RAW_MODE = process.env.BENCH_RAW ?? 'direct';
if (RAW_MODE !== 'direct' && RAW_MODE !== 'buffered') throw new Error('BENCH_RAW is direct or buffered');
const RAW_DIRECT = RAW_MODE === 'direct';
const BASE_TREE = process.env.BENCH_BASE_TREE ? path.resolve(process.env.BENCH_BASE_TREE) : undefined;
const PAYLOADS_PER_SIZE = 8;
const SECRET = `bench-${randomBytes(8).toString('hex')}`;
const REPO = path.resolve(import.meta.dirname, '..');
const MiB = 1024 * 1024;

interface Payload {
  bytes: Buffer;
  /** The same bytes in page-aligned memory, for the raw side's direct writes. */
  aligned: Buffer;
  sha256: string;
  crc32c: string;
}

interface RunResult {
  bytes: number;
  ops: number;
  seconds: number;
  /** CPU seconds (user + system) of the process doing the writes: the worker, or this one for raw. */
  cpuSeconds: number;
  /** Context switches of that process's threads (a worker's only). */
  switches?: number;
  /** Milliseconds of each operation that finished, in order. */
  latencies: number[];
  /** Dirty plus Writeback page-cache KiB of the whole machine when the run began. */
  dirtyKiBBefore: number;
}

/** A copy of `bytes` in page-aligned memory, padded with zeros to whole pages of DIRECT_ALIGN. */
function pageAligned(bytes: Buffer): Buffer {
  const copy = pageAlignedBuffer(bytes.length).subarray(
    0,
    Math.ceil(bytes.length / DIRECT_ALIGN) * DIRECT_ALIGN,
  );
  bytes.copy(copy);
  return copy;
}

const payloads = new Map<number, Payload[]>(
  SIZES.map(({ bytes }) => [
    bytes,
    Array.from({ length: PAYLOADS_PER_SIZE }, () => {
      const b = randomBytes(bytes);
      return {
        bytes: b,
        aligned: pageAligned(b),
        sha256: createHash('sha256').update(b).digest('hex'),
        crc32c: crc32cHex(b),
      };
    }),
  ]),
);

/** Runs `conc` closed loops of `op` for `secs` seconds; counts only operations that finished. */
async function closedLoop(
  secs: number,
  conc: number,
  size: number,
  op: (seq: number) => Promise<void>,
): Promise<RunResult> {
  let seq = 0;
  let ops = 0;
  const latencies: number[] = [];
  const dirtyKiBBefore = dirtyKiB();
  const started = performance.now();
  const end = started + secs * 1000;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (performance.now() < end) {
        const t0 = performance.now();
        await op(seq++);
        latencies.push(performance.now() - t0);
        ops += 1;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { bytes: ops * size, ops, seconds, cpuSeconds: 0, latencies, dirtyKiBBefore };
}

// ---- raw side: what Node does for one durable blob, with nothing around it ----

let rawSeq = 0;
/** Milliseconds the raw side spent from its fsync to the end of its folder fsync, summed. */
let rawSyncMs = 0;
/**
 * The worker's layout (blobLayout.ts): 256 folders made up front, a blob's folder drawn from a hash
 * of its name, so both sides rename into folders of the same size and fsync folders as full.
 */
const RAW_FOLDERS = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
async function rawWrite(dir: string, payload: Payload): Promise<void> {
  const name = `r${rawSeq++}`;
  const tmp = path.join(dir, 'tmp', `${name}.tmp`);
  const folder = createHash('sha256').update(name).digest('hex').slice(0, 2);
  const final = path.join(dir, 'final', folder, name);
  let syncStarted: number;
  if (RAW_DIRECT) {
    const fd = await createExclusive(tmp, true);
    try {
      await writeAllAt(fd, [payload.aligned], payload.aligned.length, 0);
      syncStarted = performance.now();
      await new Promise<void>((resolve, reject) => fsync(fd, (err) => (err ? reject(err) : resolve())));
    } finally {
      closeSync(fd);
    }
  } else {
    const fh = await fs.open(tmp, 'wx');
    try {
      await fh.writeFile(payload.bytes);
      syncStarted = performance.now();
      await fh.sync();
    } finally {
      await fh.close();
    }
  }
  await fs.rename(tmp, final);
  const dfh = await fs.open(path.dirname(final), 'r');
  try {
    await dfh.sync();
  } finally {
    await dfh.close();
  }
  rawSyncMs += performance.now() - syncStarted;
}

/** Dirty and Writeback KiB of the machine's page cache (Linux), what a run may inherit from the last. */
function dirtyKiB(): number {
  try {
    const info = readFileSync('/proc/meminfo', 'utf8');
    let kib = 0;
    for (const m of info.matchAll(/^(?:Dirty|Writeback):\s+(\d+) kB/gm)) kib += Number(m[1]);
    return kib;
  } catch {
    return 0;
  }
}

const mibs = (run: RunResult) => run.bytes / MiB / run.seconds;
const pct = (x: number) => `${(x * 100).toFixed(0)}%`;

// ---- transfer side: the same PUTs to a bare node:http server that checksums the body and drops it ----

const BARE_HTTP_SERVER = `
const http = require('node:http');
const { crc32c } = require('@node-rs/crc32');
const server = http.createServer(async (req, res) => {
  let crc = 0;
  for await (const chunk of req) crc = crc32c(chunk, crc);
  res.writeHead(201, { 'content-type': 'application/json' }).end('{}');
});
server.listen(0, '127.0.0.1', () => console.log(server.address().port));
`;

async function startBareHttp(): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [...HEAP_FLAGS, '-e', BARE_HTTP_SERVER], {
    cwd: REPO,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const port = await new Promise<string>((resolve, reject) => {
    child.stdout!.once('data', (d: Buffer) => resolve(d.toString().trim()));
    child.once('exit', (code) => reject(new Error(`bare HTTP server exited with ${code}`)));
  });
  return { child, url: `http://127.0.0.1:${port}` };
}

// ---- worker side ----

function startWorker(tree: string, id: string, dataDir: string, managerUrl: string): ChildProcess {
  const profDir = process.env.BENCH_PROFILE_DIR ?? path.join(REPO, 'prof');
  const nodeArgs = [
    ...HEAP_FLAGS,
    ...(PROFILE ? ['--cpu-prof', '--cpu-prof-dir', profDir] : []),
    // As the launcher reads it (src/cli/localProcess.ts): `--perf-basic-prof` for perf, say.
    ...(process.env.IMGVAULT_CHILD_NODE_ARGS ?? '').split(' ').filter((a) => a !== ''),
  ];
  // As a deployment runs it (fromBuild.ts), unless BENCH_FROM_SOURCE=1.
  const entry = childrenRunBuilt() ? ['dist/workerMain.mjs'] : ['--import', 'tsx', 'src/cli/workerMain.ts'];
  return spawn(
    process.execPath,
    [
      ...nodeArgs,
      ...entry,
      '--id',
      id,
      '--listen',
      '127.0.0.1:0',
      '--data',
      dataDir,
      '--managers',
      managerUrl,
    ],
    {
      cwd: tree,
      env: { ...CHILD_ENV, ...process.env, IMGVAULT_CLUSTER_SECRET: SECRET, IMGVAULT_LOG_LEVEL: 'warn' },
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
}

/**
 * Context switches so far of every thread of `pid` (voluntary ones are the thread waiting: for
 * the socket, the disk, or work from the threadpool), from /proc (Linux); 0 once it is gone.
 */
function contextSwitches(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    let total = 0;
    for (const tid of readdirSync(`/proc/${pid}/task`)) {
      const status = readFileSync(`/proc/${pid}/task/${tid}/status`, 'utf8');
      for (const m of status.matchAll(/^(?:non)?voluntary_ctxt_switches:\s+(\d+)/gm)) total += Number(m[1]);
    }
    return total;
  } catch {
    return 0;
  }
}

/** A worker process under test and the URL it registered with. */
interface BenchWorker {
  label: string;
  child: ChildProcess;
  url: string;
}

async function registeredUrl(
  manager: Awaited<ReturnType<typeof startManagerStandIn>>,
  id: string,
  child: ChildProcess,
): Promise<string> {
  const deadline = performance.now() + 60_000;
  for (;;) {
    const found = manager.registrations.find((r) => r.header.id === id);
    if (found) return String(found.header.url);
    if (child.exitCode !== null)
      throw new Error(`worker ${id} exited with ${child.exitCode} before registering`);
    if (performance.now() > deadline) throw new Error(`worker ${id} did not register within 60 s`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A PUT body as the leader forwards an upload: slabs on separate turns, then the checksum trailer. */
async function* forwardedBody(p: Payload): AsyncGenerator<Uint8Array> {
  for (let at = 0; at < p.bytes.length; at += FORWARD_SLAB_BYTES) {
    if (at > 0) await nextTurn();
    yield p.bytes.subarray(at, at + FORWARD_SLAB_BYTES);
  }
  yield encodeChecksumTrailer({ sha256: p.sha256, crc32c: p.crc32c });
}

/** undici takes async iterables as bodies (docs/api/Dispatcher.md); its types lag behind. */
function putOptions(p: Payload): { body: Buffer | Readable; headers: Record<string, string> } {
  const common = { [CLUSTER_SECRET_HEADER]: SECRET, 'content-type': 'application/octet-stream' };
  if (BODY === 'buffer') {
    return { body: p.bytes, headers: { ...common, [SHA256_HEADER]: p.sha256, [CRC32C_HEADER]: p.crc32c } };
  }
  return {
    body:
      BODY === 'trailing'
        ? Buffer.concat([p.bytes, encodeChecksumTrailer({ sha256: p.sha256, crc32c: p.crc32c })])
        : (forwardedBody(p) as unknown as Readable),
    headers: {
      ...common,
      [CHECKSUMS_HEADER]: TRAILING_CHECKSUMS,
      'content-length': String(p.bytes.length + CHECKSUM_TRAILER_BYTES),
    },
  };
}

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((cell, i) => (i < 2 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!))).join('  '))
    .join('\n');
}

async function main(): Promise<void> {
  const root = await fs.mkdtemp(path.join(tmpdir(), 'imgvault-bench-worker-'));
  const rawDir = path.join(root, 'raw');
  await fs.mkdir(path.join(rawDir, 'tmp'), { recursive: true });
  await Promise.all(RAW_FOLDERS.map((f) => fs.mkdir(path.join(rawDir, 'final', f), { recursive: true })));
  const manager = await startManagerStandIn(SECRET);
  const trees = [{ label: 'worker', tree: REPO }, ...(BASE_TREE ? [{ label: 'base', tree: BASE_TREE }] : [])];
  const children = trees.map(({ label, tree }) =>
    startWorker(tree, `bench-${label}`, path.join(root, label), manager.url),
  );
  const bare = await startBareHttp();
  const agent = new Agent({ connections: Math.max(...CONCURRENCY), keepAliveTimeout: 60_000, pipelining: 1 });
  try {
    const workers: BenchWorker[] = [];
    for (const [i, { label }] of trees.entries()) {
      const child = children[i]!;
      workers.push({ label, child, url: await registeredUrl(manager, `bench-${label}`, child) });
    }
    let putSeq = 0;

    const workerRun = async (w: BenchWorker, size: number, conc: number, secs = SECS): Promise<RunResult> => {
      const list = payloads.get(size)!;
      const cpu0 = cpuSeconds(w.child.pid);
      const switches0 = contextSwitches(w.child.pid);
      const result = await closedLoop(secs, conc, size, async (seq) => {
        const p = list[seq % list.length]!;
        const res = await request(`${w.url}/blobs/b${putSeq++}`, {
          method: 'PUT',
          dispatcher: agent,
          ...putOptions(p),
        });
        const text = await res.body.text();
        if (res.statusCode !== 201) throw new Error(`PUT answered ${res.statusCode}: ${text}`);
      });
      return {
        ...result,
        cpuSeconds: cpuSeconds(w.child.pid) - cpu0,
        switches: contextSwitches(w.child.pid) - switches0,
      };
    };
    const bareRun = async (size: number, conc: number, secs = SECS): Promise<RunResult> => {
      const list = payloads.get(size)!;
      const cpu0 = cpuSeconds(bare.child.pid);
      const result = await closedLoop(secs, conc, size, async (seq) => {
        const res = await request(`${bare.url}/blobs/b${seq}`, {
          method: 'PUT',
          dispatcher: agent,
          body: putOptions(list[seq % list.length]!).body,
        });
        await res.body.dump();
        if (res.statusCode !== 201) throw new Error(`bare PUT answered ${res.statusCode}`);
      });
      return { ...result, cpuSeconds: cpuSeconds(bare.child.pid) - cpu0 };
    };
    const rawRun = async (size: number, conc: number, secs = SECS): Promise<RunResult> => {
      const list = payloads.get(size)!;
      const cpu0 = process.cpuUsage();
      const result = await closedLoop(secs, conc, size, (seq) => rawWrite(rawDir, list[seq % list.length]!));
      const cpu = process.cpuUsage(cpu0);
      return { ...result, cpuSeconds: (cpu.user + cpu.system) / 1e6 };
    };

    // Warm-up: JIT, connection set-up (and tsx's first compile, from the source). Not counted. A worker still compiles
    // its hot paths for seconds (V8's optimizing compiler), which a long-running one does not pay.
    const warmUpSize = SIZES[0]!.bytes;
    await rawRun(warmUpSize, 8, 0.5);
    for (const w of workers) await workerRun(w, warmUpSize, 8, WARMUP_SECS);
    await bareRun(warmUpSize, 8, 0.5);

    const rows: string[][] = [
      [
        'size',
        'conc',
        'raw MiB/s',
        'worker MiB/s',
        'worker/raw',
        'per round, median (range)',
        'raw p50 ms',
        'worker p50 ms',
        'worker blobs/s',
        'raw CPU ms/blob',
        'worker CPU ms/blob',
        'worker CPU ms/MiB',
        'HTTP-only MiB/s',
        'HTTP-only CPU ms/blob',
        'ceiling',
        'worker switches/blob',
        ...(BASE_TREE ? ['base/raw', 'base per round', 'base CPU ms/blob', 'base switches/blob'] : []),
      ],
    ];
    const summary: Record<string, unknown>[] = [];
    for (const { label, bytes } of SIZES) {
      for (const conc of CONCURRENCY) {
        const raw: RunResult[] = [];
        const byWorker: RunResult[][] = workers.map(() => []);
        const bareHttp: RunResult[] = [];
        rawSyncMs = 0;
        for (let round = 0; round < ROUNDS; round++) {
          // Every side in every place in turn (rotated, then the rotations reversed), so that no
          // side always writes first, or right after another.
          const sides = [-1, ...workers.keys()];
          const k = round % sides.length;
          const order = [...sides.slice(k), ...sides.slice(0, k)];
          if (Math.floor(round / sides.length) % 2 === 1) order.reverse();
          for (const side of order) {
            if (side < 0) raw.push(await rawRun(bytes, conc));
            else byWorker[side]!.push(await workerRun(workers[side]!, bytes, conc));
          }
          bareHttp.push(await bareRun(bytes, conc));
          const [rr, wr] = [raw.at(-1)!, byWorker[0]!.at(-1)!];
          process.stderr.write(
            `  ${label} c${conc} round ${round + 1} (${order.map((x) => (x < 0 ? 'raw' : workers[x]!.label)).join(', ')}): raw ${mibs(rr).toFixed(0)} MiB/s` +
              ` p50 ${median(rr.latencies).toFixed(2)} ms, worker ${mibs(wr).toFixed(0)} MiB/s` +
              ` p50 ${median(wr.latencies).toFixed(2)} ms, ${((mibs(wr) / mibs(rr)) * 100).toFixed(0)}%;` +
              ` CPU ms/blob raw ${((rr.cpuSeconds / rr.ops) * 1000).toFixed(2)}, worker ${((wr.cpuSeconds / wr.ops) * 1000).toFixed(2)};` +
              ` dirty KiB before raw ${rr.dirtyKiBBefore}, before worker ${wr.dirtyKiBBefore}\n`,
          );
        }
        // Each round's worker against the raw side of the same round: the two met the disk within
        // seconds of each other, so their ratio varies less with the machine's drift than a ratio
        // of sums over the whole cell does, and its spread says how far one figure can be trusted.
        const perRound = (runs: RunResult[]) => runs.map((wr, i) => mibs(wr) / mibs(raw[i]!));
        const roundRatios = perRound(byWorker[0]!);
        const baseRoundRatios = byWorker[1] ? perRound(byWorker[1]) : undefined;
        const spread = (xs: number[]) =>
          `${pct(median(xs))} (${pct(Math.min(...xs))}-${pct(Math.max(...xs))})`;
        const total = (rs: RunResult[]) => ({
          bytes: rs.reduce((a, r) => a + r.bytes, 0),
          ops: rs.reduce((a, r) => a + r.ops, 0),
          seconds: rs.reduce((a, r) => a + r.seconds, 0),
          cpu: rs.reduce((a, r) => a + r.cpuSeconds, 0),
          switches: rs.reduce((a, r) => a + (r.switches ?? 0), 0),
        });
        const r = total(raw);
        const rawP50 = median(raw.flatMap((x) => x.latencies));
        const workerP50 = median(byWorker[0]!.flatMap((x) => x.latencies));
        const [w, base] = byWorker.map(total) as [ReturnType<typeof total>, ReturnType<typeof total>?];
        const h = total(bareHttp);
        // A PUT cannot be answered before its body has arrived and then been made durable: per
        // blob, at best the transfer (HTTP-only) followed by the raw side's fsync, rename and
        // folder fsync. Latencies per blob at this concurrency: conc x seconds / blobs.
        const latency = (t: { ops: number; seconds: number }) => (conc * t.seconds * 1000) / t.ops;
        const ceiling = latency(r) / (latency(h) + rawSyncMs / r.ops);
        const rawMiBs = r.bytes / MiB / r.seconds;
        const workerMiBs = w.bytes / MiB / w.seconds;
        const ratio = workerMiBs / rawMiBs;
        rows.push([
          label,
          String(conc),
          rawMiBs.toFixed(1),
          workerMiBs.toFixed(1),
          `${(ratio * 100).toFixed(0)}%`,
          spread(roundRatios),
          rawP50.toFixed(2),
          workerP50.toFixed(2),
          (w.ops / w.seconds).toFixed(0),
          ((r.cpu / r.ops) * 1000).toFixed(2),
          ((w.cpu / w.ops) * 1000).toFixed(2),
          ((w.cpu / (w.bytes / MiB)) * 1000).toFixed(2),
          (h.bytes / MiB / h.seconds).toFixed(1),
          ((h.cpu / h.ops) * 1000).toFixed(2),
          `${(ceiling * 100).toFixed(0)}%`,
          (w.switches / w.ops).toFixed(1),
          ...(base
            ? [
                `${((base.bytes / MiB / base.seconds / rawMiBs) * 100).toFixed(0)}%`,
                spread(baseRoundRatios!),
                ((base.cpu / base.ops) * 1000).toFixed(2),
                (base.switches / base.ops).toFixed(1),
              ]
            : []),
        ]);
        summary.push({
          bench: 'worker-put',
          size: bytes,
          conc,
          rawMiBs,
          workerMiBs,
          ratio,
          roundRatios,
          rawP50Ms: rawP50,
          workerP50Ms: workerP50,
          rawCpuMsPerBlob: (r.cpu / r.ops) * 1000,
          workerCpuMsPerBlob: (w.cpu / w.ops) * 1000,
          workerCpuMsPerMiB: (w.cpu / (w.bytes / MiB)) * 1000,
          rawCpuMsPerMiB: (r.cpu / (r.bytes / MiB)) * 1000,
          httpOnlyMiBs: h.bytes / MiB / h.seconds,
          httpOnlyCpuMsPerBlob: (h.cpu / h.ops) * 1000,
          ceiling,
          body: BODY,
          raw: RAW_MODE,
          workerSwitchesPerBlob: w.switches / w.ops,
          ...(base
            ? {
                baseRatio: base.bytes / MiB / base.seconds / rawMiBs,
                baseRoundRatios,
                baseCpuMsPerBlob: (base.cpu / base.ops) * 1000,
                baseSwitchesPerBlob: base.switches / base.ops,
              }
            : {}),
        });
        process.stderr.write(
          `  ${label} c${conc}: raw ${rawMiBs.toFixed(1)} MiB/s, worker ${workerMiBs.toFixed(1)} MiB/s\n`,
        );
      }
    }
    console.log(
      `\nworker PUT vs raw write+fsync+rename+dir fsync (raw ${RAW_MODE}, ${ROUNDS} x ${SECS} s per side and cell, ${BODY} bodies)\n`,
    );
    console.log(table(rows));
    const oneMiB = summary
      .filter((s) => s.size === MiB)
      .map(
        (s) =>
          `c${s.conc} ${pct(s.ratio as number)} (per round: median ${pct(median(s.roundRatios as number[]))}, ` +
          `${(s.roundRatios as number[]).filter((x) => x >= 0.8).length} of ${(s.roundRatios as number[]).length} rounds at or above 80%)`,
      );
    console.log(`\ntarget: worker >= 80% of raw for 1 MiB blobs -> ${oneMiB.join(', ')}`);
    const perMiB = summary
      .filter((s) => s.size === MiB)
      .map(
        (s) =>
          `c${s.conc} worker ${(s.workerCpuMsPerMiB as number).toFixed(2)} ms, raw ${(s.rawCpuMsPerMiB as number).toFixed(2)} ms`,
      );
    if (perMiB.length > 0) console.log(`CPU per MiB written, 1 MiB blobs -> ${perMiB.join('; ')}`);
    for (const s of summary) console.log(JSON.stringify(s));
  } finally {
    await agent.close();
    bare.child.kill('SIGTERM');
    for (const child of children) {
      child.kill('SIGTERM');
      await new Promise((r) => (child.exitCode !== null ? r(null) : child.once('exit', r)));
    }
    await manager.close();
    await fs.rm(root, { recursive: true, force: true });
  }
}

childrenFromBuild([REPO, ...(BASE_TREE ? [BASE_TREE] : [])]);
await main();
