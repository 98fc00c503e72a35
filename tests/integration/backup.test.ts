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
import { ImageCluster, pngImage, runCli, spawnCli as spawnCliProcess, until } from './imageCluster.ts';

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
  let count = 0;
  let after: string | null = null;
  for (let page = 0; page < 100; page++) {
    const q = new URLSearchParams({ limit: '1000', ...(after ? { after } : {}) });
    const res = await fetch(`${leader.url}/v1/images?${q}`, { signal: AbortSignal.timeout(10_000) });
    const body = (await res.json()) as { items: unknown[]; next: string | null };
    count += body.items.length;
    after = body.next;
    if (after === null) break;
  }
  return count;
}

/** `imgvault <args>` as a child process; `linesDone` counts the files it has reported so far. */
function spawnCli(args: string[], timeoutMs: number) {
  const run = spawnCliProcess(args, timeoutMs);
  const linesDone = () =>
    run
      .stderr()
      .split('\n')
      .filter((l) => /^(new|deduplicated)\t/.test(l)).length;
  return { ...run, linesDone };
}

async function makeFolder(name: string, count: number): Promise<string> {
  const dir = join(root, name);
  for (let i = 0; i < count; i++) {
    const path = join(dir, `d${i % 4}`, `IMG_${i}.png`);
    await mkdir(dirname(path), { recursive: true });
    await writeFile(path, pngImage(400 + i));
  }
  return dir;
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
    expect(s).toMatchObject({ new: 48, deduplicated: 2 });
    const unique = new Map([...images.values()].map(({ bytes }) => [sha(bytes), bytes.length]));
    expect(s.bytesUploaded).toBe([...unique.values()].reduce((a, b) => a + b, 0));
    expect(await objectCount()).toBe(before + 48);
    const leader = await cluster.leader();
    const stats = (await (await fetch(`${leader.url}/v1/cluster/stats`)).json()) as { names: unknown };
    const named = [...images.values()].reduce((n, i) => n + i.bytes.length, 0);
    expect(stats.names).toEqual({ count: 50, bytes: named, storedBytes: named - 2100, savedBytes: 2100 });
    const status = await runCli(['status', '--url', urls()]);
    expect(status.stdout + status.stderr).toMatch(/names: 50 naming .*deduplication saves 2\.1 KiB/);
  }, 60_000);

  it('refuses to --prune a whole set from a folder that walks to nothing (an unmounted disk)', async () => {
    const empty = join(root, 'unmounted');
    await mkdir(empty, { recursive: true });
    const r = await runCli(['backup', empty, '--set', 'trip', '--prune', '--json', '--url', urls()]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain('refusing to --prune');
  });

  it('refuses a set name the server could not hold, in set terms, before walking or sending', async () => {
    for (const args of [
      ['backup', folder, '--set', 't1'],
      ['restore', 'Trip', join(root, 'never-made')],
    ]) {
      const r = await runCli([...args, '--json', '--url', urls()]);
      expect(r.code).not.toBe(0);
      expect(r.stderr).toContain('cannot name a backup set: use 3-63 lowercase letters');
    }
    await expect(stat(join(root, 'never-made'))).rejects.toThrow(/ENOENT/);
  });

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

  it('keeps content ids (c<sha256>) to names: the images API cannot store there', async () => {
    const leader = await cluster.leader();
    const bytes = pngImage(2_000);
    const res = await fetch(`${leader.url}/v1/images/c${sha(bytes)}`, {
      method: 'PUT',
      body: bytes,
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(400);
    expect(await res.json()).toMatchObject({ error: { code: 'InvalidId' } });
  }, 30_000);
});

describe('interrupted backups', () => {
  it('prints its summary on Ctrl-C, and a re-run does the rest, each file stored once', async () => {
    const dir = await makeFolder('interrupted', 80);
    const before = await objectCount();
    const args = ['backup', dir, '--set', 'interrupted', '--json', '-c', '1', '--url', urls()];
    const run = spawnCli(args, 120_000);
    await until('a few files backed up', async () => run.linesDone() >= 5, 60_000);
    run.child.kill('SIGINT');
    const first = await run.done;
    expect(first.code, first.stderr).toBe(130);
    const cut = JSON.parse(first.stdout) as BackupSummary;
    expect(cut.interrupted).toBe(true);
    expect(cut.new).toBeGreaterThanOrEqual(5);
    expect(cut.new).toBeLessThan(80);
    const rest = await spawnCli(args, 120_000).done;
    expect(rest.code, rest.stderr).toBe(0);
    const second = JSON.parse(rest.stdout) as BackupSummary;
    expect(second).toMatchObject({ failed: 0, unchanged: cut.new, interrupted: false });
    expect(second.new).toBe(80 - cut.new);
    expect(await objectCount()).toBe(before + 80);
  }, 240_000);

  it('rides through a leader kill: nothing lost, nothing stored twice', async () => {
    const dir = await makeFolder('failover', 60);
    const before = await objectCount();
    const args = ['backup', dir, '--set', 'failover', '--json', '--url', urls()];
    const run = spawnCli(args, 180_000);
    await until('a few files backed up', async () => run.linesDone() >= 5, 60_000);
    await cluster.killManager(await cluster.leader());
    const result = await run.done;
    expect(result.code, result.stderr).toBe(0);
    const summary = JSON.parse(result.stdout) as BackupSummary;
    expect(summary).toMatchObject({ failed: 0, changed: 0 });
    expect(summary.new + summary.deduplicated).toBe(60);
    expect(await objectCount()).toBe(before + 60);
    const again = await spawnCli(args, 120_000).done;
    expect(JSON.parse(again.stdout)).toMatchObject({ unchanged: 60, bytesUploaded: 0, failed: 0 });
  }, 300_000);
});
