// Peak RSS of a snapshot's sender and receiver: metadata tables filled with N object records
// (straight into LevelDB, not through Raft, by a process of their own); the sender writes their
// streamed snapshot file and sends it over the snapshot route; another receives it, checks it and
// installs it into its own tables. Sender and receiver run as a manager does (the launcher's heap
// flags and MALLOC_ARENA_MAX, src/cli/localProcess.ts), and each prints its peak RSS (VmHWM); the
// receiver also samples its memory every second (bench/memorySampler.ts) and prints the split at
// its highest RSS and the peak of each part, so memory that grows with N shows where it is.
//
//   npm run bench:snapshot -- [--images 200000] [--unsynced] [--keep DIR] [--trace]

import { fork } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { serve } from '@hono/node-server';
import { CHILD_ENV, HEAP_FLAGS } from '../src/cli/localProcess.ts';
import { type SnapshotFileRef, SnapshotFolder } from '../src/consensus/snapshotFiles.ts';
import { describeSnapshot, restoreSnapshot } from '../src/consensus/snapshots.ts';
import { snapshotRoutes } from '../src/consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../src/consensus/transport/snapshotSender.ts';
import type { Message } from '../src/consensus/types.ts';
import { markCleanStop } from '../src/metadata/cleanStop.ts';
import { MetadataStateMachine } from '../src/metadata/metadataStateMachine.ts';
import { encodeObject, MetadataTables, type TableOp } from '../src/metadata/tables.ts';
import { describe, type MemorySample, MemorySampler } from './memorySampler.ts';

const USAGE = `npm run bench:snapshot -- [--images N] [--unsynced] [--keep DIR] [--trace]

A snapshot of N object records (default 200,000; three rows each) written to a file by a sender,
sent over the snapshot route and installed by a receiver, both run as a manager is (heap flags and
MALLOC_ARENA_MAX of src/cli/localProcess.ts). Prints the sender's write and send times and peak RSS,
and the receiver's install time and CPU time (all its threads, LevelDB's among them), peak RSS
(VmHWM), its split at the highest RSS sampled (anonymous: V8 heap committed, external buffers,
other native memory such as LevelDB's; file pages) and the peak of each part, and its JS heap after
a full GC once installed.

  --images N   records in the sender's tables
  --unsynced   the receiver's tables without a fsync per batch (a manager syncs each)
  --keep DIR   fill the sender's tables (and write its snapshot file) in DIR once and reuse them on
               later runs with the same N; only the receiver's folder is removed
  --trace      print the receiver's memory every second while it runs`;

interface Options {
  images: number;
  synced: boolean;
  keep: string | null;
  trace: boolean;
}

function parseOptions(argv: string[]): Options {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        images: { type: 'string', default: '200000' },
        unsynced: { type: 'boolean', default: false },
        keep: { type: 'string' },
        trace: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    }));
  } catch (err) {
    console.error(`${(err as Error).message}\n\n${USAGE}`);
    process.exit(2);
  }
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const images = Number(values.images);
  if (!Number.isInteger(images) || images < 1) {
    console.error(`--images must be a positive integer\n\n${USAGE}`);
    process.exit(2);
  }
  return {
    images,
    synced: !values.unsynced,
    keep: (values.keep as string | undefined) ?? null,
    trace: values.trace === true,
  };
}

/** How a child learns its role: never from the command line, which is the user's. */
const ROLE_ENV = 'IMGVAULT_BENCH_SNAPSHOT_ROLE';
const SECRET = 'bench-snapshot-secret-0123456789abcdef';
const MiB = 1024 * 1024;
const peakMiB = () => (process.resourceUsage().maxRSS / 1024).toFixed(0);

async function fill(dir: string, count: number): Promise<void> {
  const tables = await MetadataTables.open(dir);
  for (let at = 0; at < count; at += 10_000) {
    const ops: TableOp[] = [];
    for (let i = at; i < Math.min(count, at + 10_000); i++) {
      const value = encodeObject({
        size: 100_000 + i,
        sha256: i.toString(16).padStart(64, '0'),
        contentType: 'image/jpeg',
        createdAt: 1_700_000_000_000 + i,
        replicas: ['w1', 'w2'],
        crc32c: (i % 4_294_967_296).toString(16).padStart(8, '0'),
      });
      ops.push({ type: 'put', table: 'objects', key: `img-${String(i).padStart(10, '0')}`, value });
      ops.push({
        type: 'put',
        table: 'nodeIndex',
        key: `w1/img-${String(i).padStart(10, '0')}`,
        value: '{}',
      });
      ops.push({
        type: 'put',
        table: 'nodeIndex',
        key: `w2/img-${String(i).padStart(10, '0')}`,
        value: '{}',
      });
    }
    await tables.write(ops, at / 10_000 + 1);
  }
  await tables.close();
  // As a clean stop leaves them: the state machine would otherwise rebuild them from empty.
  await markCleanStop(dir);
}

/** A complete snapshot file of `index` a run before left in `folder` (--keep), else null. */
async function keptFile(dir: string, index: number): Promise<SnapshotFileRef | null> {
  for (const name of await readdir(dir)) {
    const m = /^([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{64})\.snap$/.exec(name);
    if (m === null || Number.parseInt(m[1]!, 16) !== index) continue;
    const { size } = await stat(join(dir, name));
    return { index, term: Number.parseInt(m[2]!, 16), size, sha256: m[3]! };
  }
  return null;
}

async function sender(dir: string, url: string): Promise<void> {
  const sm = await MetadataStateMachine.open(join(dir, 'metadata'));
  const folder = await SnapshotFolder.open(join(dir, 'snapshots'));
  const t0 = performance.now();
  const index = sm.appliedIndex();
  const kept = await keptFile(folder.dir, index);
  const file = kept ?? (await folder.write(index, 1, sm.snapshotChunks()));
  const wroteMs = kept === null ? performance.now() - t0 : Number.NaN;
  const msg: Message = {
    type: 'MsgSnap',
    from: 'm1',
    to: 'm2',
    term: 1,
    snapshot: {
      metadata: { index, term: 1, confState: { voters: ['m1', 'm2'], learners: [] } },
      data: describeSnapshot(new Map([['m1', 'http://127.0.0.1:1']]), file),
    },
  };
  const t1 = performance.now();
  const ok = await new Promise<boolean>((resolve) => {
    new SnapshotSender({ id: 'm1', folder, secret: SECRET, onSnapshotStatus: (_p, ok) => resolve(ok) }).send(
      msg,
      url,
    );
  });
  await sm.close();
  process.send?.({
    role: 'sender',
    ok,
    bytes: file.size,
    writeMs: Math.round(wroteMs),
    sendMs: Math.round(performance.now() - t1),
    peakMiB: peakMiB(),
  });
}

/** Heap in use after a full GC (the receiver runs with --expose-gc): what is still referenced. */
function heapAfterGcMiB(): string {
  (globalThis as { gc?: () => void }).gc?.();
  return (process.memoryUsage().heapUsed / MiB).toFixed(0);
}

async function receiver(dir: string, synced: boolean, trace: boolean): Promise<void> {
  const folder = await SnapshotFolder.open(join(dir, 'snapshots'));
  // As a manager opens them: every batch fsynced (its log is compacted without a file).
  const sm = await MetadataStateMachine.open(join(dir, 'metadata'), undefined, { syncedWrites: synced });
  let sampler: MemorySampler | null = null;
  const app = snapshotRoutes({
    secret: SECRET,
    selfId: 'm2',
    folder,
    onMessage: (msg) => {
      const t0 = performance.now();
      const cpu0 = process.cpuUsage();
      void restoreSnapshot(sm, folder, msg.snapshot!.data, msg.snapshot!.metadata.index).then(async () => {
        const installMs = Math.round(performance.now() - t0);
        const cpu = process.cpuUsage(cpu0);
        const installCpuMs = Math.round((cpu.user + cpu.system) / 1000);
        const memory = sampler!.stop();
        const heapAfterGc = heapAfterGcMiB();
        const digest = await sm.tableDigest();
        await sm.close();
        process.send?.({
          role: 'receiver',
          installMs,
          installCpuMs,
          appliedIndex: digest.appliedIndex,
          peakMiB: peakMiB(),
          heapAfterGc,
          ...memory,
        });
      });
      return true;
    },
  });
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => {
    // From before the first byte arrives: the receipt of the file counts too.
    sampler = new MemorySampler(trace);
    process.send?.({ role: 'listening', url: `http://127.0.0.1:${info.port}` });
  });
  process.on('disconnect', () => server.close());
}

function child(role: string, args: string[], asManager: boolean) {
  return fork(new URL(import.meta.url).pathname, args, {
    execArgv: [...(asManager ? [...HEAP_FLAGS, '--expose-gc'] : []), '--import', 'tsx'],
    env: { ...CHILD_ENV, ...process.env, [ROLE_ENV]: role },
  });
}

/** Where the sender's tables are, filled now unless --keep holds them filled with `images`. */
async function senderTables(root: string, images: number, kept: boolean): Promise<string> {
  const tx = join(root, 'tx');
  const marker = join(root, `filled-${images}`);
  if (
    kept &&
    (await stat(marker).then(
      () => true,
      () => false,
    ))
  )
    return tx;
  await rm(tx, { recursive: true, force: true });
  // Filled by a process of its own, so the sender's peak is the snapshot's alone.
  const filler = child('fill', [join(tx, 'metadata'), String(images)], false);
  const code = await new Promise((resolve) => filler.on('exit', resolve));
  if (code !== 0) throw new Error(`filling the tables failed (exit ${code})`);
  await writeFile(marker, '');
  return tx;
}

function printReceiver(rx: Record<string, unknown>): void {
  const { atPeak, peaks } = rx as { atPeak: MemorySample; peaks: MemorySample };
  console.log(
    `  receiver: install ${rx.installMs} ms (CPU ${rx.installCpuMs} ms, every thread), peak RSS ${rx.peakMiB} MiB (VmHWM)`,
  );
  console.log(`    at its highest sample (${(atPeak.atMs / 1000).toFixed(0)} s): ${describe(atPeak)}`);
  console.log(`    peak of each part:           ${describe(peaks)}`);
  console.log(`    JS heap after a full GC, installed: ${rx.heapAfterGc} MiB`);
}

async function main(): Promise<void> {
  const opts = parseOptions(process.argv.slice(2));
  const { images } = opts;
  if (opts.keep !== null) await mkdir(opts.keep, { recursive: true });
  const root = opts.keep ?? (await mkdtemp(join(tmpdir(), 'imgvault-bench-snap-')));
  await rm(join(root, 'rx'), { recursive: true, force: true });
  const rx = child('receiver', [join(root, 'rx'), String(opts.synced), String(opts.trace)], true);
  try {
    const url = await new Promise<string>((resolve) =>
      rx.on('message', (m: { role: string; url?: string }) => m.role === 'listening' && resolve(m.url!)),
    );
    const installed = new Promise<Record<string, unknown>>((resolve) =>
      rx.on('message', (m: Record<string, unknown>) => m.role === 'receiver' && resolve(m)),
    );
    const tx = child('sender', [await senderTables(root, images, opts.keep !== null), url], true);
    const sent = await new Promise<Record<string, unknown>>((resolve) => tx.on('message', resolve));
    const rxResult = await installed;
    console.log(
      `snapshot catch-up, ${images.toLocaleString('en-US')} images (${((sent.bytes as number) / MiB).toFixed(1)} MiB file)${opts.synced ? '' : ', receiver unsynced'}`,
    );
    const write =
      Number.isNaN(sent.writeMs) || sent.writeMs === null ? 'kept from a run before' : `${sent.writeMs} ms`;
    console.log(`  sender:   write ${write}, send ${sent.sendMs} ms, peak RSS ${sent.peakMiB} MiB`);
    printReceiver(rxResult);
    tx.kill();
  } finally {
    rx.kill();
    await rm(opts.keep === null ? root : join(root, 'rx'), { recursive: true, force: true });
  }
}

const role = process.env[ROLE_ENV];
const args = process.argv.slice(2);
if (role === 'fill') await fill(args[0]!, Number(args[1]));
else if (role === 'sender') await sender(args[0]!, args[1]!);
else if (role === 'receiver') await receiver(args[0]!, args[1] === 'true', args[2] === 'true');
else await main();
