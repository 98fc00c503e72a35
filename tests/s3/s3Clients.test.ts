// The S3 endpoint proved with the real clients, unmodified, from Debian's packages: aws-cli (cp,
// sync, a multipart upload), rclone sync up and back down, and s3cmd put/get/ls. Each client talks
// to a follower or the leader as it happens: every manager serves S3.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageCluster } from '../integration/imageCluster.ts';
import { makeImages, s3Url, startS3Cluster, treeDigest } from './s3Fixture.ts';
import {
  AWS,
  awsEnv,
  CONVERT,
  missing,
  RCLONE,
  rcloneEnv,
  run,
  S3CMD,
  type S3Key,
  s3cmdConfig,
} from './s3Tools.ts';

let cluster: ImageCluster | undefined;
let key: S3Key;
let dir: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 's3-clients-'));
  ({ cluster, key } = await startS3Cluster('s3-clients'));
}, 400_000);

afterAll(async () => {
  await cluster?.close();
  await rm(dir, { recursive: true, force: true });
});

describe('aws-cli', () => {
  const skip = missing(AWS, CONVERT);
  it.skipIf(skip !== null)(
    `cp and sync up and back, a multipart upload, ls ${skip ?? ''}`,
    async () => {
      const env = await awsEnv(join(dir), key);
      const endpoint = ['--endpoint-url', s3Url(cluster!, 1)];
      const aws = (...args: string[]) => run(AWS, [...endpoint, ...args], env);
      expect((await aws('s3', 'mb', 's3://aws-photos')).code).toBe(0);
      const src = join(dir, 'aws-src');
      await makeImages(src, 12);
      const sync = await aws('s3', 'sync', src, 's3://aws-photos/trip');
      expect(sync.code, sync.stderr).toBe(0);
      // A second sync of an unchanged folder sends nothing.
      const again = await aws('s3', 'sync', src, 's3://aws-photos/trip');
      expect(again.stdout).not.toContain('upload:');
      const down = join(dir, 'aws-down');
      expect((await aws('s3', 'sync', 's3://aws-photos/trip', down)).code).toBe(0);
      expect(await treeDigest(down)).toEqual(await treeDigest(src));

      // Larger than aws-cli's 8 MiB multipart threshold: sent in parts, completed, read back whole.
      const big = join(dir, 'big.png');
      expect(
        (await run(CONVERT!, ['-size', '2400x2400', 'xc:gray', '+noise', 'Random', big], process.env)).code,
      ).toBe(0);
      const up = await aws('s3', 'cp', big, 's3://aws-photos/big/big.png');
      expect(up.code, up.stderr).toBe(0);
      const head = JSON.parse(
        (await aws('s3api', 'head-object', '--bucket', 'aws-photos', '--key', 'big/big.png')).stdout,
      );
      expect(head.ETag).toMatch(/^"[0-9a-f]{32}-\d+"$/);
      const bigDown = join(dir, 'big-down.png');
      expect((await aws('s3', 'cp', 's3://aws-photos/big/big.png', bigDown)).code).toBe(0);
      expect(await treeDigest(bigDown)).toEqual(await treeDigest(big));

      const ls = await aws('s3', 'ls', 's3://aws-photos/trip/');
      expect(ls.stdout).toContain('PRE set-0/');
      const count = await aws('s3api', 'list-objects-v2', '--bucket', 'aws-photos', '--page-size', '5');
      expect(JSON.parse(count.stdout).Contents.length).toBe(13);
      // A bucket that holds objects is not deleted; an empty one is.
      expect((await aws('s3', 'rb', 's3://aws-photos')).code).not.toBe(0);
      expect((await aws('s3', 'rm', '--recursive', 's3://aws-photos')).code).toBe(0);
      expect((await aws('s3', 'rb', 's3://aws-photos')).code).toBe(0);
      expect((await aws('s3', 'ls')).stdout).not.toContain('aws-photos');
    },
    400_000,
  );
});

describe('rclone', () => {
  const skip = missing(RCLONE, CONVERT);
  it.skipIf(skip !== null)(
    `sync of a folder of real images up and back down byte for byte ${skip ?? ''}`,
    async () => {
      const env = await rcloneEnv(dir, key, s3Url(cluster!, 2));
      const src = join(dir, 'rclone-src');
      await makeImages(src, 15);
      expect((await run(RCLONE, ['mkdir', 'iv:rclone-photos'], env)).code).toBe(0);
      const up = await run(RCLONE, ['sync', src, 'iv:rclone-photos/backup'], env);
      expect(up.code, up.stderr).toBe(0);
      const down = join(dir, 'rclone-down');
      const back = await run(RCLONE, ['sync', 'iv:rclone-photos/backup', down], env);
      expect(back.code, back.stderr).toBe(0);
      expect(await treeDigest(down)).toEqual(await treeDigest(src));
      const check = await run(RCLONE, ['check', src, 'iv:rclone-photos/backup'], env);
      expect(check.code, check.stderr).toBe(0);
    },
    300_000,
  );
});

describe('s3cmd', () => {
  const skip = missing(S3CMD, CONVERT);
  it.skipIf(skip !== null)(
    `put, ls and get ${skip ?? ''}`,
    async () => {
      const config = await s3cmdConfig(dir, key, s3Url(cluster!, 0));
      const s3cmd = (...args: string[]) => run(S3CMD, ['-c', config, ...args], { ...process.env, HOME: dir });
      const src = join(dir, 's3cmd-src');
      await makeImages(src, 2);
      const file = join(src, 'set-0', 'a', 'IMG_0000.png');
      expect((await s3cmd('mb', 's3://s3cmd-photos')).code).toBe(0);
      const put = await s3cmd('put', file, 's3://s3cmd-photos/one/IMG_0000.png');
      expect(put.code, put.stderr).toBe(0);
      expect(put.stderr).not.toContain('MD5');
      const ls = await s3cmd('ls', 's3://s3cmd-photos/one/');
      expect(ls.stdout).toContain('s3://s3cmd-photos/one/IMG_0000.png');
      const got = join(dir, 's3cmd-got.png');
      const get = await s3cmd('get', '--force', 's3://s3cmd-photos/one/IMG_0000.png', got);
      expect(get.code, get.stderr).toBe(0);
      expect(await treeDigest(got)).toEqual(await treeDigest(file));
    },
    300_000,
  );
});
