// The S3 endpoint's local files on the leader: a body spooled before it is stored (so its sha256,
// hence its content id `c<sha256>`, is known before the upload starts: a retry after a failover
// lands on the same object and never stores the bytes twice), and the parts of multipart uploads
// in progress. Parts live on the leader that received them: after a failover an upload in
// progress is gone (NoSuchUpload) and its client starts it again (docs/s3.md).

import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { S3Error } from './s3Errors.ts';

export interface SpooledFile {
  path: string;
  size: number;
  sha256: string;
  md5: string;
}

/** Bound on the parts of one upload (S3's). */
export const MAX_PARTS = 10_000;
/** An upload untouched this long is dropped by `sweep` (a client that gave up without aborting). */
export const ABANDONED_AFTER_MS = 24 * 3600 * 1000;

async function* limited(body: AsyncIterable<Uint8Array>, maxBytes: number): AsyncGenerator<Uint8Array> {
  let seen = 0;
  for await (const chunk of body) {
    seen += chunk.byteLength;
    if (seen > maxBytes)
      throw new S3Error('EntityTooLarge', `the body exceeds the limit of ${maxBytes} bytes`);
    yield chunk;
  }
}

/** Writes `body` to `path`, hashing it on the way. */
export async function spool(
  path: string,
  body: AsyncIterable<Uint8Array>,
  maxBytes: number,
): Promise<SpooledFile> {
  const sha256 = createHash('sha256');
  const md5 = createHash('md5');
  let size = 0;
  async function* hashed() {
    for await (const chunk of limited(body, maxBytes)) {
      sha256.update(chunk);
      md5.update(chunk);
      size += chunk.byteLength;
      yield chunk;
    }
  }
  try {
    await pipeline(hashed(), createWriteStream(path, { mode: 0o600 }));
  } catch (err) {
    await rm(path, { force: true });
    throw err;
  }
  return { path, size, sha256: sha256.digest('hex'), md5: md5.digest('hex') };
}

export async function* fileChunks(paths: readonly string[]): AsyncGenerator<Uint8Array> {
  for (const path of paths) yield* createReadStream(path, { highWaterMark: 1 << 20 });
}

export interface UploadInfo {
  bucket: string;
  key: string;
  mtime: number;
  initiated: number;
}

export interface PartInfo {
  partNumber: number;
  etag: string;
  size: number;
  lastModified: number;
}

const UPLOAD_ID = /^[0-9a-f]{32}$/;

export class S3Spool {
  private constructor(private readonly root: string) {}

  static async open(root: string): Promise<S3Spool> {
    // What a previous run left is of no use: its uploads were this process's, and clients retry.
    await rm(root, { recursive: true, force: true });
    await mkdir(join(root, 'bodies'), { recursive: true, mode: 0o700 });
    await mkdir(join(root, 'uploads'), { recursive: true, mode: 0o700 });
    return new S3Spool(root);
  }

  /** A body spooled to a fresh file; the caller removes it with `discard`. */
  spoolBody(body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<SpooledFile> {
    return spool(join(this.root, 'bodies', randomBytes(16).toString('hex')), body, maxBytes);
  }

  async discard(path: string): Promise<void> {
    await rm(path, { force: true });
  }

  private dir(uploadId: string): string {
    if (!UPLOAD_ID.test(uploadId)) throw new S3Error('NoSuchUpload', 'the specified upload does not exist');
    return join(this.root, 'uploads', uploadId);
  }

  async create(info: UploadInfo): Promise<string> {
    const uploadId = randomBytes(16).toString('hex');
    await mkdir(this.dir(uploadId), { mode: 0o700 });
    await writeFile(join(this.dir(uploadId), 'upload.json'), JSON.stringify(info), { mode: 0o600 });
    return uploadId;
  }

  /** The upload's record, checked against the bucket and key the request names. */
  async info(uploadId: string, bucket: string, key: string): Promise<UploadInfo> {
    let info: UploadInfo;
    try {
      info = JSON.parse(await readFile(join(this.dir(uploadId), 'upload.json'), 'utf8')) as UploadInfo;
    } catch {
      throw new S3Error('NoSuchUpload', 'the specified upload does not exist');
    }
    if (info.bucket !== bucket || info.key !== key) {
      throw new S3Error('NoSuchUpload', 'the specified upload does not exist for this key');
    }
    return info;
  }

  async putPart(
    uploadId: string,
    partNumber: number,
    body: AsyncIterable<Uint8Array>,
    maxBytes: number,
  ): Promise<SpooledFile> {
    const dir = this.dir(uploadId);
    const tmp = join(dir, `tmp-${randomBytes(8).toString('hex')}`);
    const spooled = await spool(tmp, body, maxBytes);
    const final = join(dir, `part-${String(partNumber).padStart(5, '0')}`);
    await writeFile(`${final}.json`, JSON.stringify({ md5: spooled.md5, size: spooled.size }), {
      mode: 0o600,
    });
    await rename(tmp, final);
    return { ...spooled, path: final };
  }

  async parts(uploadId: string): Promise<PartInfo[]> {
    const dir = this.dir(uploadId);
    const names = (await readdir(dir)).filter((n) => /^part-\d{5}$/.test(n)).sort();
    const parts: PartInfo[] = [];
    for (const name of names) {
      const meta = JSON.parse(await readFile(join(dir, `${name}.json`), 'utf8')) as {
        md5: string;
        size: number;
      };
      const st = await stat(join(dir, name));
      parts.push({
        partNumber: Number(name.slice(5)),
        etag: meta.md5,
        size: meta.size,
        lastModified: st.mtimeMs,
      });
    }
    return parts;
  }

  partPath(uploadId: string, partNumber: number): string {
    return join(this.dir(uploadId), `part-${String(partNumber).padStart(5, '0')}`);
  }

  async remove(uploadId: string): Promise<void> {
    await rm(this.dir(uploadId), { recursive: true, force: true });
  }

  /** Drops uploads nobody touched for ABANDONED_AFTER_MS. */
  async sweep(now = Date.now()): Promise<void> {
    for (const id of await readdir(join(this.root, 'uploads'))) {
      const st = await stat(join(this.root, 'uploads', id)).catch(() => null);
      if (st && now - st.mtimeMs > ABANDONED_AFTER_MS) await this.remove(id);
    }
  }
}
