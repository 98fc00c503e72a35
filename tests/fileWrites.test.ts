import { randomBytes } from 'node:crypto';
import { readdirSync } from 'node:fs';
import { mkdtemp, open, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { readFileChunks, writeBatched } from '../src/fileWrites.ts';

/** Descriptors this process has open now (Linux). */
const openFds = () => readdirSync('/proc/self/fd').length;

async function* chunksOf(buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

describe('fileWrites', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-filewrites-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes every byte in order, whatever the chunk and batch sizes', async () => {
    const bytes = randomBytes(300_007);
    for (const [chunk, batch] of [
      [1_000, 256 * 1024],
      [64 * 1024, 1],
      [7, 100],
    ] as const) {
      const file = join(dir, `out-${chunk}-${batch}`);
      const handle = await open(file, 'wx');
      try {
        await writeBatched(Promise.resolve(handle.fd), chunksOf(bytes, chunk), batch);
      } finally {
        await handle.close();
      }
      expect((await readFile(file)).equals(bytes)).toBe(true);
    }
  });

  it('lets a failed source throw, with no write left running', async () => {
    const file = join(dir, 'broken');
    const handle = await open(file, 'wx');
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield randomBytes(300 * 1024);
      throw new Error('client went away');
    }
    try {
      await expect(writeBatched(Promise.resolve(handle.fd), failing(), 256 * 1024)).rejects.toThrow(
        'client went away',
      );
    } finally {
      await handle.close();
    }
  });

  it('reads a file back in chunks and closes it at the end', async () => {
    const bytes = randomBytes(600 * 1024);
    const file = join(dir, 'staged');
    await writeFile(file, bytes);
    const before = openFds();
    const parts: Buffer[] = [];
    for await (const part of readFileChunks(file, bytes.length, 256 * 1024)) parts.push(part);
    expect(parts.map((p) => p.length)).toEqual([256 * 1024, 256 * 1024, 88 * 1024]);
    expect(Buffer.concat(parts).equals(bytes)).toBe(true);
    expect(openFds()).toBe(before);
  });

  it('closes the file when the reader stops part way', async () => {
    const file = join(dir, 'staged');
    await writeFile(file, randomBytes(600 * 1024));
    const before = openFds();
    const reader = readFileChunks(file, 600 * 1024, 256 * 1024);
    await reader.next();
    expect(openFds()).toBe(before + 1);
    await reader.return(undefined);
    expect(openFds()).toBe(before);
  });

  it('refuses a file shorter than it should be', async () => {
    const file = join(dir, 'short');
    await writeFile(file, randomBytes(1000));
    const before = openFds();
    const read = async () => {
      for await (const _ of readFileChunks(file, 2000, 256 * 1024)) {
        // drain
      }
    };
    await expect(read()).rejects.toThrow('ended at byte 1000 of 2000');
    expect(openFds()).toBe(before);
  });
});
