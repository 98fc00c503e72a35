// The failure paths of snapshot transfer, with real files in temp folders and real HTTP on
// 127.0.0.1: a follower that crashed between a file's last byte and its rename, or restarted
// mid-transfer; a leader that removes the file it is sending; a follower that answers without
// taking a byte; and what `holds` compares.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterEach, describe, expect, it } from 'vitest';
import { type SnapshotFileRef, SnapshotFolder, snapshotFileName } from '../../src/consensus/snapshotFiles.ts';
import { describeSnapshot } from '../../src/consensus/snapshots.ts';
import { RAFT_SNAPSHOT_PATH, snapshotRoutes } from '../../src/consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../../src/consensus/transport/snapshotSender.ts';
import type { Message } from '../../src/consensus/types.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';

const SECRET = 'snapshot-receive-secret-0123456789';
const PIECE = 256 * 1024;

let root: string;
const servers: ServerType[] = [];
const senders: SnapshotSender[] = [];

afterEach(async () => {
  for (const s of senders.splice(0)) s.close();
  for (const s of servers.splice(0)) await new Promise<void>((resolve) => s.close(() => resolve()));
  await rm(root, { recursive: true, force: true });
});

interface Receiver {
  url: string;
  delivered: Message[];
  offsets: number[];
}

/** Snapshot routes over `folder`; `answer` may replace the answer to a PUT. */
async function serveRoutes(
  folder: SnapshotFolder,
  opts: { putDelayMs?: number; answer?: (offset: number) => Response | null } = {},
): Promise<Receiver> {
  const r: Receiver = { url: '', delivered: [], offsets: [] };
  const app = new Hono();
  app.use('*', async (c, next) => {
    if (c.req.method === 'PUT') {
      const offset = Number(c.req.query('offset'));
      r.offsets.push(offset);
      await new Promise((resolve) => setTimeout(resolve, opts.putDelayMs ?? 0));
      const replaced = opts.answer?.(offset) ?? null;
      if (replaced !== null) return replaced;
    }
    await next();
  });
  app.route(
    '/',
    snapshotRoutes({ secret: SECRET, selfId: 'm2', folder, onMessage: (msg) => r.delivered.push(msg) > 0 }),
  );
  await new Promise<void>((resolve) => {
    const server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => {
      r.url = `http://127.0.0.1:${info.port}`;
      resolve();
    });
    servers.push(server);
  });
  return r;
}

async function* pieces(bytes: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < bytes.length; at += 100_000) yield bytes.subarray(at, at + 100_000);
}

function snapOf(file: SnapshotFileRef): Message {
  const members = new Map([
    ['m1', 'http://127.0.0.1:1'],
    ['m2', 'http://127.0.0.1:2'],
  ]);
  return {
    type: 'MsgSnap',
    from: 'm1',
    to: 'm2',
    term: file.term,
    snapshot: {
      metadata: { index: file.index, term: file.term, confState: { voters: ['m1', 'm2'], learners: [] } },
      data: describeSnapshot(members, file),
    },
  };
}

function sender(folder: SnapshotFolder, statuses: boolean[]): SnapshotSender {
  const s = new SnapshotSender({
    id: 'm1',
    folder,
    secret: SECRET,
    pieceBytes: PIECE,
    maxAttempts: 3,
    retryDelayMs: 20,
    onSnapshotStatus: (_peer, ok) => statuses.push(ok),
  });
  senders.push(s);
  return s;
}

const refOf = (index: number, bytes: Buffer): SnapshotFileRef => ({
  index,
  term: 2,
  size: bytes.length,
  sha256: createHash('sha256').update(bytes).digest('hex'),
});
const partName = (ref: SnapshotFileRef) => snapshotFileName(ref).replace(/\.snap$/, '.part');

describe('snapshot transfer failures', () => {
  it('completes a whole .part a crash left unrenamed, so the MsgSnap is delivered', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const bytes = randomBytes(PIECE * 3);
    const file = await leader.write(10, 2, pieces(bytes));
    // The follower's state after a crash between the last fsync of the .part and its rename.
    const followerDir = join(root, 'follower');
    await SnapshotFolder.open(followerDir);
    await writeFile(join(followerDir, partName(file)), bytes);
    const follower = await SnapshotFolder.open(followerDir);
    const r = await serveRoutes(follower);
    const statuses: boolean[] = [];
    sender(leader, statuses).send(snapOf(file), r.url);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    expect(r.offsets).toEqual([]);
    expect(r.delivered).toHaveLength(1);
    expect(follower.holds(file)).toBe(true);
    expect(await readdir(followerDir)).toEqual([snapshotFileName(file)]);
  });

  it('removes a whole .part that does not match its digest when asked what it holds', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const bytes = randomBytes(1000);
    const file = refOf(7, bytes);
    const dir = join(root, 'follower');
    await SnapshotFolder.open(dir);
    await writeFile(join(dir, partName(file)), randomBytes(1000));
    const r = await serveRoutes(await SnapshotFolder.open(dir));
    const q = `from=m1&index=7&term=2&size=1000&sha256=${file.sha256}`;
    const res = await fetch(`${r.url}${RAFT_SNAPSHOT_PATH}?${q}`, {
      headers: { [CLUSTER_SECRET_HEADER]: SECRET },
    });
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ received: 0 });
    expect(await readdir(dir)).toEqual([]);
  });

  it('removes a .part longer than the file it is named for', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const bytes = randomBytes(1000);
    const file = refOf(7, bytes);
    const dir = join(root, 'follower');
    await SnapshotFolder.open(dir);
    await writeFile(join(dir, partName(file)), randomBytes(1500));
    const folder = await SnapshotFolder.open(dir);
    expect(await folder.received(file)).toBe(0);
    expect(await folder.append(file, 0, pieces(bytes), PIECE)).toBe(1000);
    expect(folder.holds(file)).toBe(true);
  });

  it('sends and delivers a 0-byte snapshot', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const file = await leader.write(3, 1, pieces(Buffer.alloc(0)));
    const follower = await SnapshotFolder.open(join(root, 'follower'));
    const r = await serveRoutes(follower);
    const statuses: boolean[] = [];
    sender(leader, statuses).send(snapOf(file), r.url);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    expect(r.delivered).toHaveLength(1);
    expect(follower.holds(file)).toBe(true);
  });

  it('resumes after the follower restarts (folder reopened) mid-transfer', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const bytes = randomBytes(PIECE * 12);
    const file = await leader.write(20, 2, pieces(bytes));
    const followerDir = join(root, 'follower');
    const first = await serveRoutes(await SnapshotFolder.open(followerDir), { putDelayMs: 30 });
    const cut = sender(leader, []);
    cut.send(snapOf(file), first.url);
    await until('a few pieces arrived', () => first.offsets.length >= 4, 30_000);
    cut.close();
    await new Promise<void>((resolve) => servers.shift()!.close(() => resolve()));

    const follower = await SnapshotFolder.open(followerDir);
    const again = await serveRoutes(follower);
    const statuses: boolean[] = [];
    sender(leader, statuses).send(snapOf(file), again.url);
    await until('the resumed transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    expect(again.offsets[0]).toBeGreaterThanOrEqual(3 * PIECE);
    expect(again.delivered).toHaveLength(1);
    expect(follower.holds(file)).toBe(true);
  });

  it('delivers a file the leader removes (a newer snapshot compacted it) while sending it', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const bytes = randomBytes(PIECE * 12);
    const file = await leader.write(30, 2, pieces(bytes));
    const follower = await SnapshotFolder.open(join(root, 'follower'));
    const r = await serveRoutes(follower, { putDelayMs: 30 });
    const statuses: boolean[] = [];
    sender(leader, statuses).send(snapOf(file), r.url);
    await until('a few pieces arrived', () => r.offsets.length >= 2, 30_000);
    const newer = await leader.write(40, 2, pieces(randomBytes(1000)));
    await leader.removeOlderThan(newer);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    expect(r.delivered).toHaveLength(1);
    expect(follower.holds(file)).toBe(true);
    // Once sent, the next compaction removes it.
    await leader.removeOlderThan(newer);
    expect(await readdir(join(root, 'leader'))).toEqual([snapshotFileName(newer)]);
  });

  it('drops older .part files when a newer transfer starts, and stale ones at open', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const dir = join(root, 'follower');
    const folder = await SnapshotFolder.open(dir);
    const old = randomBytes(5000);
    const oldRef = refOf(50, old);
    await folder.append(oldRef, 0, pieces(old.subarray(0, 2000)), PIECE);
    const next = randomBytes(5000);
    const nextRef = refOf(60, next);
    await folder.append(nextRef, 0, pieces(next.subarray(0, 2000)), PIECE);
    expect(await readdir(dir)).toEqual([partName(nextRef)]);

    // A complete file at 70 makes the .part at 60 useless; a .part newer than it stays.
    const newest = randomBytes(100);
    await folder.append(refOf(70, newest), 0, pieces(newest), PIECE);
    const later = randomBytes(5000);
    const laterRef = refOf(80, later);
    await writeFile(join(dir, partName(laterRef)), later.subarray(0, 10));
    await writeFile(join(dir, partName(nextRef)), next.subarray(0, 10));
    await SnapshotFolder.open(dir);
    expect((await readdir(dir)).sort()).toEqual(
      [snapshotFileName(refOf(70, newest)), partName(laterRef)].sort(),
    );
  });

  it('gives up on a follower that answers a piece without taking a byte', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const file = await leader.write(10, 2, pieces(randomBytes(PIECE * 2)));
    const follower = await SnapshotFolder.open(join(root, 'follower'));
    const r = await serveRoutes(follower, {
      answer: (offset) => Response.json({ received: offset }),
    });
    const statuses: boolean[] = [];
    sender(leader, statuses).send(snapOf(file), r.url);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([false]);
    expect(r.offsets.length).toBeLessThanOrEqual(3);
    expect(r.delivered).toHaveLength(0);
  });

  it('holds a file only with its whole sha256 and its size', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const folder = await SnapshotFolder.open(join(root, 'f'));
    const file = await folder.write(5, 1, pieces(randomBytes(3000)));
    expect(folder.holds(file)).toBe(true);
    expect(folder.holds({ ...file, size: 2999 })).toBe(false);
    const flipped = file.sha256.slice(0, 16) + (file.sha256[16] === '0' ? '1' : '0') + file.sha256.slice(17);
    expect(folder.holds({ ...file, sha256: flipped })).toBe(false);
    expect((await SnapshotFolder.open(join(root, 'f'))).holds(file)).toBe(true);
  });

  it('answers a piece without a content-length with 411', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const bytes = randomBytes(1000);
    const file = refOf(7, bytes);
    const r = await serveRoutes(await SnapshotFolder.open(join(root, 'follower')));
    const q = `from=m1&index=7&term=2&size=1000&sha256=${file.sha256}&offset=0`;
    // A streamed body goes out chunked, with no content-length.
    const res = await fetch(`${r.url}${RAFT_SNAPSHOT_PATH}?${q}`, {
      method: 'PUT',
      headers: { [CLUSTER_SECRET_HEADER]: SECRET, 'content-type': 'application/octet-stream' },
      body: new Blob([bytes]).stream(),
      duplex: 'half',
    } as RequestInit);
    expect(res.status).toBe(411);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('LengthRequired');
  });
});
