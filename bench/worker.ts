/**
 * Storage worker PUT throughput against the raw cost of the same durable writes.
 *
 *   npm run bench:worker            (BENCH_SECS=2 BENCH_ROUNDS=2 by default)
 *   BENCH_SIZES=1MiB BENCH_SECS=5 BENCH_ROUNDS=4 npm run bench:worker   (one size, steadier figures)
 *
 * One worker process on 127.0.0.1 (fresh temp folder, registered with an in-process stand-in
 * manager) takes PUTs of 100 KiB, 1 MiB and 8 MiB blobs at concurrency 1 and 8 through undici
 * keep-alive connections. Beside it, this process writes the same payloads directly: temp file,
 * write, fsync, close, rename, fsync of the folder, with the same concurrency. Both sides always
 * write into new space (nothing is deleted until the end: freshly deleted space writes faster,
 * see ../shared/bench/README.md) and alternate run by run, so neither gets the better disk.
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
import { readdirSync, readFileSync } from 'node:fs';
import fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { Agent, request } from 'undici';
import { CHILD_ENV, HEAP_FLAGS } from '../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../src/http/clusterAuth.ts';
import { CRC32C_HEADER, crc32cHex } from '../src/protocol/checksums.ts';
import {
  CHECKSUM_TRAILER_BYTES,
  CHECKSUMS_HEADER,
  encodeChecksumTrailer,
  TRAILING_CHECKSUMS,
} from '../src/protocol/checksumTrailer.ts';
import { SHA256_HEADER } from '../src/protocol/workerHeaders.ts';
import { startManagerStandIn } from '../tests/storagenode/managerStandIn.ts';
import { cpuSeconds } from './processCpu.ts';
import { envConfiguredBench } from './usage.ts';

envConfiguredBench(`npm run bench:worker

One worker process takes PUTs of 100 KiB, 1 MiB and 8 MiB blobs at concurrency 1 and 8, beside
the raw durable write of the same payloads (temp file, fsync, rename, folder fsync) and a bare HTTP
server that only checksums the body; prints MiB/s of each side, the worker's share of raw and the
CPU per blob.

Environment: BENCH_SECS=2, BENCH_ROUNDS=2, BENCH_SIZES=100KiB,1MiB,8MiB (a subset),
BENCH_CONCURRENCY=1,8, BENCH_WARMUP_SECS=10 (unmeasured PUTs to each worker first);
BENCH_BODY=buffer (one buffer, checksums in headers), trailing (one buffer ending in the checksum
trailer) or forwarded (256 KiB slabs one by one and the trailer, as the leader forwards an upload); BENCH_BASE_TREE=<another checkout> runs its
worker beside this one, alternated, as "base"; BENCH_PROFILE=1 profiles the worker
(BENCH_PROFILE_DIR, default prof/). Workers get the launcher's environment (MALLOC_ARENA_MAX=2
unless set).`);

const SECS = Number(process.env.BENCH_SECS ?? 2);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 2);
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
const BASE_TREE = process.env.BENCH_BASE_TREE ? path.resolve(process.env.BENCH_BASE_TREE) : undefined;
const PAYLOADS_PER_SIZE = 8;
const SECRET = `bench-${randomBytes(8).toString('hex')}`;
const REPO = path.resolve(import.meta.dirname, '..');
const MiB = 1024 * 1024;

interface Payload {
  bytes: Buffer;
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
}

const payloads = new Map<number, Payload[]>(
  SIZES.map(({ bytes }) => [
    bytes,
    Array.from({ length: PAYLOADS_PER_SIZE }, () => {
      const b = randomBytes(bytes);
      return { bytes: b, sha256: createHash('sha256').update(b).digest('hex'), crc32c: crc32cHex(b) };
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
  const started = performance.now();
  const end = started + secs * 1000;
  await Promise.all(
    Array.from({ length: conc }, async () => {
      while (performance.now() < end) {
        await op(seq++);
        ops += 1;
      }
    }),
  );
  const seconds = (performance.now() - started) / 1000;
  return { bytes: ops * size, ops, seconds, cpuSeconds: 0 };
}

// ---- raw side: what Node does for one durable blob, with nothing around it ----

let rawSeq = 0;
/** Milliseconds the raw side spent from its fsync to the end of its folder fsync, summed. */
let rawSyncMs = 0;
async function rawWrite(dir: string, payload: Payload): Promise<void> {
  const name = `r${rawSeq++}`;
  const tmp = path.join(dir, 'tmp', `${name}.tmp`);
  const final = path.join(dir, 'final', name);
  const fh = await fs.open(tmp, 'wx');
  let syncStarted: number;
  try {
    await fh.writeFile(payload.bytes);
    syncStarted = performance.now();
    await fh.sync();
  } finally {
    await fh.close();
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
  return spawn(
    process.execPath,
    [
      ...nodeArgs,
      '--import',
      'tsx',
      'src/cli/workerMain.ts',
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
  await fs.mkdir(path.join(rawDir, 'final'), { recursive: true });
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

    // Warm-up: JIT, tsx's first compile, connection set-up. Not counted. A worker still compiles
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
        'worker blobs/s',
        'raw CPU ms/blob',
        'worker CPU ms/blob',
        'worker CPU ms/MiB',
        'HTTP-only MiB/s',
        'HTTP-only CPU ms/blob',
        'ceiling',
        'worker switches/blob',
        ...(BASE_TREE ? ['base/raw', 'base CPU ms/blob', 'base switches/blob'] : []),
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
          // Alternate who goes first, so no side always writes right after another.
          const sides = [-1, ...workers.keys()];
          for (const side of round % 2 === 0 ? sides : sides.reverse()) {
            if (side < 0) raw.push(await rawRun(bytes, conc));
            else byWorker[side]!.push(await workerRun(workers[side]!, bytes, conc));
          }
          bareHttp.push(await bareRun(bytes, conc));
        }
        const total = (rs: RunResult[]) => ({
          bytes: rs.reduce((a, r) => a + r.bytes, 0),
          ops: rs.reduce((a, r) => a + r.ops, 0),
          seconds: rs.reduce((a, r) => a + r.seconds, 0),
          cpu: rs.reduce((a, r) => a + r.cpuSeconds, 0),
          switches: rs.reduce((a, r) => a + (r.switches ?? 0), 0),
        });
        const r = total(raw);
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
          rawCpuMsPerBlob: (r.cpu / r.ops) * 1000,
          workerCpuMsPerBlob: (w.cpu / w.ops) * 1000,
          workerCpuMsPerMiB: (w.cpu / (w.bytes / MiB)) * 1000,
          rawCpuMsPerMiB: (r.cpu / (r.bytes / MiB)) * 1000,
          httpOnlyMiBs: h.bytes / MiB / h.seconds,
          httpOnlyCpuMsPerBlob: (h.cpu / h.ops) * 1000,
          ceiling,
          body: BODY,
          workerSwitchesPerBlob: w.switches / w.ops,
          ...(base
            ? {
                baseRatio: base.bytes / MiB / base.seconds / rawMiBs,
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
      `\nworker PUT vs raw write+fsync+rename+dir fsync (${ROUNDS} x ${SECS} s per side and cell, ${BODY} bodies)\n`,
    );
    console.log(table(rows));
    const oneMiB = summary
      .filter((s) => s.size === MiB)
      .map((s) => `c${s.conc} ${((s.ratio as number) * 100).toFixed(0)}%`);
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

await main();
