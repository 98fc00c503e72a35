import { randomBytes } from 'node:crypto';
import { closeSync, readdirSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  AlignedSlabs,
  createExclusive,
  DIRECT_ALIGN,
  directWritesWork,
  SLAB_BYTES,
  writeDirect,
} from '../../src/storagenode/directWrites.ts';

/** Descriptors this process has open now (Linux). */
const openFds = () => readdirSync('/proc/self/fd').length;

async function* chunksOf(buf: Buffer, size: number): AsyncGenerator<Uint8Array> {
  for (let i = 0; i < buf.length; i += size) yield buf.subarray(i, i + size);
}

describe('direct writes', () => {
  let dir: string;
  let slabs: AlignedSlabs;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'imgvault-direct-'));
    slabs = new AlignedSlabs();
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** Writes `bytes` in `chunk`-sized pieces to a new file and reads it back. */
  async function writeFile(name: string, bytes: Buffer, chunk: number): Promise<Buffer> {
    const file = join(dir, name);
    const opened = createExclusive(file, true);
    try {
      await writeDirect(opened, file, chunksOf(bytes, chunk), slabs);
    } finally {
      closeSync(await opened);
    }
    return readFile(file);
  }

  it('writes every byte in order around page and slab boundaries, whatever the chunk size', async (t) => {
    if (!(await directWritesWork(join(dir, 'probe'), slabs))) t.skip();
    const sizes = [0, 1, DIRECT_ALIGN - 1, DIRECT_ALIGN, DIRECT_ALIGN + 1, SLAB_BYTES - 1, SLAB_BYTES];
    sizes.push(SLAB_BYTES + 1, 3 * SLAB_BYTES + 56, 1024 * 1024 + 56 + 7);
    for (const size of sizes) {
      const bytes = randomBytes(size);
      for (const chunk of [7, 65_536, 300_001]) {
        const back = await writeFile(`out-${size}-${chunk}`, bytes, chunk);
        expect(back.length, `${size} in chunks of ${chunk}`).toBe(size);
        expect(back.equals(bytes), `${size} in chunks of ${chunk}`).toBe(true);
      }
    }
  });

  it('reuses its slabs: a write holds two at most, and gives them back', async (t) => {
    if (!(await directWritesWork(join(dir, 'probe'), slabs))) t.skip();
    const taken: Buffer[] = [];
    const counting = new AlignedSlabs();
    const take = counting.take.bind(counting);
    const give = counting.give.bind(counting);
    let out = 0;
    let most = 0;
    counting.take = () => {
      out += 1;
      most = Math.max(most, out);
      const slab = take();
      taken.push(slab);
      return slab;
    };
    counting.give = (slab) => {
      out -= 1;
      give(slab);
    };
    slabs = counting;
    const bytes = randomBytes(5 * SLAB_BYTES + 100);
    expect((await writeFile('reuse', bytes, 65_536)).equals(bytes)).toBe(true);
    expect(out).toBe(0);
    expect(most).toBeLessThanOrEqual(2);
    expect(new Set(taken.map((s) => s.buffer)).size).toBe(1);
  });

  it('lets a failed source throw, with no write left running and its slabs back', async (t) => {
    if (!(await directWritesWork(join(dir, 'probe'), slabs))) t.skip();
    const file = join(dir, 'broken');
    const opened = createExclusive(file, true);
    let given = 0;
    const give = slabs.give.bind(slabs);
    slabs.give = (slab) => {
      given += 1;
      give(slab);
    };
    async function* failing(): AsyncGenerator<Uint8Array> {
      yield randomBytes(SLAB_BYTES + 100);
      yield randomBytes(100);
      throw new Error('client went away');
    }
    // Counted once the file's own descriptor is open (createExclusive opens it on the threadpool).
    await opened;
    const fds = openFds();
    await expect(writeDirect(opened, file, failing(), slabs)).rejects.toThrow('client went away');
    expect(given).toBe(2);
    expect(openFds()).toBe(fds);
    closeSync(await opened);
  });
});
