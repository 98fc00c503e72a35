// A cluster with the S3 endpoint on every manager, an access key, and folders of real images made
// by ImageMagick.

import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, stat } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { ImageCluster, runCli } from '../integration/imageCluster.ts';
import { CONVERT, run, type S3Key } from './s3Tools.ts';

/**
 * `perRole`: a credential per role (the key is created with the operator's), else the single secret.
 * `managers` and `workers`: as ImageCluster.start's (three of each unless given).
 */
export async function startS3Cluster(
  name: string,
  opts: { perRole?: boolean; managers?: number; workers?: number } = {},
): Promise<{ cluster: ImageCluster; key: S3Key }> {
  const cluster = await ImageCluster.start({
    s3: true,
    name,
    startTimeoutMs: 150_000,
    ...(opts.perRole ? { perRole: true } : {}),
    ...(opts.managers ? { managers: opts.managers } : {}),
    ...(opts.workers ? { workers: opts.workers } : {}),
  });
  const created = await runCli([
    's3',
    'keys',
    'create',
    '--json',
    '--url',
    cluster.managers.map((m) => m.url).join(','),
    '--secret-file',
    cluster.secretFile,
  ]);
  if (created.code !== 0) {
    await cluster.close();
    throw new Error(`s3 keys create failed: ${created.stderr}`);
  }
  const key = JSON.parse(created.stdout) as S3Key & { endpoint: string };
  return { cluster, key };
}

export function s3Url(cluster: ImageCluster, index: number): string {
  return `http://127.0.0.1:${cluster.managers[index]!.s3Port}`;
}

/** `count` distinct small JPEGs and PNGs in nested folders under `dir`. */
export async function makeImages(dir: string, count: number): Promise<void> {
  for (let i = 0; i < count; i++) {
    const folder = join(dir, `set-${i % 3}`, i % 2 === 0 ? 'a' : 'b');
    await mkdir(folder, { recursive: true });
    const file = join(folder, `IMG_${String(i).padStart(4, '0')}.${i % 4 === 0 ? 'png' : 'jpg'}`);
    const made = await run(
      CONVERT!,
      ['-size', `${40 + i}x${30 + (i % 7)}`, 'xc:gray', '+noise', 'Random', file],
      process.env,
    );
    if (made.code !== 0) throw new Error(`convert failed: ${made.stderr}`);
  }
}

/** relative path -> sha256 of every file under `dir` (of `dir` itself, under '', when a file). */
export async function treeDigest(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const st = await stat(dir).catch(() => null);
  if (st?.isFile())
    return {
      '': createHash('sha256')
        .update(await readFile(dir))
        .digest('hex'),
    };
  async function walk(d: string): Promise<void> {
    for (const entry of await readdir(d, { withFileTypes: true })) {
      const path = join(d, entry.name);
      if (entry.isDirectory()) await walk(path);
      else
        out[relative(dir, path)] = createHash('sha256')
          .update(await readFile(path))
          .digest('hex');
    }
  }
  if (st !== null) await walk(dir);
  return out;
}

/** A SigV4 signer as an S3 client makes it with `key` (path style, region us-east-1). */
export function s3Signer(key: S3Key): SignatureV4 {
  return new SignatureV4({
    credentials: key,
    region: 'us-east-1',
    service: 's3',
    sha256: Hash.bind(null, 'sha256'),
    uriEscapePath: false,
  });
}
