// The failure paths of snapshot transfer, with real files in temp folders and real HTTP on
// 127.0.0.1: a follower that crashed between a file's last byte and its rename, or restarted
// mid-transfer; a leader that removes the file it is sending; a follower that answers without
// taking a byte; and what `holds` compares.

import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type SnapshotFileRef, SnapshotFolder, snapshotFileName } from '../../src/consensus/snapshotFiles.ts';
import { RAFT_SNAPSHOT_PATH } from '../../src/consensus/transport/snapshotRoutes.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';
import { chunksOf, PIECE, SnapshotTransferRig, snapshotMessage } from './snapshotTransferRig.ts';

const SECRET = 'snapshot-receive-secret-0123456789';
const rig = new SnapshotTransferRig(SECRET);

let root: string;

afterEach(async () => {
  await rig.close();
  await rm(root, { recursive: true, force: true });
});

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
    const file = await leader.write(10, 2, chunksOf(bytes));
    // The follower's state after a crash between the last fsync of the .part and its rename.
    const followerDir = join(root, 'follower');
    await SnapshotFolder.open(followerDir);
    await writeFile(join(followerDir, partName(file)), bytes);
    const follower = await SnapshotFolder.open(followerDir);
    const r = await rig.receiver(follower);
    const statuses: boolean[] = [];
    rig.sender(leader, statuses).send(snapshotMessage(file), r.url);
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
    const r = await rig.receiver(await SnapshotFolder.open(dir));
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
    expect(await folder.append(file, 0, chunksOf(bytes), PIECE)).toBe(1000);
    expect(folder.holds(file)).toBe(true);
  });

  it('sends and delivers a 0-byte snapshot', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const file = await leader.write(3, 1, chunksOf(Buffer.alloc(0)));
    const follower = await SnapshotFolder.open(join(root, 'follower'));
    const r = await rig.receiver(follower);
    const statuses: boolean[] = [];
    rig.sender(leader, statuses).send(snapshotMessage(file), r.url);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    expect(r.delivered).toHaveLength(1);
    expect(follower.holds(file)).toBe(true);
  });

  it('resumes after the follower restarts (folder reopened) mid-transfer', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const leader = await SnapshotFolder.open(join(root, 'leader'));
    const bytes = randomBytes(PIECE * 12);
    const file = await leader.write(20, 2, chunksOf(bytes));
    const followerDir = join(root, 'follower');
    const first = await rig.receiver(await SnapshotFolder.open(followerDir), { putDelayMs: 30 });
    const cut = rig.sender(leader, []);
    cut.send(snapshotMessage(file), first.url);
    await until('a few pieces arrived', () => first.offsets.length >= 4, 30_000);
    cut.close();
    await first.close();

    const follower = await SnapshotFolder.open(followerDir);
    const again = await rig.receiver(follower);
    const statuses: boolean[] = [];
    rig.sender(leader, statuses).send(snapshotMessage(file), again.url);
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
    const file = await leader.write(30, 2, chunksOf(bytes));
    const follower = await SnapshotFolder.open(join(root, 'follower'));
    const r = await rig.receiver(follower, { putDelayMs: 30 });
    const statuses: boolean[] = [];
    rig.sender(leader, statuses).send(snapshotMessage(file), r.url);
    await until('a few pieces arrived', () => r.offsets.length >= 2, 30_000);
    const newer = await leader.write(40, 2, chunksOf(randomBytes(1000)));
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
    await folder.append(oldRef, 0, chunksOf(old.subarray(0, 2000)), PIECE);
    const next = randomBytes(5000);
    const nextRef = refOf(60, next);
    await folder.append(nextRef, 0, chunksOf(next.subarray(0, 2000)), PIECE);
    expect(await readdir(dir)).toEqual([partName(nextRef)]);

    // A complete file at 70 makes the .part at 60 useless; a .part newer than it stays.
    const newest = randomBytes(100);
    await folder.append(refOf(70, newest), 0, chunksOf(newest), PIECE);
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
    const file = await leader.write(10, 2, chunksOf(randomBytes(PIECE * 2)));
    const follower = await SnapshotFolder.open(join(root, 'follower'));
    const r = await rig.receiver(follower, {
      answer: (offset) => Response.json({ received: offset }),
    });
    const statuses: boolean[] = [];
    rig.sender(leader, statuses).send(snapshotMessage(file), r.url);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([false]);
    expect(r.offsets.length).toBeLessThanOrEqual(3);
    expect(r.delivered).toHaveLength(0);
  });

  it('holds a file only with its whole sha256 and its size', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snaprecv-'));
    const folder = await SnapshotFolder.open(join(root, 'f'));
    const file = await folder.write(5, 1, chunksOf(randomBytes(3000)));
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
    const r = await rig.receiver(await SnapshotFolder.open(join(root, 'follower')));
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
