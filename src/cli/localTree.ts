// What backup and restore share about the local side: walking a folder into name keys, hashing a
// file, the set's names as the server lists them, and a progress line.

import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { basename, join, resolve } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { BUCKET_PATTERN, keyProblem } from '../metadata/commands.ts';
import type { ClusterClient } from './clusterClient.ts';

/**
 * Extensions backed up by default: the image formats a photographer has. Anything else in a photo
 * folder (XMP/JSON sidecars, .AAE edits, live-photo .MOV) is skipped and counted, unless
 * `--all-files`.
 */
export const IMAGE_EXTENSIONS = new Set([
  'jpg',
  'jpeg',
  'jpe',
  'png',
  'gif',
  'webp',
  'avif',
  'heic',
  'heif',
  'tif',
  'tiff',
  'bmp',
  'cr2',
  'cr3',
  'nef',
  'nrw',
  'arw',
  'srf',
  'sr2',
  'dng',
  'orf',
  'rw2',
  'raf',
  'pef',
  'srw',
  'x3f',
  'iiq',
  '3fr',
]);

export function isImageFile(path: string): boolean {
  const dot = path.lastIndexOf('.');
  return dot > 0 && IMAGE_EXTENSIONS.has(path.slice(dot + 1).toLowerCase());
}

export interface LocalFile {
  /** The name key: the path under the folder, with '/' between folders. */
  key: string;
  path: string;
  size: number;
  /** Milliseconds, rounded: what the name records and restore sets back. */
  mtime: number;
}

/** Regular files under `root`, in key order (symbolic links are not followed). */
export async function walkFolder(root: string): Promise<LocalFile[]> {
  const files: LocalFile[] = [];
  const walk = async (dir: string, prefix: string): Promise<void> => {
    for (const entry of (await readdir(dir)).sort()) {
      const path = join(dir, entry);
      const s = await lstat(path);
      const key = prefix + entry;
      if (s.isDirectory()) await walk(path, `${key}/`);
      else if (s.isFile()) files.push({ key, path, size: s.size, mtime: Math.round(s.mtimeMs) });
    }
  };
  await walk(root, '');
  return files;
}

/** The local path of `key` under `root`, or null for a key that could leave it. */
export function pathOfKey(root: string, key: string): string | null {
  if (keyProblem(key) !== null) return null;
  const base = resolve(root);
  const path = resolve(base, ...key.split('/'));
  return path.startsWith(base + (base.endsWith('/') ? '' : '/')) ? path : null;
}

export async function sha256OfFile(path: string): Promise<string> {
  const hash = createHash('sha256');
  await pipeline(createReadStream(path), hash);
  return hash.digest('hex');
}

/**
 * Why `set` cannot name a backup set, or null: a set is a bucket, whose rule the server would
 * otherwise state in bucket terms only after the folder has been walked.
 */
export function setNameProblem(set: string): string | null {
  if (BUCKET_PATTERN.test(set)) return null;
  return (
    `${JSON.stringify(set)} cannot name a backup set: use 3-63 lowercase letters, digits, '.' or '-', ` +
    'beginning and ending with a letter or digit'
  );
}

/** The default backup set of a folder: its name in the bucket alphabet. */
export function defaultSetName(folder: string): string | null {
  const name = basename(resolve(folder))
    .toLowerCase()
    .replace(/[^a-z0-9.-]+/g, '-')
    .replace(/^[^a-z0-9]+|[^a-z0-9]+$/g, '')
    .slice(0, 63);
  return BUCKET_PATTERN.test(name) ? name : null;
}

export interface RemoteName {
  key: string;
  size: number;
  sha256: string;
  mtime: number;
}

/** Every name of `set` (page by page, in key order). */
export async function listSet(client: ClusterClient, set: string): Promise<RemoteName[]> {
  const names: RemoteName[] = [];
  let cursor: string | null = null;
  // Bounded: a page holds up to 1000 names; 100,000 pages is 10^8 names.
  for (let page = 0; page < 100_000; page++) {
    const query = new URLSearchParams({ limit: '1000', ...(cursor ? { cursor } : {}) });
    const { res } = await client.request('GET', `/v1/buckets/${encodeURIComponent(set)}?${query}`, {
      expect: [200],
    });
    const body = (await res.body.json()) as { names: RemoteName[]; next: string | null };
    names.push(...body.names.map(({ key, size, sha256, mtime }) => ({ key, size, sha256, mtime })));
    cursor = body.next;
    if (cursor === null) break;
  }
  return names;
}

/** A one-line progress display on a terminal (files, bytes, rate, ETA); nothing otherwise. */
export class ProgressLine {
  private readonly started = Date.now();
  private last = 0;

  constructor(
    private readonly totalFiles: number,
    private readonly totalBytes: number,
    readonly tty = process.stderr.isTTY === true,
  ) {}

  /** A progress line over these files. */
  static over(files: readonly { size: number }[]): ProgressLine {
    return new ProgressLine(
      files.length,
      files.reduce((n, f) => n + f.size, 0),
    );
  }

  update(files: number, bytes: number, force = false): void {
    if (!this.tty) return;
    const now = Date.now();
    if (!force && now - this.last < 200) return;
    this.last = now;
    const seconds = Math.max(0.001, (now - this.started) / 1000);
    const rate = bytes / seconds;
    const eta = rate > 0 ? Math.max(0, (this.totalBytes - bytes) / rate) : 0;
    const mib = (n: number) => (n / 1048576).toFixed(1);
    process.stderr.write(
      `\r\x1b[K${files}/${this.totalFiles} files, ${mib(bytes)}/${mib(this.totalBytes)} MiB, ${mib(rate)} MiB/s, ETA ${Math.ceil(eta)} s`,
    );
  }

  clear(): void {
    if (this.tty) process.stderr.write('\r\x1b[K');
  }

  /** A line of its own: above the progress line on a terminal, plain otherwise. */
  line(text: string): void {
    this.clear();
    process.stderr.write(`${text}\n`);
  }
}
