// Peak RSS of a snapshot's sender and receiver: metadata tables filled with N object records
// (straight into LevelDB, not through Raft, by a process of their own); the sender writes their
// streamed snapshot file and sends it over the snapshot route; another receives it, checks it and installs it into its own tables.
// Each prints its peak RSS (getrusage maxrss), so memory that grows with N shows up here.
//
//   npm run bench:snapshot -- --images 200000

import { fork } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { SnapshotFolder } from '../src/consensus/snapshotFiles.ts';
import { describeSnapshot, restoreSnapshot } from '../src/consensus/snapshots.ts';
import { snapshotRoutes } from '../src/consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../src/consensus/transport/snapshotSender.ts';
import type { Message } from '../src/consensus/types.ts';
import { markCleanStop } from '../src/metadata/cleanStop.ts';
import { MetadataStateMachine } from '../src/metadata/metadataStateMachine.ts';
import { encodeObject, MetadataTables, type TableOp } from '../src/metadata/tables.ts';

const SECRET = 'bench-snapshot-secret-0123456789abcdef';
/** --unsynced: the receiver's tables without synced writes (a manager syncs each batch). */
const SYNCED = !process.argv.includes('--unsynced');
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

async function sender(dir: string, url: string): Promise<void> {
  const sm = await MetadataStateMachine.open(join(dir, 'metadata'));
  const folder = await SnapshotFolder.open(join(dir, 'snapshots'));
  const t0 = performance.now();
  const index = sm.appliedIndex();
  const file = await folder.write(index, 1, sm.snapshotChunks());
  const wroteMs = performance.now() - t0;
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

async function receiver(dir: string): Promise<void> {
  const folder = await SnapshotFolder.open(join(dir, 'snapshots'));
  // As a manager opens them: every batch fsynced (its log is compacted without a file).
  const sm = await MetadataStateMachine.open(join(dir, 'metadata'), undefined, {
    syncedWrites: SYNCED,
  });
  const app = snapshotRoutes({
    secret: SECRET,
    selfId: 'm2',
    folder,
    onMessage: (msg) => {
      const t0 = performance.now();
      void restoreSnapshot(sm, folder, msg.snapshot!.data, msg.snapshot!.metadata.index).then(async () => {
        const installMs = Math.round(performance.now() - t0);
        const digest = await sm.tableDigest();
        await sm.close();
        process.send?.({
          role: 'receiver',
          installMs,
          appliedIndex: digest.appliedIndex,
          peakMiB: peakMiB(),
        });
      });
      return true;
    },
  });
  const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) =>
    process.send?.({ role: 'listening', url: `http://127.0.0.1:${info.port}` }),
  );
  process.on('disconnect', () => server.close());
}

function child(role: string, ...args: string[]) {
  return fork(new URL(import.meta.url).pathname, [role, ...args], { execArgv: ['--import', 'tsx'] });
}

async function main(): Promise<void> {
  const images = Number(process.argv[process.argv.indexOf('--images') + 1] ?? 200_000) || 200_000;
  const root = await mkdtemp(join(tmpdir(), 'imgvault-bench-snap-'));
  const rx = child('receiver', join(root, 'rx'), ...(SYNCED ? [] : ['--unsynced']));
  try {
    const url = await new Promise<string>((resolve) =>
      rx.on('message', (m: { role: string; url?: string }) => m.role === 'listening' && resolve(m.url!)),
    );
    const installed = new Promise<Record<string, unknown>>((resolve) =>
      rx.on('message', (m: Record<string, unknown>) => m.role === 'receiver' && resolve(m)),
    );
    // Filled by a process of its own, so the sender's peak is the snapshot's alone.
    const filler = child('fill', join(root, 'tx', 'metadata'), String(images));
    await new Promise((resolve) => filler.on('exit', resolve));
    const tx = child('sender', join(root, 'tx'), url);
    const sent = await new Promise<Record<string, unknown>>((resolve) => tx.on('message', resolve));
    const rxResult = await installed;
    console.log(
      `snapshot catch-up, ${images.toLocaleString('en-US')} images (${((sent.bytes as number) / MiB).toFixed(1)} MiB file)`,
    );
    console.log(`  sender:   write ${sent.writeMs} ms, send ${sent.sendMs} ms, peak RSS ${sent.peakMiB} MiB`);
    console.log(`  receiver: install ${rxResult.installMs} ms, peak RSS ${rxResult.peakMiB} MiB`);
    tx.kill();
  } finally {
    rx.kill();
    await rm(root, { recursive: true, force: true });
  }
}

const [role, ...args] = process.argv.slice(2);
if (role === 'fill') await fill(args[0]!, Number(args[1]));
else if (role === 'sender') await sender(args[0]!, args[1]!);
else if (role === 'receiver') await receiver(args[0]!);
else await main();
