/**
 * Memory under steady load, on a cluster of real processes.
 *
 *   npm run bench:soak -- --minutes N [--snapshot-threshold E]     (default 15 min; E: managers' flag)
 *
 * 3 managers and 3 workers; 4 clients together upload about 13 images/s (PUT of 20-80 KiB PNGs),
 * read one of their images back and check its bytes after each upload, and delete about half of
 * what they upload. Every 3 minutes a worker is killed (SIGKILL) and started again, in turn. Every
 * minute it prints, per process, the RSS and the heap still used after a full garbage collection
 * (bench/heapProbe.mjs, loaded into the children with --expose-gc): a post-GC heap that keeps
 * growing is a leak, an RSS that grows while it stays flat is a heap not yet given back. At the end
 * every upload acknowledged and not deleted is read back and checked: the lost count must be 0.
 */

import { createHash } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { childrenFromBuild } from './fromBuild.ts';

const { values: args } = parseArgs({
  options: {
    minutes: { type: 'string', default: '15' },
    'snapshot-threshold': { type: 'string' },
    help: { type: 'boolean', short: 'h', default: false },
  },
});
if (args.help) {
  console.log(`npm run bench:soak [-- --minutes 15] [--snapshot-threshold E]

3 managers and 3 workers under 4 clients uploading ~13 images/s, reading each back and deleting
about half; a worker SIGKILLed and restarted every 3 minutes. Prints each process's RSS and heap
used after a full GC every minute, and at the end reads back every acknowledged image (lost: 0).
--snapshot-threshold is passed to the managers (the Raft log kept in memory between compactions).`);
  process.exit(0);
}
const MINUTES = Number(args.minutes);
if (!(MINUTES > 0)) throw new Error('--minutes must be a positive number');
/** Managers' --snapshot-threshold: the Raft log kept in memory between compactions (default 10,000). */
const SNAPSHOT_THRESHOLD = args['snapshot-threshold'];

const probeDir = await mkdtemp(join(tmpdir(), 'imgvault-soak-heap-'));
// Read by src/cli/localProcess.ts when it is first imported: set before the dynamic import below.
process.env.IMGVAULT_CHILD_NODE_ARGS = `--expose-gc --import ${fileURLToPath(new URL('./heapProbe.mjs', import.meta.url))}`;
process.env.IMGVAULT_HEAP_PROBE_DIR = probeDir;
const { ImageCluster, pngImage } = await import('../tests/integration/imageCluster.ts');
const { CLUSTER_SECRET_HEADER } = await import('../src/http/clusterAuth.ts');
type Cluster = Awaited<ReturnType<typeof ImageCluster.start>>;

const CLIENTS = 4;
const UPLOADS_PER_SECOND = 13;
const KILL_EVERY_MS = 3 * 60_000;
const REQUEST_TIMEOUT_MS = 30_000;
const MiB = 1024 * 1024;

interface ProcessSample {
  rssMiB: number;
  heapAfterGcMiB: number | null;
}

const sha = (b: Buffer | Uint8Array) => createHash('sha256').update(b).digest('hex');

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

/** Asks `pid` for a full GC and its heap used afterwards (bounded wait for the answer). */
async function heapAfterGcMiB(pid: number): Promise<number | null> {
  const file = join(probeDir, `${pid}.json`);
  // Not yet loaded in a process still starting: SIGUSR2 would end it.
  if ((await readFile(file, 'utf8').catch(() => null)) === null) return null;
  const asked = Date.now();
  try {
    process.kill(pid, 'SIGUSR2');
  } catch {
    return null;
  }
  const deadline = asked + 10_000;
  while (Date.now() < deadline) {
    const raw = await readFile(file, 'utf8').catch(() => null);
    if (raw !== null) {
      const sample = JSON.parse(raw) as { at: number; heapUsed: number };
      if (sample.at >= asked) return sample.heapUsed / MiB;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return null;
}

class Clients {
  /** Acknowledged uploads not deleted: id -> sha256. */
  readonly held = new Map<string, string>();
  /** Ids whose upload or delete ended without a clear answer: excluded from the loss check. */
  readonly unsure = new Set<string>();
  uploads = 0;
  failedUploads = 0;
  reads = 0;
  badReads = 0;
  deletes = 0;
  private seq = 0;

  constructor(private readonly cluster: Cluster) {}

  /** To any manager; a follower's 307 to the leader is followed once, with the body sent again. */
  private async request(method: string, path: string, body?: Buffer): Promise<Response> {
    const managers = this.cluster.running();
    const m = managers[Math.floor(Math.random() * managers.length)]!;
    const send = (url: string) =>
      fetch(url, {
        method,
        // A copy each time: fetch takes the buffer it sends over.
        ...(body ? { body: Buffer.from(body), headers: { 'content-type': 'image/png' } } : {}),
        redirect: 'manual',
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    const res = await send(`${m.url}${path}`);
    const location = res.headers.get('location');
    if (res.status !== 307 || location === null) return res;
    await res.arrayBuffer().catch(() => {});
    return send(new URL(location, m.url).toString());
  }

  async step(client: number): Promise<void> {
    const id = `soak-${client}-${this.seq++}`;
    const bytes = pngImage(20_000 + Math.floor(Math.random() * 60_000));
    const res = await this.request('PUT', `/v1/images/${id}`, bytes).catch(() => null);
    if (res === null) this.unsure.add(id);
    else {
      await res.arrayBuffer().catch(() => {});
      if (res.status === 201 || res.status === 200) {
        this.held.set(id, sha(bytes));
        this.uploads += 1;
      } else this.failedUploads += 1;
    }
    await this.readOne();
    if (Math.random() < 0.5) await this.deleteOne();
  }

  private pick(): [string, string] | undefined {
    if (this.held.size === 0) return undefined;
    const skip = Math.floor(Math.random() * Math.min(this.held.size, 64));
    let i = 0;
    for (const entry of this.held) if (i++ >= this.held.size - 1 - skip) return entry;
    return undefined;
  }

  private async readOne(): Promise<void> {
    const entry = this.pick();
    if (!entry) return;
    const res = await this.request('GET', `/v1/images/${entry[0]}`).catch(() => null);
    if (res === null) return;
    const body = Buffer.from(await res.arrayBuffer().catch(() => new ArrayBuffer(0)));
    this.reads += 1;
    if (res.status === 200 && sha(body) !== entry[1] && this.held.has(entry[0])) this.badReads += 1;
  }

  private async deleteOne(): Promise<void> {
    const entry = this.pick();
    if (!entry) return;
    this.held.delete(entry[0]);
    const res = await this.request('DELETE', `/v1/images/${entry[0]}`).catch(() => null);
    if (res?.status === 204) this.deletes += 1;
    else this.unsure.add(entry[0]);
    await res?.arrayBuffer().catch(() => {});
  }

  /** Every held image read back and checked; returns the ids that did not come back intact. */
  async lost(): Promise<string[]> {
    const lost: string[] = [];
    for (const [id, digest] of this.held) {
      if (this.unsure.has(id)) continue;
      let ok = false;
      for (let attempt = 0; attempt < 5 && !ok; attempt++) {
        const res = await this.request('GET', `/v1/images/${id}`).catch(() => null);
        const body = res ? Buffer.from(await res.arrayBuffer().catch(() => new ArrayBuffer(0))) : null;
        ok = res?.status === 200 && body !== null && sha(body) === digest;
        if (!ok) await new Promise((r) => setTimeout(r, 1_000));
      }
      if (!ok) lost.push(id);
    }
    return lost;
  }
}

/** Each client runs its steps at its share of the upload rate until `until`. */
async function drive(clients: Clients, until: number): Promise<void> {
  const periodMs = (1000 * CLIENTS) / UPLOADS_PER_SECOND;
  await Promise.all(
    Array.from({ length: CLIENTS }, async (_, client) => {
      let next = Date.now();
      while (Date.now() < until) {
        await clients.step(client);
        next += periodMs;
        const wait = next - Date.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        else next = Date.now();
      }
    }),
  );
}

async function sampleAll(cluster: Cluster): Promise<Map<string, ProcessSample>> {
  const out = new Map<string, ProcessSample>();
  const leader = await cluster.leader().catch(() => null);
  for (const p of [...cluster.managers, ...cluster.workers]) {
    const pid = p.child?.pid;
    const name = p === leader ? `${p.id}*` : p.id;
    if (pid === undefined) continue;
    out.set(name, { rssMiB: await rssMiB(pid), heapAfterGcMiB: await heapAfterGcMiB(pid) });
  }
  return out;
}

/** Entries of the leader's Raft log since its last snapshot: what each manager holds in memory. */
async function logEntries(cluster: Cluster): Promise<number | null> {
  const leader = await cluster.leader().catch(() => null);
  if (!leader) return null;
  const res = await fetch(`${leader.url}/v1/cluster/raft`, {
    headers: { [CLUSTER_SECRET_HEADER]: cluster.secret },
    signal: AbortSignal.timeout(5_000),
  }).catch(() => null);
  const view = (await res?.json().catch(() => null)) as { lastIndex: number; snapshotIndex: number } | null;
  return view ? view.lastIndex - view.snapshotIndex : null;
}

function printSample(
  minute: number,
  samples: Map<string, ProcessSample>,
  clients: Clients,
  log: number | null,
): void {
  const cells = [...samples].map(
    ([name, s]) => `${name} ${s.rssMiB.toFixed(0)}/${s.heapAfterGcMiB?.toFixed(1) ?? '?'}`,
  );
  console.log(
    `min ${String(minute).padStart(3)}  ${cells.join('  ')}   uploads ${clients.uploads} held ${clients.held.size} raft log ${log ?? '?'}`,
  );
}

async function killAndRestart(cluster: Cluster, round: number): Promise<void> {
  const w = cluster.workers[round % cluster.workers.length]!;
  await cluster.killWorker(w);
  cluster.spawnWorker(w);
  console.log(`  killed and restarted ${w.id}`);
}

childrenFromBuild();
const cluster = await ImageCluster.start({
  name: 'imgvault-soak',
  managers: 3,
  workers: 3,
  startTimeoutMs: 120_000,
  ...(SNAPSHOT_THRESHOLD ? { managerArgs: ['--snapshot-threshold', SNAPSHOT_THRESHOLD] } : {}),
});
try {
  console.log(
    `bench:soak: ${MINUTES} min, ${CLIENTS} clients at ${UPLOADS_PER_SECOND} uploads/s, a worker killed every 3 min; per process: RSS MiB / heap used after full GC MiB (* = leader)`,
  );
  const clients = new Clients(cluster);
  const start = Date.now();
  const end = start + MINUTES * 60_000;
  const load = drive(clients, end);
  let minute = 0;
  let kills = 0;
  const timers = (async () => {
    printSample(0, await sampleAll(cluster), clients, await logEntries(cluster));
    while (Date.now() < end) {
      const nextMinute = start + (minute + 1) * 60_000;
      const nextKill = start + (kills + 1) * KILL_EVERY_MS;
      const at = Math.min(nextMinute, nextKill, end);
      await new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())));
      if (Date.now() >= nextKill && nextKill < end) await killAndRestart(cluster, kills++);
      if (Date.now() >= nextMinute) {
        printSample(++minute, await sampleAll(cluster), clients, await logEntries(cluster));
      }
    }
  })();
  await Promise.all([load, timers]);
  await cluster.waitForWorkersUp(
    cluster.workers.map((w) => w.id),
    120_000,
  );
  const lost = await clients.lost();
  console.log(
    `uploads ${clients.uploads} (failed ${clients.failedUploads}), reads ${clients.reads} (bad ${clients.badReads}), deletes ${clients.deletes}, held ${clients.held.size}, unsure ${clients.unsure.size}, lost ${lost.length}${lost.length > 0 ? `: ${lost.slice(0, 10).join(', ')}` : ''}`,
  );
  if (lost.length > 0 || clients.badReads > 0) process.exitCode = 1;
} finally {
  await cluster.close();
  await rm(probeDir, { recursive: true, force: true });
}
