/**
 * How cost grows with the number of images, on a cluster of real processes.
 *
 *   npm run bench:scale -- [--images 1000000,10000000] [--worker-blobs 1000000]
 *                          [--baseline 10000] [--snapshot-threshold 2000] [--phase-timeout-min 30]
 *                          [--in-flight 2] [--load-only | --worker-only]
 *
 * Per N (default 10 million), and first at --baseline images (the latency reference): starts 3
 * managers (with --bulk-record-load, an operator-only route that commits image records without
 * their bytes through the real Raft and apply path) and 3 workers, which register and are then
 * stopped, so nothing reads or writes bytes and repair has nothing to do (down verdicts come after
 * a day; the records stay on workers in state up). Then it measures:
 *   - load: N records in requests of 1,000 (--in-flight of them at once), grouped into Raft entries
 *     by the batch proposer; records/s, manager CPU per 1,000 records (all, the leader's, each
 *     follower's), manager disk bytes per image, the leader's peak RSS (VmHWM) during the load
 *     (its in-memory Raft log is bounded by the compaction every --snapshot-threshold entries or
 *     64 MiB of entries, whichever comes first; compacting writes no snapshot file, one is built
 *     only for the joining manager below) and its RSS after it split into anonymous pages (JS
 *     heap, malloc) and file pages (LevelDB's mmap of its table files); --load-only stops there;
 *   - p50 / p99 of a page of 1,000 from GET /v1/images (random cursor, every page full) and of
 *     GET /v1/images/:id/meta (random id), after a warm-up: first as soon as the load is applied,
 *     then, the figures of record, once the managers are quiet (the load's snapshots and LevelDB
 *     compactions done; the wait is printed), with the leader's CPU per read;
 *   - a follower's restart (SIGTERM, start again, applied back at the leader's commit);
 *   - a worker holding --worker-blobs blobs (files and index written here in its on-disk layout,
 *     with matching records on it and on a stopped worker) restarting: time to register (its
 *     `worker.registered` line: the table says `up` throughout), and the leader's time to
 *     reconcile its inventory (its `worker.registered` to its `reconcile.done` line), with the
 *     worker's and the leader's peak RSS and CPU seconds from the spawn to reconcile done;
 *     --worker-only runs the load and this phase alone (--baseline N with --images N: one size);
 *   - a new manager joining (the normal member-add path) and catching up by snapshot (the log is
 *     compacted every --snapshot-threshold entries), with the peak RSS (VmHWM) of the leader, which
 *     sends the snapshot (and its RSS split after the join), and of the new manager. A join that does not finish within the phase
 *     timeout is reported as such, not waited for. Both peaks are printed against the 512 MiB
 *     target, with each one's highest anonymous and file RSS (sampled every second) and its JS
 *     heap after a full GC (bench/heapProbe.mjs, loaded into every child), and what that memory held
 *     by part (V8's heap committed per space, external memory, the anonymous rest: malloc) before,
 *     at the highest sample of and after the join, from the managers' /metrics. Its snapshot phases are
 *     printed from the managers' logs (file wanted, build, transfer, install: time from the join's
 *     start, index, bytes, ms), so a slow join shows where its time went and whether a second file
 *     was wanted.
 * Every wait is bounded by --phase-timeout-min.
 */

import { createHash } from 'node:crypto';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { managerUrl, peersSpec, spawnManager } from '../src/cli/localManagers.ts';
import { freePort } from '../src/cli/localProcess.ts';
import { CLUSTER_SECRET_HEADER } from '../src/http/clusterAuth.ts';
import { blobRelativePath } from '../src/storagenode/blobId.ts';
import { BlobStore } from '../src/storagenode/blobStore.ts';
import { ImageCluster, type ManagerProc, until } from '../tests/integration/imageCluster.ts';
import { percentile } from './closedLoop.ts';
import { childrenFromBuild } from './fromBuild.ts';
import { heapAfterGcMiB, loadHeapProbeInChildren, removeHeapProbeDir } from './heapProbeClient.ts';
import { cpuSeconds } from './processCpu.ts';

interface Options {
  images: number[];
  workerBlobs: number;
  baseline: number;
  snapshotThreshold: number;
  phaseTimeoutMs: number;
  /** Only the load (and every manager applying it): the quick loop for the apply path's cost. */
  loadOnly: boolean;
  /** The load, then only the worker's restart (no reads, manager restart or join). */
  workerOnly: boolean;
  requestsInFlight: number;
  /** Children through tsx from src/ rather than from a fresh build in dist/. */
  fromSource: boolean;
}

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      images: { type: 'string', default: '10000000' },
      'worker-blobs': { type: 'string', default: '1000000' },
      baseline: { type: 'string', default: '10000' },
      'snapshot-threshold': { type: 'string', default: '2000' },
      'phase-timeout-min': { type: 'string', default: '30' },
      'in-flight': { type: 'string', default: String(REQUESTS_IN_FLIGHT) },
      'load-only': { type: 'boolean', default: false },
      'worker-only': { type: 'boolean', default: false },
      'from-source': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
  });
  if (values.help) {
    console.log(`npm run bench:scale -- [--images 1000000,10000000] [--worker-blobs 1000000]
  [--baseline 10000] [--snapshot-threshold 2000] [--phase-timeout-min 30] [--in-flight 2]
  [--load-only | --worker-only] [--from-source]

Managers and workers run from the build in dist/ (built first, as a deployment runs them);
--from-source runs them through tsx's loader instead, which costs each 30-50 MiB more memory.
Loads N image records (default 10 million) through the real Raft and apply path of 3 managers,
after --baseline images as the latency reference, and prints per N: the load rate, manager CPU per
1,000 records and disk bytes per image, list and meta latency, a follower's restart, a worker with
--worker-blobs blobs restarting and reconciled, and a new manager's join by snapshot with the
sender's and the receiver's peak RSS against 512 MiB. Every wait is bounded by
--phase-timeout-min. The header of bench/scale.ts says what each figure measures.`);
    process.exit(0);
  }
  const positive = (flag: keyof typeof values): number => {
    const n = Number(values[flag]);
    if (!Number.isInteger(n) || n < 1) throw new Error(`--${flag} must be a positive integer`);
    return n;
  };
  const images = String(values.images).split(',').map(Number);
  if (images.some((n) => !Number.isInteger(n) || n < 1)) throw new Error('--images takes N[,N...]');
  return {
    images,
    workerBlobs: positive('worker-blobs'),
    baseline: positive('baseline'),
    snapshotThreshold: positive('snapshot-threshold'),
    phaseTimeoutMs: positive('phase-timeout-min') * 60_000,
    loadOnly: values['load-only'],
    workerOnly: values['worker-only'],
    requestsInFlight: positive('in-flight'),
    fromSource: values['from-source'],
  };
}

const RECORDS_PER_REQUEST = 1000;
/** Each request holds up to 256 records in the leader's batch queue (bulkRecordRoutes.ts). */
const REQUESTS_IN_FLIGHT = 2;
/** Refusals of the Raft driver (not of the tables): the record was not committed, send it again. */
const RETRYABLE = new Set(['NotLeader', 'ProposalDropped', 'Timeout', 'Stopped', 'TransferInProgress']);
/** The s-records' nominal size: what the counters add up (no bytes exist). */
const RECORD_SIZE = 250_000;

/** Reads timed per size, after warm-up reads that are not. */
const LIST_SAMPLES = 200;
const META_SAMPLES = 1000;
const LIST_WARMUP = 10;
const META_WARMUP = 50;
/**
 * The managers count as quiet below this many cores busy (all three together) over a window: idle,
 * they use a few per cent (heartbeats, the repair pass); a snapshot or a compaction takes a core.
 */
const SETTLED_CORES = 0.25;
const SETTLE_WINDOW_MS = 2_000;
/** Longest wait for quiet managers: past it the reads are measured anyway (the wait shows it). */
const SETTLE_LIMIT_MS = 5 * 60_000;

const recordId = (prefix: 's' | 'b', i: number): string => `${prefix}${String(i).padStart(10, '0')}`;
const shaOf = (id: string): string => createHash('sha256').update(id).digest('hex');
/**
 * The worker's blobs are empty files, and their records say so: the worker's scrubber reads every
 * blob back against its sha256, and would remove (and report lost) a blob whose bytes disagree.
 */
const EMPTY_SHA = shaOf('');

interface Latency {
  list: number[];
  listCpuMs: number;
  meta: number[];
  metaCpuMs: number;
}

/** Each read in turn: wall ms of each, sorted, and the manager's CPU ms per read. */
async function timedReads(
  m: ManagerProc,
  args: string[],
  read: (arg: string) => Promise<void>,
): Promise<{ ms: number[]; cpuMs: number }> {
  const ms: number[] = [];
  const cpu0 = cpuSeconds(m.child?.pid);
  for (const arg of args) {
    const t = performance.now();
    await read(arg);
    ms.push(performance.now() - t);
  }
  const cpuMs = ((cpuSeconds(m.child?.pid) - cpu0) * 1000) / args.length;
  return { ms: ms.sort((a, b) => a - b), cpuMs };
}

interface Row {
  images: number;
  loadRate: number;
  cpuMsPer1000: number;
  /** The same, of the manager that led at the end of the load and of each follower. */
  leaderCpuMsPer1000: number;
  followerCpuMsPer1000: number[];
  diskBytesPerImage: number;
  loadLeaderPeakMiB: number;
  listP50: number;
  listP99: number;
  listCpuMs: number;
  metaP50: number;
  metaP99: number;
  metaCpuMs: number;
  settleMs: number;
  /** p50 / p99 of both reads measured as soon as the load was applied, before `settle`. */
  early: string;
  managerRestartMs: number;
  worker: WorkerPhase | null;
  join: string;
  senderPeakMiB: number;
  receiverPeakMiB: number;
  leaderAfterLoad: RssSplit;
  /** JS heap used after a full GC (heapProbe.mjs), right after the load's split above. */
  leaderHeapAfterLoadMiB: number;
  senderAfterJoin: RssSplit;
  sender: JoinMemory;
  receiver: JoinMemory;
}

class Bench {
  private readonly headers: Record<string, string>;

  constructor(
    private readonly cluster: ImageCluster,
    private readonly opts: Options,
  ) {
    this.headers = { [CLUSTER_SECRET_HEADER]: cluster.secret };
  }

  async json<T>(url: string, init: RequestInit = {}): Promise<{ status: number; body: T }> {
    const res = await fetch(url, {
      ...init,
      headers: { ...this.headers, 'content-type': 'application/json' },
      redirect: 'manual',
      signal: AbortSignal.timeout(120_000),
    });
    return { status: res.status, body: (await res.json().catch(() => null)) as T };
  }

  /** N records: ids s... on w1+w2, and the last `blobs` of them (ids b...) on w3+w1. */
  async load(n: number, blobs: number): Promise<void> {
    let next = 0;
    const send = async (): Promise<void> => {
      while (next < n) {
        const from = next;
        next = Math.min(n, next + RECORDS_PER_REQUEST);
        await this.sendRecords(from, next, n - blobs);
      }
    };
    await Promise.all(Array.from({ length: this.opts.requestsInFlight }, send));
  }

  private async sendRecords(from: number, to: number, firstBlob: number): Promise<void> {
    const createdAt = Date.now();
    const records: string[] = [];
    for (let i = from; i < to; i++) {
      const blob = i >= firstBlob;
      const id = blob ? recordId('b', i - firstBlob) : recordId('s', i);
      const size = blob ? 0 : RECORD_SIZE;
      const replicas = blob ? '["w3","w1"]' : '["w1","w2"]';
      records.push(
        `{"type":"recordObject","id":"${id}","size":${size},"sha256":"${blob ? EMPTY_SHA : shaOf(id)}","contentType":"image/jpeg","createdAt":${createdAt},"replicas":${replicas}}`,
      );
    }
    const body = `{"records":[${records.join(',')}]}`;
    const deadline = Date.now() + this.opts.phaseTimeoutMs;
    for (;;) {
      const leader = await this.cluster.leader(this.opts.phaseTimeoutMs);
      const res = await this.json<{ created: number; existing: number; rejected: unknown[] }>(
        `${leader.url}/v1/cluster/bulk-records`,
        { method: 'POST', body },
      ).catch((err: unknown) => ({ status: 0, body: String(err) }));
      if (res.status === 200 && typeof res.body === 'object') {
        const b = res.body as { created: number; existing: number; rejected: { code: string }[] };
        if (b.rejected.length === 0) return;
        // Sent again whole: the records already committed answer `existing`.
        if (!b.rejected.every((r) => RETRYABLE.has(r.code)))
          throw new Error(`records refused: ${JSON.stringify(b.rejected.slice(0, 3))}`);
      }
      if (Date.now() > deadline)
        throw new Error(`bulk records not accepted: ${res.status} ${JSON.stringify(res.body)}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }

  /**
   * Latency of the reads, measured once the cluster is quiet (see `settle`), after a warm-up; the
   * list cursors end a page short of the last id, so every page holds 1,000 whatever N. Also the
   * leader's CPU per read, which the other work on a shared machine does not inflate.
   */
  async latency(m: ManagerProc, n: number, blobs: number): Promise<Latency> {
    const idAt = (i: number) => (i >= n - blobs ? recordId('b', i - (n - blobs)) : recordId('s', i));
    const ids = (count: number, below: number) =>
      Array.from({ length: count }, () => idAt(Math.floor(Math.random() * below)));
    const listPage = async (after: string) => {
      const res = await this.json<{ items: unknown[] }>(`${m.url}/v1/images?limit=1000&after=${after}`);
      if (res.status !== 200) throw new Error(`list answered ${res.status}`);
    };
    const meta = async (id: string) => {
      const res = await this.json(`${m.url}/v1/images/${id}/meta`);
      if (res.status !== 200) throw new Error(`meta of ${id} answered ${res.status}`);
    };
    const pages = Math.max(1, n - 1000);
    for (const after of ids(LIST_WARMUP, pages)) await listPage(after);
    for (const id of ids(META_WARMUP, n)) await meta(id);
    const list = await timedReads(m, ids(LIST_SAMPLES, pages), listPage);
    const metaReads = await timedReads(m, ids(META_SAMPLES, n), meta);
    return { list: list.ms, listCpuMs: list.cpuMs, meta: metaReads.ms, metaCpuMs: metaReads.cpuMs };
  }

  /**
   * Waits (bounded) until the managers' CPU over a window is under SETTLED_CORES, twice in a row:
   * a bulk load leaves snapshots being written and LevelDB compactions running on every manager
   * for a while, work that grows with N and that a cluster past its load no longer does. Measured
   * beside it, the reads at 1M timed that tail (docs/operations.md, "Listing at scale").
   */
  async settle(): Promise<number> {
    const t = performance.now();
    const busy = () => this.cluster.running().reduce((s, m) => s + cpuSeconds(m.child?.pid), 0);
    let quiet = 0;
    const limit = Math.min(SETTLE_LIMIT_MS, this.opts.phaseTimeoutMs);
    while (quiet < 2 && performance.now() - t < limit) {
      const before = busy();
      await new Promise((r) => setTimeout(r, SETTLE_WINDOW_MS));
      const cores = (busy() - before) / (SETTLE_WINDOW_MS / 1000);
      progress(`managers busy: ${cores.toFixed(2)} cores over ${SETTLE_WINDOW_MS / 1000} s`);
      quiet = cores < SETTLED_CORES ? quiet + 1 : 0;
    }
    return performance.now() - t;
  }

  async raftView(m: { url: string }): Promise<{ commit: number; applied: number; role: string }> {
    const res = await this.json<{ commit: number; applied: number; role: string }>(
      `${m.url}/v1/cluster/raft`,
    );
    if (res.status !== 200) throw new Error(`raft view answered ${res.status}`);
    return res.body;
  }

  /** SIGTERM a follower, start it again: ms until it has applied the leader's commit of then. */
  async restartManager(): Promise<number> {
    const [follower] = await this.cluster.followers();
    const target = (await this.raftView(await this.cluster.leader())).commit;
    await stopGently(follower!.child!);
    follower!.child = null;
    const t = performance.now();
    this.cluster.spawnManager(follower!);
    await until(
      `${follower!.id} caught up after restart`,
      async () => (await this.raftView(follower!)).applied >= target,
      this.opts.phaseTimeoutMs,
    );
    return performance.now() - t;
  }
}

function stopGently(child: import('node:child_process').ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  return exited.finally(() => clearTimeout(timer));
}

/** Peak RSS (VmHWM) of a process in MiB; `reset` first zeroes it (clear_refs 5). */
async function peakRssMiB(pid: number | undefined, reset = false): Promise<number> {
  if (pid === undefined) return 0;
  if (reset) await writeFile(`/proc/${pid}/clear_refs`, '5').catch(() => {});
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = Number(/VmHWM:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return kb / 1024;
}

interface RssSplit {
  /** Anonymous memory: the JS heap (the in-memory Raft log among it), malloc (LevelDB's caches). */
  anonMiB: number;
  /** File pages mapped and touched: LevelDB reads its table files through mmap. */
  fileMiB: number;
}

async function rssSplit(pid: number | undefined): Promise<RssSplit> {
  const status = pid === undefined ? '' : await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+)`).exec(status)?.[1] ?? 0);
  return { anonMiB: kb('RssAnon') / 1024, fileMiB: kb('RssFile') / 1024 };
}

/** The issue's target for the sender's and the receiver's peak RSS during a join at 10M images. */
const JOIN_RSS_TARGET_MiB = 512;

/**
 * What a manager's anonymous memory holds by its own count (prom-client's default metrics on its
 * /metrics, MiB): V8's heap committed and used, per space, and the external memory (Buffers).
 * The anonymous RSS beyond heap and external is malloc: LevelDB's caches, memtables, arenas.
 */
interface HeapBreakdown {
  committed: number;
  used: number;
  external: number;
  /** Committed per V8 space (old, new, large_object, code...), the empty ones left out. */
  spaces: Record<string, number>;
}

async function heapBreakdown(url: string): Promise<HeapBreakdown | null> {
  const text = await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })
    .then((r) => (r.ok ? r.text() : ''))
    .catch(() => '');
  const value = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1]) / 2 ** 20;
  if (text === '') return null;
  const spaces: Record<string, number> = {};
  for (const m of text.matchAll(/^nodejs_heap_space_size_total_bytes\{space="(\w+)"\} (\S+)$/gm)) {
    const mib = Number(m[2]) / 2 ** 20;
    if (mib >= 0.5) spaces[m[1]!] = mib;
  }
  return {
    committed: value('nodejs_heap_size_total_bytes'),
    used: value('nodejs_heap_size_used_bytes'),
    external: value('nodejs_external_memory_bytes'),
    spaces,
  };
}

/** "anon A / file F MiB: heap C committed (U used; old .., new ..), external E, malloc and the rest R". */
function describeMemory(split: RssSplit, heap: HeapBreakdown | null): string {
  const head = `anon ${split.anonMiB.toFixed(0)} / file ${split.fileMiB.toFixed(0)} MiB`;
  if (heap === null) return `${head} (no /metrics)`;
  const spaces = Object.entries(heap.spaces)
    .map(([space, mib]) => `${space} ${mib.toFixed(0)}`)
    .join(', ');
  const rest = split.anonMiB - heap.committed - heap.external;
  return `${head}: V8 heap ${heap.committed.toFixed(0)} committed (${heap.used.toFixed(0)} used; ${spaces}), external ${heap.external.toFixed(0)}, anon beyond both (malloc) ${rest.toFixed(0)}`;
}

/** A process's memory during the join: the highest anonymous and file RSS seen, and its heap after. */
interface JoinMemory {
  peakAnonMiB: number;
  peakFileMiB: number;
  heapAfterGcMiB: number;
  /** At the 1 s sample of the highest RSS (anon + file): describeMemory, when the pid has a URL. */
  atPeak: string;
}

const NO_JOIN_MEMORY: JoinMemory = {
  peakAnonMiB: Number.NaN,
  peakFileMiB: Number.NaN,
  heapAfterGcMiB: Number.NaN,
  atPeak: '-',
};

/**
 * Samples processes' RSS split every second: VmHWM gives the peak of the sum, not which part made
 * it (anonymous: JS heap and malloc; file: LevelDB's mapped table files).
 */
class RssSampler {
  private readonly peaks = new Map<number, RssSplit>();
  /** Per pid given a URL: the highest anon + file sample and what its heap held then. */
  private readonly atPeak = new Map<number, { url: string; total: number; text: string }>();
  private readonly timer = setInterval(() => void this.sample(), 1_000);

  /** `url`: the manager's, whose /metrics says what its heap held at its highest sample. */
  watch(pid: number | undefined, url?: string): void {
    if (pid !== undefined && !this.peaks.has(pid)) this.peaks.set(pid, { anonMiB: 0, fileMiB: 0 });
    if (pid !== undefined && url !== undefined) this.atPeak.set(pid, { url, total: 0, text: '-' });
  }

  private async sample(): Promise<void> {
    for (const [pid, peak] of this.peaks) {
      const now = await rssSplit(pid);
      peak.anonMiB = Math.max(peak.anonMiB, now.anonMiB);
      peak.fileMiB = Math.max(peak.fileMiB, now.fileMiB);
      const best = this.atPeak.get(pid);
      if (best !== undefined && now.anonMiB + now.fileMiB > best.total) {
        best.total = now.anonMiB + now.fileMiB;
        best.text = describeMemory(now, await heapBreakdown(best.url));
      }
    }
  }

  async memory(pid: number | undefined): Promise<JoinMemory> {
    if (pid === undefined) return NO_JOIN_MEMORY;
    await this.sample();
    const peak = this.peaks.get(pid) ?? { anonMiB: Number.NaN, fileMiB: Number.NaN };
    return {
      peakAnonMiB: peak.anonMiB,
      peakFileMiB: peak.fileMiB,
      heapAfterGcMiB: await heapAfterGcMiB(pid),
      atPeak: this.atPeak.get(pid)?.text ?? '-',
    };
  }

  stop(): void {
    clearInterval(this.timer);
  }
}

async function folderBytes(dir: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
    const p = join(dir, entry.name);
    if (entry.isDirectory()) total += await folderBytes(p);
    // A LevelDB compaction may delete a table file between the listing and its stat.
    else if (entry.isFile()) total += (await stat(p).catch(() => ({ size: 0 }))).size;
  }
  return total;
}

/**
 * `count` blobs b... in a stopped worker's data folder, as its store keeps them: an empty file
 * each under blobs/ab/<id> and its index entry (size 0, the sha256 of no bytes, as its record).
 */
async function writeWorkerBlobs(dataDir: string, count: number): Promise<void> {
  const store = await BlobStore.open(dataDir, { logger: pino({ level: 'silent' }) });
  try {
    const BATCH = 10_000;
    for (let from = 0; from < count; from += BATCH) {
      const entries = [];
      for (let i = from; i < Math.min(count, from + BATCH); i++) {
        const id = recordId('b', i);
        entries.push({ id, size: 0, sha256: EMPTY_SHA });
      }
      await Promise.all(entries.map((e) => writeFile(join(dataDir, blobRelativePath(e.id)), '')));
      await store.index.record(entries, { sync: false });
    }
  } finally {
    await store.close();
  }
}

/**
 * ms from `since` (epoch ms) to the first log line of `event` (with `"nodeId":"<nodeId>"` when
 * given) in `logFile`, with the line; null if none yet.
 */
async function loggedAfter(
  logFile: string,
  event: string,
  since: number,
  nodeId?: string,
): Promise<{ ms: number; line: string } | null> {
  const text = await readFile(logFile, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    if (!line.includes(`"event":"${event}"`)) continue;
    if (nodeId !== undefined && !line.includes(`"nodeId":"${nodeId}"`)) continue;
    const time = Number(/"time":(\d+)/.exec(line)?.[1]);
    if (time >= since) return { ms: time - since, line };
  }
  return null;
}

/** The snapshot events of a join, in the order they happen (raftNode.ts, snapshotSender.ts). */
const JOIN_EVENTS = [
  'raft.snapshot_file_wanted',
  'raft.snapshot_file_build_started',
  'raft.snapshot_taken',
  'raft.snapshot_send_started',
  'raft.snapshot_sent',
  'raft.snapshot_received',
  'raft.snapshot_install_started',
  'raft.snapshot_installed',
  'raft.snapshot_file_hold_released',
];

/**
 * The join's snapshot phases from the managers' logs since `since` (epoch ms): each event with its
 * time from the start of the join and what it carries (index, bytes, ms, applied...), so a slow
 * join shows whether the build, the transfer or the install took the time, and whether a second
 * file was wanted.
 */
async function joinPhases(root: string, ids: string[], since: number): Promise<string[]> {
  const events: { time: number; line: string }[] = [];
  for (const id of ids) {
    const text = await readFile(join(root, `${id}.log`), 'utf8').catch(() => '');
    for (const line of text.split('\n')) {
      if (!line.includes('"raft.snapshot_')) continue;
      let e: Record<string, unknown>;
      try {
        e = JSON.parse(line) as Record<string, unknown>;
      } catch {
        continue;
      }
      const time = Number(e.time);
      if (!JOIN_EVENTS.includes(String(e.event)) || !(time >= since)) continue;
      const fields = ['index', 'bytes', 'offset', 'ms', 'applied', 'firstIndex', 'lastIndex', 'onDemand']
        .filter((k) => e[k] !== undefined)
        .map((k) => `${k} ${k === 'bytes' ? `${(Number(e[k]) / 2 ** 20).toFixed(0)} MiB` : String(e[k])}`);
      const at = `+${((time - since) / 1000).toFixed(1)} s`.padStart(9);
      events.push({ time, line: `${at}  ${id}  ${String(e.event).slice(5)}  ${fields.join(', ')}` });
    }
  }
  return events.sort((a, b) => a.time - b.time).map((e) => e.line);
}

interface JoinOutcome {
  result: string;
  /** The snapshot events of the join (joinPhases). */
  phases: string[];
  /** The sender's memory by part before, at the peak of and after the join; the receiver's at its peak. */
  memory: string[];
  senderPeakMiB: number;
  receiverPeakMiB: number;
  senderAfterJoin: RssSplit;
  sender: JoinMemory;
  receiver: JoinMemory;
}

/** Adds m4 through the normal member-add path and waits, bounded, until it has caught up. */
async function joinManager(
  bench: Bench,
  cluster: ImageCluster,
  managerArgs: string[],
  timeoutMs: number,
): Promise<JoinOutcome> {
  const leader = await cluster.leader();
  const before = describeMemory(await rssSplit(leader.child?.pid), await heapBreakdown(leader.url));
  await peakRssMiB(leader.child?.pid, true);
  const rss = new RssSampler();
  rss.watch(leader.child?.pid, leader.url);
  const port = await freePort();
  const url = managerUrl(port);
  const m4 = spawnManager({
    id: 'm4',
    port,
    dataDir: join(cluster.root, 'm4'),
    peers: peersSpec(cluster.managers),
    secretFile: cluster.secretFile,
    args: ['--join', ...managerArgs],
    logFile: join(cluster.root, 'm4.log'),
    // Info: its install events are the join's last phases (joinPhases).
    env: { IMGVAULT_LOG_LEVEL: 'info' },
  });
  rss.watch(m4.pid, url);
  const started = performance.now();
  const startedAt = Date.now();
  let result: string;
  try {
    await until('m4 answering', async () => (await fetch(`${url}/healthz`)).ok, 60_000);
    const deadline = Date.now() + timeoutMs;
    let voter = false;
    while (!voter && Date.now() < deadline) {
      const res = await bench
        .json(`${leader.url}/v1/cluster/members`, { method: 'POST', body: JSON.stringify({ id: 'm4', url }) })
        .catch(() => ({ status: 0 }));
      voter = res.status === 200;
      if (!voter) await new Promise((r) => setTimeout(r, 1_000));
    }
    const target = (await bench.raftView(leader)).commit;
    let applied = 0;
    while (voter && Date.now() < deadline) {
      applied = (await bench.raftView({ url }).catch(() => ({ applied: 0 }))).applied;
      if (applied >= target) break;
      await new Promise((r) => setTimeout(r, 500));
    }
    const secs = ((performance.now() - started) / 1000).toFixed(1);
    result =
      voter && applied >= target
        ? `${secs} s`
        : `FAILED: not caught up within ${timeoutMs / 60_000} min (voter ${voter}, applied ${applied} of ${target})`;
    const ids = [...cluster.managers.map((m) => m.id), 'm4'];
    const after = describeMemory(await rssSplit(leader.child?.pid), await heapBreakdown(leader.url));
    const sender = await rss.memory(leader.child?.pid);
    const receiver = await rss.memory(m4.pid);
    return {
      result,
      phases: await joinPhases(cluster.root, ids, startedAt),
      memory: [
        `sender before the join:  ${before}`,
        `sender at its peak:      ${sender.atPeak}`,
        `sender after the join:   ${after}`,
        `receiver at its peak:    ${receiver.atPeak}`,
      ],
      senderPeakMiB: await peakRssMiB(leader.child?.pid),
      receiverPeakMiB: await peakRssMiB(m4.pid),
      senderAfterJoin: await rssSplit(leader.child?.pid),
      sender,
      receiver,
    };
  } finally {
    rss.stop();
    await stopGently(m4);
  }
}

interface WorkerPhase {
  blobs: number;
  /** Writing the blob files and index entries into the stopped worker's folder. */
  fixtureMs: number;
  /** The worker's start-up check of its store (its `storage.startup_check` line). */
  startupCheckMs: number | string;
  /** Spawn to the worker's own `worker.registered` line (the leader answered its registration). */
  registerMs: number | string;
  /** The leader's `worker.registered` line to its `reconcile.done` line for the worker. */
  reconcileMs: number | string;
  /** Peak RSS (VmHWM) from spawn to reconcile done: the worker's, and the leader's (reset first). */
  workerPeakMiB: number;
  leaderPeakMiB: number;
  /** CPU seconds from spawn to reconcile done. */
  workerCpuS: number;
  leaderCpuS: number;
}

/**
 * w3, stopped and still `up` in the table (down verdicts come after a day), is given `blobs` blobs
 * and started again: the times are read from the worker's and the leader's logs, since the table
 * says `up` throughout.
 */
async function workerRestart(cluster: ImageCluster, blobs: number, timeoutMs: number): Promise<WorkerPhase> {
  const w3 = cluster.worker('w3');
  const t0 = performance.now();
  await writeWorkerBlobs(w3.dataDir, blobs);
  const fixtureMs = performance.now() - t0;
  progress(`${blobs} blobs written in ${(fixtureMs / 1000).toFixed(1)} s`);
  const leader = await cluster.leader();
  const leaderPid = leader.child?.pid;
  await peakRssMiB(leaderPid, true);
  const leaderCpu0 = cpuSeconds(leaderPid);
  const since = Date.now();
  cluster.spawnWorker(w3);
  const workerPid = w3.child?.pid;
  const workerLog = join(cluster.root, 'w3.log');
  const leaderLog = join(cluster.root, `${leader.id}.log`);
  const failed = `FAILED: not within ${timeoutMs / 60_000} min`;
  let registerMs: number | string = failed;
  let reconcileMs: number | string = failed;
  let startupCheckMs: number | string = failed;
  let workerPeakMiB = 0;
  let workerCpuS = 0;
  await until(
    'w3 registered and reconciled',
    async () => {
      // Sampled while it runs: a worker that exits takes its counters with it.
      workerPeakMiB = Math.max(workerPeakMiB, await peakRssMiB(workerPid));
      workerCpuS = Math.max(workerCpuS, cpuSeconds(workerPid));
      const check = await loggedAfter(workerLog, 'storage.startup_check', since);
      if (check) startupCheckMs = Number(/"durationMs":(\d+)/.exec(check.line)?.[1]);
      const registered = await loggedAfter(workerLog, 'worker.registered', since);
      if (registered) registerMs = registered.ms;
      const recorded = await loggedAfter(leaderLog, 'worker.registered', since, 'w3');
      const done = await loggedAfter(leaderLog, 'reconcile.done', since, 'w3');
      if (done && recorded) reconcileMs = done.ms - recorded.ms;
      return done !== null;
    },
    timeoutMs,
  ).catch(() => {});
  return {
    blobs,
    fixtureMs,
    startupCheckMs,
    registerMs,
    reconcileMs,
    workerPeakMiB,
    leaderPeakMiB: await peakRssMiB(leaderPid),
    workerCpuS,
    leaderCpuS: cpuSeconds(leaderPid) - leaderCpu0,
  };
}

/** The figures a --load-only run does not measure. */
const SKIPPED = {
  listP50: Number.NaN,
  listP99: Number.NaN,
  metaP50: Number.NaN,
  metaP99: Number.NaN,
  managerRestartMs: Number.NaN,
  worker: null,
  join: 'skipped',
  senderPeakMiB: Number.NaN,
  receiverPeakMiB: Number.NaN,
  senderAfterJoin: { anonMiB: Number.NaN, fileMiB: Number.NaN },
  sender: NO_JOIN_MEMORY,
  receiver: NO_JOIN_MEMORY,
  listCpuMs: Number.NaN,
  metaCpuMs: Number.NaN,
  settleMs: Number.NaN,
  early: 'skipped',
};

async function runOne(n: number, opts: Options): Promise<Row> {
  const blobs = Math.min(opts.workerBlobs, n);
  const managerArgs = [
    '--bulk-record-load',
    '--down-after-ms',
    '86400000',
    '--orphan-grace-ms',
    '86400000',
    '--snapshot-threshold',
    String(opts.snapshotThreshold),
  ];
  const cluster = await ImageCluster.start({
    name: 'imgvault-bench-scale',
    logLevel: 'info',
    managerArgs,
    startTimeoutMs: 120_000,
  });
  try {
    // Registered, then stopped: their records stay on workers in state up, and no byte moves.
    for (const w of cluster.workers) {
      await stopGently(w.child!);
      w.child = null;
    }
    const bench = new Bench(cluster, opts);
    const cpu = () => cluster.managers.map((m) => cpuSeconds(m.child?.pid));
    const loadLeader = await cluster.leader();
    await peakRssMiB(loadLeader.child?.pid, true);
    const cpu0 = cpu();
    const t0 = performance.now();
    await bench.load(n, blobs);
    const loadMs = performance.now() - t0;
    const perManager = cpu().map((s, i) => ((s - cpu0[i]!) * 1000 * 1000) / n);
    const cpuMsPer1000 = perManager.reduce((a, b) => a + b, 0);
    progress(`N=${n}: loaded in ${(loadMs / 1000).toFixed(1)} s`);
    const leader = await cluster.leader();
    const leaderAt = cluster.managers.indexOf(leader);
    const commit = (await bench.raftView(leader)).commit;
    await until(
      'every manager applied the load',
      async () => {
        for (const m of cluster.running()) if ((await bench.raftView(m)).applied < commit) return false;
        return true;
      },
      opts.phaseTimeoutMs,
    );
    let disk = 0;
    for (const m of cluster.managers) disk += await folderBytes(m.dataDir);
    const load = {
      images: n,
      loadRate: n / (loadMs / 1000),
      cpuMsPer1000,
      leaderCpuMsPer1000: perManager[leaderAt] ?? 0,
      followerCpuMsPer1000: perManager.filter((_, i) => i !== leaderAt),
      diskBytesPerImage: disk / cluster.managers.length / n,
      loadLeaderPeakMiB: await peakRssMiB(loadLeader.child?.pid),
      leaderAfterLoad: await rssSplit(leader.child?.pid),
      leaderHeapAfterLoadMiB: await heapAfterGcMiB(leader.child?.pid),
    };
    if (opts.loadOnly) return { ...load, ...SKIPPED };
    if (opts.workerOnly)
      return { ...load, ...SKIPPED, worker: await workerRestart(cluster, blobs, opts.phaseTimeoutMs) };
    const early = await bench.latency(leader, n, blobs);
    const settleMs = await bench.settle();
    progress(`N=${n}: managers quiet after ${(settleMs / 1000).toFixed(1)} s`);
    const { list, listCpuMs, meta, metaCpuMs } = await bench.latency(leader, n, blobs);
    progress(`N=${n}: latency measured`);
    const managerRestartMs = await bench.restartManager();
    progress(`N=${n}: manager restarted`);
    const worker = await workerRestart(cluster, blobs, opts.phaseTimeoutMs);
    progress(`N=${n}: worker restarted`);
    const joined = await joinManager(bench, cluster, managerArgs, opts.phaseTimeoutMs);
    progress(`N=${n}: join ${joined.result}`);
    console.log(`N=${n}: join phases (time from the join's start, manager, event):`);
    for (const line of joined.phases) console.log(`  ${line}`);
    console.log(`N=${n}: join memory (MiB; 1 s samples, V8 and external from /metrics):`);
    for (const line of joined.memory) console.log(`  ${line}`);
    return {
      ...load,
      listP50: percentile(list, 50),
      listP99: percentile(list, 99),
      listCpuMs,
      metaP50: percentile(meta, 50),
      metaP99: percentile(meta, 99),
      metaCpuMs,
      settleMs,
      early: [early.list, early.meta].map((v) => `${pair(v)} ms`).join(', '),
      managerRestartMs,
      worker,
      join: joined.result,
      senderPeakMiB: joined.senderPeakMiB,
      receiverPeakMiB: joined.receiverPeakMiB,
      senderAfterJoin: joined.senderAfterJoin,
      sender: joined.sender,
      receiver: joined.receiver,
    };
  } finally {
    await cluster.close();
  }
}

/** The worker phase's lines of the table (`-` where it did not run). */
function workerLines(ms: (v: number | string) => string): [string, (r: Row) => string][] {
  const w = (cell: (w: WorkerPhase) => string) => (r: Row) => (r.worker ? cell(r.worker) : '-');
  const mib = (v: number) => `${v.toFixed(0)} MiB`;
  return [
    ['worker blobs', w((v) => v.blobs.toLocaleString('en-US'))],
    ['  fixture written (files + index)', w((v) => ms(v.fixtureMs))],
    ['  worker start-up check', w((v) => ms(v.startupCheckMs))],
    ['worker restart (to registered)', w((v) => ms(v.registerMs))],
    ['leader reconcile of its inventory', w((v) => ms(v.reconcileMs))],
    [
      '  worker / leader peak RSS to reconciled',
      w((v) => `${mib(v.workerPeakMiB)} / ${mib(v.leaderPeakMiB)}`),
    ],
    [
      '  worker / leader CPU to reconciled',
      w((v) => `${v.workerCpuS.toFixed(1)} / ${v.leaderCpuS.toFixed(1)} s`),
    ],
  ];
}

/** "p50 / p99" of sorted wall times. */
function pair(sorted: number[]): string {
  return `${percentile(sorted, 50).toFixed(1)} / ${percentile(sorted, 99).toFixed(1)}`;
}

function progress(message: string): void {
  process.stderr.write(`[${new Date().toISOString()}] ${message}\n`);
}

function printRows(rows: Row[], opts: Options): void {
  const ms = (v: number | string) => (typeof v === 'number' ? `${v.toFixed(1)} ms` : v);
  const split = (v: RssSplit) => `${v.anonMiB.toFixed(0)} / ${v.fileMiB.toFixed(0)} MiB`;
  const mib = (v: number) => `${v.toFixed(0)} MiB`;
  const target = (v: number) =>
    Number.isNaN(v) ? 'n/a' : `${mib(v)} ${v < JOIN_RSS_TARGET_MiB ? 'ok' : 'OVER'}`;
  const peaks = (v: JoinMemory) => `${v.peakAnonMiB.toFixed(0)} / ${v.peakFileMiB.toFixed(0)} MiB`;
  const lines: [string, (r: Row) => string][] = [
    ['images', (r) => r.images.toLocaleString('en-US')],
    ['load rate (records/s)', (r) => r.loadRate.toFixed(0)],
    ['manager CPU per 1,000 records', (r) => `${r.cpuMsPer1000.toFixed(0)} ms`],
    ['  leader', (r) => `${r.leaderCpuMsPer1000.toFixed(0)} ms`],
    ['  followers', (r) => `${r.followerCpuMsPer1000.map((v) => v.toFixed(0)).join(' / ')} ms`],
    ['manager disk bytes per image', (r) => r.diskBytesPerImage.toFixed(0)],
    ['leader peak RSS during the load', (r) => `${r.loadLeaderPeakMiB.toFixed(0)} MiB`],
    ['leader RSS after the load, anon / file', (r) => split(r.leaderAfterLoad)],
    ['  its JS heap after a full GC', (r) => mib(r.leaderHeapAfterLoadMiB)],
    ['list / meta p50 / p99 right after the load', (r) => r.early],
    ['managers quiet after the load', (r) => ms(r.settleMs)],
    ['GET /v1/images page of 1,000 p50', (r) => ms(r.listP50)],
    ['GET /v1/images page of 1,000 p99', (r) => ms(r.listP99)],
    ['  leader CPU per page', (r) => ms(r.listCpuMs)],
    ['GET /v1/images/:id/meta p50', (r) => ms(r.metaP50)],
    ['GET /v1/images/:id/meta p99', (r) => ms(r.metaP99)],
    ['  leader CPU per meta read', (r) => ms(r.metaCpuMs)],
    ['manager restart (to caught up)', (r) => ms(r.managerRestartMs)],
    ...workerLines(ms),
    ['new manager join + catch-up', (r) => r.join],
    [`  sender (leader) peak RSS (VmHWM), target < ${JOIN_RSS_TARGET_MiB}`, (r) => target(r.senderPeakMiB)],
    ['    peak anon / peak file (1 s samples)', (r) => peaks(r.sender)],
    ['    RSS after the join, anon / file', (r) => split(r.senderAfterJoin)],
    ['    JS heap after a full GC, after it', (r) => mib(r.sender.heapAfterGcMiB)],
    [`  receiver (new manager) peak RSS, target < ${JOIN_RSS_TARGET_MiB}`, (r) => target(r.receiverPeakMiB)],
    ['    peak anon / peak file (1 s samples)', (r) => peaks(r.receiver)],
    ['    JS heap after a full GC, after it', (r) => mib(r.receiver.heapAfterGcMiB)],
  ];
  const load = lines.slice(0, 9);
  const shown = opts.loadOnly ? load : opts.workerOnly ? [...load, ...workerLines(ms)] : lines;
  const width = Math.max(...shown.map(([label]) => label.length));
  for (const [label, cell] of shown) {
    console.log(`${label.padEnd(width)}  ${rows.map((r) => cell(r).padStart(16)).join('  ')}`);
  }
}

const opts = parseOptions(process.argv.slice(2));
// The memory targets are a deployed manager's, which runs the build (localProcess.ts).
if (!opts.fromSource) childrenFromBuild();
loadHeapProbeInChildren();
const sizes = [...new Set([opts.baseline, ...opts.images])].sort((a, b) => a - b);
console.log(
  `bench:scale: ${sizes.join(', ')} images, worker blobs ${opts.workerBlobs}, snapshot every ${opts.snapshotThreshold} entries, load average ${(await readFile('/proc/loadavg', 'utf8')).split(' ').slice(0, 3).join(' ')}`,
);
const rows: Row[] = [];
for (const n of sizes) {
  try {
    rows.push(await runOne(n, opts));
  } catch (err) {
    console.log(`N=${n}: FAILED: ${err instanceof Error ? err.message : String(err)}`);
  }
}
removeHeapProbeDir();
printRows(rows, opts);
