// Streamed metadata snapshots: written chunk by chunk from a LevelDB snapshot into a snapshot file,
// installed from that file into a fresh generation that becomes live only when the whole stream was
// read and its digest matched. Real LevelDB and real files in temp folders; the crash is a real
// child process killed with SIGKILL in the middle of an install.

import { spawn } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { SnapshotFolder } from '../../src/consensus/snapshotFiles.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { encodeObject, MetadataTables, type TableOp } from '../../src/metadata/tables.ts';
import { until } from '../helpers/until.ts';

const folders: string[] = [];
const opened: MetadataTables[] = [];

afterEach(async () => {
  for (const t of opened.splice(0)) await t.close().catch(() => {});
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function folder(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-snapstream-'));
  folders.push(dir);
  return dir;
}

async function tables(dir?: string): Promise<MetadataTables> {
  const t = await MetadataTables.open(dir ?? (await folder()));
  opened.push(t);
  return t;
}

/** `count` object rows (about 200 bytes each), written at applied index `index`. */
async function fill(t: MetadataTables, count: number, index: number, tag = 'img'): Promise<void> {
  const ops: TableOp[] = [];
  for (let i = 0; i < count; i++) {
    const id = `${tag}-${String(i).padStart(8, '0')}`;
    const value = encodeObject({
      size: 1000 + i,
      sha256: i.toString(16).padStart(64, '0'),
      contentType: 'image/jpeg',
      createdAt: 1_700_000_000_000 + i,
      replicas: ['w1', 'w2'],
    });
    ops.push({ type: 'put', table: 'objects', key: id, value });
  }
  await t.write(ops, index);
}

async function* collect(chunks: AsyncIterable<Uint8Array>, sizes: number[]): AsyncGenerator<Uint8Array> {
  for await (const c of chunks) {
    sizes.push(c.byteLength);
    yield c;
  }
}

describe('streamed metadata snapshots', () => {
  it('round-trips a table through a snapshot file in many bounded chunks', async () => {
    const source = await tables();
    await fill(source, 30_000, 7);
    const snaps = await SnapshotFolder.open(join(await folder(), 'snapshots'));
    const sizes: number[] = [];
    const chunkBytes = 256 * 1024;
    const ref = await snaps.write(7, 3, collect(source.snapshotChunks(chunkBytes), sizes));
    expect(sizes.length).toBeGreaterThan(10);
    // A chunk ends at the first row past the bound: no chunk is much larger than it.
    expect(Math.max(...sizes)).toBeLessThan(chunkBytes + 1024);
    expect(ref.size).toBe(sizes.reduce((a, b) => a + b, 0));
    expect(snaps.holds(ref)).toBe(true);

    const target = await tables();
    await fill(target, 10, 2, 'old');
    await target.restoreChunks(snaps.read(ref), 7);
    expect(await target.digest()).toEqual(await source.digest());
    expect(target.appliedIndex()).toBe(7);
    expect(await target.get('objects', 'old-00000000')).toBeUndefined();
  });

  it('writes the same file from one buffer written over (transient) as from a buffer per chunk', async () => {
    const source = await tables();
    await fill(source, 3_000, 5);
    // Rows longer than a chunk and than the buffer's slack, in several UTF-8 widths.
    const long = (c: string, n: number) => JSON.stringify({ note: c.repeat(n) });
    await source.write(
      [
        { type: 'put', table: 'names', key: 'b/é-long', value: long('é', 90_000) },
        { type: 'put', table: 'names', key: 'b/z-long', value: long('z', 200_000) },
        { type: 'put', table: 'names', key: 'b/😀-long', value: long('😀', 40_000) },
      ],
      6,
    );
    const snaps = await SnapshotFolder.open(join(await folder(), 'snapshots'));
    const chunkBytes = 16 * 1024;
    const seen = new Set<ArrayBufferLike>();
    const sizes: number[] = [];
    async function* noting(chunks: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      for await (const c of chunks) {
        seen.add(c.buffer);
        sizes.push(c.byteLength);
        yield c;
      }
    }
    const fresh = await snaps.write(6, 1, source.snapshotChunks(chunkBytes));
    const reused = await snaps.write(6, 2, noting(source.snapshotChunks(chunkBytes, { transient: true })));
    expect({ size: reused.size, sha256: reused.sha256 }).toEqual({ size: fresh.size, sha256: fresh.sha256 });
    expect(sizes.length).toBeGreaterThan(20);
    // One buffer for the rows that fit, a larger one once a long row did not: never one per chunk.
    expect(seen.size).toBeLessThanOrEqual(3);

    const target = await tables();
    await target.restoreChunks(snaps.read(reused), 6);
    expect(await target.digest()).toEqual(await source.digest());
  });

  it('refuses a file whose bytes do not match its digest, and keeps the old state', async () => {
    const source = await tables();
    await fill(source, 5_000, 9);
    const snaps = await SnapshotFolder.open(join(await folder(), 'snapshots'));
    const ref = await snaps.write(9, 2, source.snapshotChunks(64 * 1024));
    // One byte of a row's value changed, still valid JSON: only the digests can tell.
    const fh = await open(snaps.pathOf(ref), 'r+');
    const middle = Buffer.alloc(4096);
    await fh.read(middle, 0, middle.length, Math.floor(ref.size / 2));
    const at = Math.floor(ref.size / 2) + middle.indexOf('image/jpeg') + 'image/'.length;
    await fh.write(Buffer.from('p'), 0, 1, at);
    await fh.close();

    const target = await tables();
    await fill(target, 10, 4, 'old');
    const before = await target.digest();
    await expect(target.restoreChunks(snaps.read(ref), 9)).rejects.toThrow(/sha256|digest/);
    expect(await target.digest()).toEqual(before);
    expect(target.appliedIndex()).toBe(4);
  });

  it('refuses a stream cut before its trailer, at another index, or with a wrong trailer digest', async () => {
    const source = await tables();
    await fill(source, 2_000, 5);
    const chunks: Buffer[] = [];
    for await (const c of source.snapshotChunks(16 * 1024)) chunks.push(c);
    const whole = Buffer.concat(chunks);
    const target = await tables();
    await fill(target, 3, 2, 'old');
    const before = await target.digest();
    const from = (b: Buffer) =>
      (async function* () {
        yield b;
      })();

    await expect(target.restoreChunks(from(whole.subarray(0, whole.length - 120)), 5)).rejects.toThrow();
    await expect(target.restoreChunks(from(whole), 6)).rejects.toThrow(/index 5/);
    const text = whole.toString('utf8');
    const forged = text.replace(/"sha256":"[0-9a-f]{64}"/, `"sha256":"${'0'.repeat(64)}"`);
    await expect(target.restoreChunks(from(Buffer.from(forged)), 5)).rejects.toThrow(/digest/);
    expect(await target.digest()).toEqual(before);
    // The same stream, untouched, installs.
    await target.restoreChunks(from(whole), 5);
    expect(await target.digest()).toEqual(await source.digest());
  });

  it('recovers from a kill -9 in the middle of an install: the old state, then a clean rebuild', async () => {
    const source = await tables();
    await fill(source, 20_000, 11);
    const snaps = await SnapshotFolder.open(join(await folder(), 'snapshots'));
    const ref = await snaps.write(11, 4, source.snapshotChunks());

    const dir = join(await folder(), 'metadata');
    const old = await MetadataTables.open(dir);
    await fill(old, 50, 6, 'old');
    const oldDigest = await old.digest();
    await old.close();

    const child = spawn(
      process.execPath,
      ['--import', 'tsx', 'tests/metadata/fixtures/interruptedInstall.ts', dir, snaps.pathOf(ref), '11'],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    let out = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    try {
      await until(
        'the child installed half the snapshot',
        () => (out.includes('HALF') ? true : null),
        60_000,
      );
    } finally {
      child.kill('SIGKILL');
      await exited;
    }

    // The tables alone: the half-written generation is dropped, the old one is live and whole.
    const reopened = await tables(dir);
    expect(await reopened.digest()).toEqual(oldDigest);
    await reopened.close();
    opened.pop();
    // The state machine: no clean stop, so it empties the tables for the driver to rebuild them
    // from its snapshot file, which installs whole.
    const sm = await MetadataStateMachine.open(dir);
    try {
      expect(sm.appliedIndex()).toBe(0);
      await sm.restoreChunks(snaps.read(ref), 11);
      expect(await sm.tableDigest()).toEqual(await source.digest());
    } finally {
      await sm.close();
    }
  });
});
