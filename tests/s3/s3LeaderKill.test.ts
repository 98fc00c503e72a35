// A leader killed (kill -9) in the middle of an `rclone sync` to another manager's S3 endpoint:
// rclone rides through it (the endpoint answers 503 while no leader is known, then forwards to the
// new one), and in the end every file is there byte for byte, stored once.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type ImageCluster, until } from '../integration/imageCluster.ts';
import { makeImages, s3Url, startS3Cluster, treeDigest } from './s3Fixture.ts';
import { CONVERT, missing, RCLONE, rcloneEnv, run } from './s3Tools.ts';

let cluster: ImageCluster | undefined;
let dir: string | undefined;

afterAll(async () => {
  await cluster?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface Stats {
  objects: number;
  names: { count: number } | null;
}

async function stats(url: string): Promise<Stats> {
  const res = await fetch(`${url}/v1/cluster/stats`, { signal: AbortSignal.timeout(5_000) });
  return (await res.json()) as Stats;
}

describe('leader kill during rclone sync', () => {
  const skip = missing(RCLONE, CONVERT);
  it.skipIf(skip !== null)(
    `loses nothing and stores nothing twice ${skip ?? ''}`,
    async () => {
      dir = await mkdtemp(join(tmpdir(), 's3-leaderkill-'));
      const started = await startS3Cluster('s3-leaderkill');
      cluster = started.cluster;
      const leader = await cluster.leader();
      const index = cluster.managers.findIndex((m) => m.id !== leader.id);
      const other = cluster.managers[index]!;
      const env = await rcloneEnv(dir, started.key, s3Url(cluster, index));
      const src = join(dir, 'src');
      const FILES = 60;
      await makeImages(src, FILES);
      expect((await run(RCLONE, ['mkdir', 'iv:kill-photos'], env)).code).toBe(0);

      // At most 4 requests a second: the sync takes 15 s or more, so the kill lands in the middle.
      const sync = run(
        RCLONE,
        ['sync', '--tpslimit', '4', '--low-level-retries', '20', src, 'iv:kill-photos/p'],
        env,
        400_000,
      );
      await until(
        'a few names committed',
        async () => ((await stats(other.url)).names?.count ?? 0) >= 8,
        120_000,
      );
      await cluster.killManager(leader);
      expect((await stats(other.url)).names?.count).toBeLessThan(FILES);
      const done = await sync;
      expect(done.code, done.stderr).toBe(0);

      const down = join(dir, 'down');
      const back = await run(RCLONE, ['sync', 'iv:kill-photos/p', down], env);
      expect(back.code, back.stderr).toBe(0);
      expect(await treeDigest(down)).toEqual(await treeDigest(src));
      // Every file is one name and one object: no copy left behind by the dead leader's uploads.
      const after = await stats(other.url);
      expect(after.names?.count).toBe(FILES);
      expect(after.objects).toBe(FILES);
    },
    600_000,
  );
});
