// `imgvault backup` and `imgvault restore` against real processes (three managers, three
// workers): duplicates stored once, a second run sends nothing, a changed file is the only one
// sent, a deleted folder comes back identical (sha256 and mtime), and restore leaves a different
// local file alone without --force. Also the names API's listing and reference counting.

import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BackupSummary } from '../../src/cli/backupCommand.ts';
import type { RestoreSummary } from '../../src/cli/restoreCommand.ts';
import { ImageCluster, pngImage, runCli } from './imageCluster.ts';

let cluster: ImageCluster;
let root: string;
let folder: string;
/** key -> { bytes, mtime } of every image in the folder. */
const images = new Map<string, { bytes: Buffer; mtime: number }>();
const SIDECARS = ['2024/italy/IMG_0001.xmp', '2024/italy/IMG_0001.json', 'IMG_0002.AAE'];

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const urls = () => cluster.managers.map((m) => m.url).join(',');

async function writeImage(key: string, bytes: Buffer, mtime: number): Promise<void> {
  const path = join(folder, ...key.split('/'));
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, bytes);
  await utimes(path, new Date(mtime), new Date(mtime));
  images.set(key, { bytes, mtime });
}

async function backup(...extra: string[]): Promise<BackupSummary> {
  const r = await runCli(['backup', folder, '--set', 'trip', '--json', '--url', urls(), ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return JSON.parse(r.stdout) as BackupSummary;
}

async function restore(...extra: string[]): Promise<{ code: number | null; summary: RestoreSummary }> {
  const r = await runCli(['restore', 'trip', folder, '--json', '--url', urls(), ...extra]);
  return { code: r.code, summary: JSON.parse(r.stdout) as RestoreSummary };
}

async function objectCount(): Promise<number> {
  const leader = await cluster.leader();
  const res = await fetch(`${leader.url}/v1/images?limit=1000`, { signal: AbortSignal.timeout(10_000) });
  return ((await res.json()) as { items: unknown[] }).items.length;
}

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'imgvault-backup' });
  root = await mkdtemp(join(tmpdir(), 'imgvault-backup-files-'));
  folder = join(root, 'trip');
  const base = Date.UTC(2024, 4, 1, 12, 0, 0, 0);
  for (let i = 0; i < 46; i++) {
    const dir = i < 20 ? '2024/italy' : i < 40 ? '2024/paris' : '2023';
    await writeImage(
      `${dir}/IMG_${String(i).padStart(4, '0')}.png`,
      pngImage(200 + i * 37),
      base + i * 1001 + 7,
    );
  }
  // Two pairs of the same bytes under two names each.
  const twin = pngImage(900);
  await writeImage('2024/italy/twin-a.png', twin, base + 1);
  await writeImage('2023/twin-a-copy.png', twin, base + 2);
  const other = pngImage(1200);
  await writeImage('z/other.png', other, base + 3);
  await writeImage('z/sub/other copy é.png', other, base + 4);
  for (const sidecar of SIDECARS) {
    const path = join(folder, ...sidecar.split('/'));
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, '{"not":"an image"}');
  }
}, 90_000);

afterAll(async () => {
  await cluster?.close();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('imgvault backup and restore', () => {
  it('backs up a folder once: duplicates stored once, sidecars skipped and counted', async () => {
    const before = await objectCount();
    const s = await backup();
    expect(s).toMatchObject({ set: 'trip', changed: 0, unchanged: 0, skipped: SIDECARS.length, failed: 0 });
    expect(s.new + s.deduplicated).toBe(50);
    expect(s.deduplicated).toBeGreaterThanOrEqual(2);
    expect(await objectCount()).toBe(before + 48);
  }, 60_000);

  it('a second run over the unchanged folder uploads 0 bytes', async () => {
    const s = await backup();
    expect(s).toMatchObject({
      new: 0,
      changed: 0,
      unchanged: 50,
      deduplicated: 0,
      failed: 0,
      bytesUploaded: 0,
    });
  }, 60_000);

  it('a changed file is the only one sent', async () => {
    const replaced = pngImage(777);
    await writeImage('2024/paris/IMG_0025.png', replaced, Date.UTC(2024, 5, 1, 8, 30, 0, 123));
    const s = await backup();
    expect(s).toMatchObject({ new: 0, changed: 1, unchanged: 49, failed: 0, bytesUploaded: 777 });
    expect(await objectCount()).toBeGreaterThanOrEqual(48);
  }, 60_000);

  it('lists the set by prefix and delimiter through the API', async () => {
    const leader = await cluster.leader();
    const list = async (q: Record<string, string>) => {
      const res = await fetch(`${leader.url}/v1/buckets/trip?${new URLSearchParams(q)}`, {
        signal: AbortSignal.timeout(10_000),
      });
      return (await res.json()) as {
        names: { key: string }[];
        commonPrefixes: string[];
        next: string | null;
      };
    };
    const top = await list({ delimiter: '/' });
    expect(top).toEqual({ names: [], commonPrefixes: ['2023/', '2024/', 'z/'], next: null });
    const year = await list({ prefix: '2024/', delimiter: '/', limit: '1' });
    expect(year.commonPrefixes).toEqual(['2024/italy/']);
    const rest = await list({ prefix: '2024/', delimiter: '/', cursor: year.next! });
    expect(rest).toEqual({ names: [], commonPrefixes: ['2024/paris/'], next: null });
    // Checked before a byte of the body is read: '..' (encoded, or the URL parser would resolve it) and NUL.
    for (const key of ['a%2F..%2Fb.png', 'a%00b.png']) {
      const bad = await fetch(`${leader.url}/v1/buckets/trip/keys/${key}`, { method: 'PUT', body: 'x' });
      expect([key, bad.status, ((await bad.json()) as { error: { code: string } }).error.code]).toEqual([
        key,
        400,
        'InvalidName',
      ]);
    }
  }, 30_000);

  it('restores a deleted folder identical, byte for byte and mtime for mtime', async () => {
    await rm(folder, { recursive: true, force: true });
    const { code, summary } = await restore();
    expect(code).toBe(0);
    expect(summary).toMatchObject({ restored: 50, verified: 50, failed: 0 });
    for (const [key, { bytes, mtime }] of images) {
      const path = join(folder, ...key.split('/'));
      expect([key, sha(await readFile(path))]).toEqual([key, sha(bytes)]);
      expect([key, Math.round((await stat(path)).mtimeMs)]).toEqual([key, mtime]);
    }
    const again = await restore();
    expect(again.summary).toMatchObject({ restored: 0, unchanged: 50, bytesDownloaded: 0 });
  }, 90_000);

  it('never overwrites a different local file without --force', async () => {
    const key = '2024/italy/IMG_0003.png';
    const path = join(folder, ...key.split('/'));
    await writeFile(path, 'my own edit');
    const refused = await restore();
    expect(refused.code).toBe(1);
    expect(refused.summary).toMatchObject({ restored: 0, conflicts: 1, failed: 1, unchanged: 49 });
    expect(await readFile(path, 'utf8')).toBe('my own edit');
    const forced = await restore('--force');
    expect(forced.summary).toMatchObject({ restored: 1, failed: 0 });
    expect(sha(await readFile(path))).toBe(sha(images.get(key)!.bytes));
  }, 90_000);

  it('frees shared content only when its last name goes', async () => {
    const leader = await cluster.leader();
    const twin = images.get('2024/italy/twin-a.png')!.bytes;
    const content = () =>
      fetch(`${leader.url}/v1/content/${sha(twin)}`, { signal: AbortSignal.timeout(10_000) });
    const found = (await (await content()).json()) as { objectId: string };
    const del = (key: string) =>
      fetch(`${leader.url}/v1/buckets/trip/keys/${key}`, {
        method: 'DELETE',
        signal: AbortSignal.timeout(10_000),
      });
    expect((await del('2024/italy/twin-a.png')).status).toBe(204);
    const kept = await fetch(`${leader.url}/v1/buckets/trip/keys/2023/twin-a-copy.png`);
    expect(Buffer.from(await kept.arrayBuffer()).equals(twin)).toBe(true);
    expect((await fetch(`${leader.url}/v1/images/${found.objectId}`, { method: 'DELETE' })).status).toBe(409);
    expect((await del('2023/twin-a-copy.png')).status).toBe(204);
    expect((await content()).status).toBe(404);
    expect((await fetch(`${leader.url}/v1/images/${found.objectId}/meta`)).status).toBe(404);
  }, 30_000);
});
