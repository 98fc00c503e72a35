// A manager whose disk filled up must still start: its Raft log and tables are LevelDB stores that
// write as they open (the last run's log becomes a table, a new MANIFEST), and on a disk full to the
// brim the open failed ("the disk holding ... is full"), so a manager killed then stayed down, and
// with it the reads and the deletes that free the disk (the embedded cluster keeps every manager
// and worker on one disk). The manager keeps a disk reserve and releases it to open
// (src/manager/managerDisk.ts). A real manager process with its data folder (Raft log
// included) on a real tmpfs filled to the brim; skipped where mounting needs a privilege the
// runner lacks (as tests/storagenode/fullDiskStart.test.ts).

import { readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, it } from 'vitest';
import type { ClusterStatus } from '../../src/cli/clusterStatus.ts';
import { RESERVE_FILE } from '../../src/diskReserve.ts';
import { MANAGER_RESERVE_BYTES } from '../../src/manager/managerDisk.ts';
import { fetchRaftView } from '../../src/manager/raftView.ts';
import { fillDisk, smallDiskForSuite } from '../storagenode/workerHarness.ts';
import { ImageCluster, type ManagerProc, pngImage, runCli, until } from './imageCluster.ts';

const disk = smallDiskForSuite('64m');
let cluster: ImageCluster | undefined;

afterEach(async () => {
  await cluster?.close();
  cluster = undefined;
});

const reserveSize = async (m: ManagerProc) =>
  (await stat(join(m.dataDir, RESERVE_FILE)).catch(() => null))?.size ?? 0;

interface UploadAnswer {
  id?: string;
  error?: { code: string; message: string };
}

async function upload(m: ManagerProc, bytes: Buffer): Promise<{ status: number; body: UploadAnswer }> {
  const res = await fetch(`${m.url}/v1/images`, { method: 'POST', body: bytes });
  return { status: res.status, body: (await res.json()) as UploadAnswer };
}

it('a manager killed on a full disk starts by releasing its reserve: reads, deletes, 507 to uploads, status warns, reserve made again', async (ctx) => {
  if (!disk.mounted) ctx.skip();
  cluster = await ImageCluster.start({
    name: 'full-manager-disk',
    managers: 1,
    workers: 2,
    managerDataRoot: disk.dir,
    logLevel: 'info',
  });
  const m1 = cluster.managers[0]!;
  expect(await reserveSize(m1)).toBe(MANAGER_RESERVE_BYTES);
  const stored = new Map<string, Buffer>();
  for (let i = 0; i < 4; i++) {
    const bytes = pngImage(20_000 + i);
    const { status, body } = await upload(m1, bytes);
    expect(status).toBe(201);
    stored.set(body.id!, bytes);
  }

  const filler = join(disk.dir, 'filler');
  await fillDisk(filler);
  // kill -9: the Raft log's last entries are in LevelDB's log file, to be made a table at the next open.
  await cluster.killManager(m1);
  cluster.spawnManager(m1);
  await cluster.leader(30_000);

  expect(await readFile(join(cluster.root, 'm1.log'), 'utf8')).toContain(
    '"event":"storage.reserve_released"',
  );
  expect(await reserveSize(m1)).toBe(0);
  expect((await fetchRaftView(m1.url, 5_000))?.disk).toMatchObject({
    reserveInPlace: false,
    reserveBytes: MANAGER_RESERVE_BYTES,
  });

  for (const [id, bytes] of stored) {
    const res = await fetch(`${m1.url}/v1/images/${id}`);
    expect([id, res.status, Buffer.from(await res.arrayBuffer()).equals(bytes)]).toEqual([id, 200, true]);
  }
  // The room the release freed is the Raft log's and the tables': no upload takes it.
  const refused = await upload(m1, pngImage(20_000));
  expect(refused.status).toBe(507);
  expect(refused.body.error).toMatchObject({ code: 'InsufficientStorage' });
  expect(refused.body.error?.message).toContain('disk reserve');
  // A delete is a small log write: how an operator makes room.
  const [gone] = stored.keys();
  expect((await fetch(`${m1.url}/v1/images/${gone}`, { method: 'DELETE' })).status).toBe(204);
  expect((await fetch(`${m1.url}/v1/images/${gone}`)).status).toBe(404);
  stored.delete(gone!);

  const { code, stdout } = await runCli(['status', '--json', '--url', m1.url]);
  const status = JSON.parse(stdout) as ClusterStatus;
  expect(code).toBe(3);
  expect(status.warnings).toEqual([
    expect.stringMatching(/^manager m1's disk is full: its disk reserve is not in place/),
  ]);
  expect(status.problems).toContain(
    "uploads are refused (507 InsufficientStorage): the leader m1's disk is full (its disk reserve is not in place)",
  );

  // Room again: the manager's next look at its disk makes the reserve, and uploads come.
  await rm(filler);
  await until(
    'the reserve made again',
    async () => (await fetchRaftView(m1.url, 2_000))?.disk?.reserveInPlace === true,
    20_000,
  );
  expect(await reserveSize(m1)).toBe(MANAGER_RESERVE_BYTES);
  expect((await upload(m1, pngImage(20_000))).status).toBe(201);
  for (const [id, bytes] of stored) {
    const res = await fetch(`${m1.url}/v1/images/${id}`);
    expect(Buffer.from(await res.arrayBuffer()).equals(bytes)).toBe(true);
  }

  // Full again with the reserve in place: a disk shared with other managers shows the room they
  // released as free space, which uploads must not take either.
  await fillDisk(filler);
  await until(
    'the manager to see its disk full',
    async () =>
      ((await fetchRaftView(m1.url, 2_000))?.disk?.freeBytes ?? Number.MAX_VALUE) < MANAGER_RESERVE_BYTES,
    10_000,
  );
  const full = await upload(m1, pngImage(20_000));
  expect(full.status).toBe(507);
  expect(full.body.error?.message).toMatch(/less than the \d+ it keeps for its Raft log and tables/);
  await rm(filler);
}, 120_000);
