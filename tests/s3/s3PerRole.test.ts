// The S3 endpoint on a cluster with a credential per role: the access key is created with the
// operator's credential, a follower forwards each checked request to the leader with a raft
// credential addressed to it, and the forward route opens to nothing else.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import type { ImageCluster } from '../integration/imageCluster.ts';
import { makeImages, s3Url, startS3Cluster, treeDigest } from './s3Fixture.ts';
import { AWS, awsEnv, CONVERT, missing, run, type S3Key } from './s3Tools.ts';

let cluster: ImageCluster | undefined;
let key: S3Key;
let dir: string;
const skip = missing(AWS, CONVERT);

beforeAll(async () => {
  if (skip !== null) return;
  dir = await mkdtemp(join(tmpdir(), 's3-per-role-'));
  ({ cluster, key } = await startS3Cluster('s3-per-role', { perRole: true }));
}, 400_000);

afterAll(async () => {
  await cluster?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

it.skipIf(skip !== null)(
  `syncs through a follower's endpoint and back through another manager ${skip ?? ''}`,
  async () => {
    const c = cluster!;
    const leader = await c.leader();
    const [follower, other] = c.managers.map((m, i) => ({ m, i })).filter(({ m }) => m.id !== leader.id);
    const env = await awsEnv(dir, key);
    const aws = (index: number, ...args: string[]) =>
      run(AWS, ['--endpoint-url', s3Url(c, index), ...args], env);
    expect((await aws(follower!.i, 's3', 'mb', 's3://per-role')).code).toBe(0);
    const src = join(dir, 'src');
    await makeImages(src, 6);
    const up = await aws(follower!.i, 's3', 'sync', src, 's3://per-role/set');
    expect(up.code, up.stderr).toBe(0);
    const down = join(dir, 'down');
    const back = await aws(other!.i, 's3', 'sync', 's3://per-role/set', down);
    expect(back.code, back.stderr).toBe(0);
    expect(await treeDigest(down)).toEqual(await treeDigest(src));
  },
  240_000,
);

it.skipIf(skip !== null)(
  'refuses a forwarded request without a raft credential addressed to the leader',
  async () => {
    const c = cluster!;
    const leader = await c.leader();
    for (const credential of [c.workerAccess(c.workers[0]!.id), c.secret]) {
      const res = await fetch(`${leader.url}/internal/s3/per-role`, {
        headers: { [CLUSTER_SECRET_HEADER]: credential },
        signal: AbortSignal.timeout(10_000),
      });
      expect(res.status).toBe(403);
      expect(await res.text()).toContain('AccessDenied');
    }
  },
);
