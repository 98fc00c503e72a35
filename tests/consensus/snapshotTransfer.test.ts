// Snapshot files between managers over real HTTP on 127.0.0.1: streamed in pieces on their own
// route, resumed from what the follower holds after a cut, refused when the bytes do not match
// the digest, and the MsgSnap delivered only once the whole file is there.

import { randomBytes } from 'node:crypto';
import { copyFile, mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SnapshotFolder } from '../../src/consensus/snapshotFiles.ts';
import { RAFT_SNAPSHOT_MESSAGE_PATH } from '../../src/consensus/transport/snapshotRoutes.ts';
import type { Message } from '../../src/consensus/types.ts';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { until } from '../helpers/until.ts';
import {
  chunksOf,
  PIECE,
  type SnapshotReceiver,
  SnapshotTransferRig,
  snapshotMessage,
} from './snapshotTransferRig.ts';

const SECRET = 'snapshot-transfer-secret-0123456789';
const rig = new SnapshotTransferRig(SECRET);

let root: string;

afterEach(async () => {
  await rig.close();
  await rm(root, { recursive: true, force: true });
});

interface Receiver extends SnapshotReceiver {
  folder: SnapshotFolder;
}

async function receiver(putDelayMs = 0): Promise<Receiver> {
  const folder = await SnapshotFolder.open(join(root, 'receiver'));
  return { ...(await rig.receiver(folder, { putDelayMs })), folder };
}

/** A 4 MiB snapshot file in the leader's folder and the MsgSnap naming it. */
async function leaderFile(): Promise<{ folder: SnapshotFolder; msg: Message; bytes: Buffer }> {
  const folder = await SnapshotFolder.open(join(root, 'leader'));
  const bytes = randomBytes(4 * 1024 * 1024);
  const file = await folder.write(42, 3, chunksOf(bytes));
  return { folder, msg: snapshotMessage(file), bytes };
}

describe('snapshot transfer', () => {
  it('streams a file in pieces, then delivers the MsgSnap naming it', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapxfer-'));
    const r = await receiver();
    const { folder, msg, bytes } = await leaderFile();
    const statuses: boolean[] = [];
    expect(rig.sender(folder, statuses).send(msg, r.url)).toBe(true);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    expect(r.offsets).toHaveLength(bytes.length / PIECE);
    expect(r.delivered).toHaveLength(1);
    expect(r.delivered[0]!.snapshot!.data).toBe(msg.snapshot!.data);
    const [name] = await readdir(join(root, 'receiver'));
    expect((await readFile(join(root, 'receiver', name!))).equals(bytes)).toBe(true);
  });

  it('leaves an inline MsgSnap to the message path', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapxfer-'));
    const { folder, msg } = await leaderFile();
    const inline = { ...msg, snapshot: { ...msg.snapshot!, data: '{"m1":"x"}\n' } };
    expect(rig.sender(folder, []).send(inline, 'http://127.0.0.1:1')).toBe(false);
  });

  it('resumes after a cut from the bytes the follower holds', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapxfer-'));
    const r = await receiver(30);
    const { folder, msg, bytes } = await leaderFile();
    const first = rig.sender(folder, []);
    first.send(msg, r.url);
    await until('a few pieces arrived', () => r.offsets.length >= 4, 30_000);
    // The cut: the sender stops with a piece in flight (closing aborts its request mid-stream).
    first.close();
    const cutAt = r.offsets.length;
    const statuses: boolean[] = [];
    rig.sender(folder, statuses).send(msg, r.url);
    await until('the resumed transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([true]);
    const resumedFrom = r.offsets[cutAt]!;
    expect(resumedFrom).toBeGreaterThanOrEqual(3 * PIECE);
    // Nothing before the resume point was sent again.
    expect(r.offsets.slice(cutAt).every((o) => o >= resumedFrom)).toBe(true);
    expect(r.delivered).toHaveLength(1);
    const [name] = (await readdir(join(root, 'receiver'))).filter((n) => n.endsWith('.snap'));
    expect((await readFile(join(root, 'receiver', name!))).equals(bytes)).toBe(true);
  });

  it('refuses a file that does not match its digest: no MsgSnap delivered, nothing kept', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapxfer-'));
    const r = await receiver();
    const { folder, msg } = await leaderFile();
    const data = msg.snapshot!.data;
    const lying = data.replace(
      /"sha256":"([0-9a-f]{64})"/,
      (_m, sha: string) => `"sha256":"${sha.slice(0, 16)}${'0'.repeat(48)}"`,
    );
    // The leader's own file, under the name the lying descriptor gives it.
    const file = JSON.parse(lying.slice(lying.indexOf('\n') + 1)).file;
    await copyFile(join(root, 'leader', (await readdir(join(root, 'leader')))[0]!), folder.pathOf(file));
    const forged = { ...msg, snapshot: { ...msg.snapshot!, data: lying } };
    const statuses: boolean[] = [];
    const reopened = await SnapshotFolder.open(join(root, 'leader'));
    rig.sender(reopened, statuses).send(forged, r.url);
    await until('the transfer ended', () => statuses.length > 0, 30_000);
    expect(statuses).toEqual([false]);
    expect(r.delivered).toHaveLength(0);
    expect(await readdir(join(root, 'receiver'))).toEqual([]);
  });

  it('refuses a request without the raft credential, and a MsgSnap whose file is not there', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-snapxfer-'));
    const r = await receiver();
    const { msg } = await leaderFile();
    const post = (secret: string) =>
      fetch(`${r.url}${RAFT_SNAPSHOT_MESSAGE_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [CLUSTER_SECRET_HEADER]: secret },
        body: JSON.stringify({ message: msg }),
      });
    expect((await post('wrong-secret-0123456789')).status).toBe(401);
    const missing = await post(SECRET);
    expect(missing.status).toBe(409);
    expect(((await missing.json()) as { error: { code: string } }).error.code).toBe('SnapshotMissing');
    expect(r.delivered).toHaveLength(0);
  });
});
