import { createHash, randomBytes, webcrypto } from 'node:crypto';
import { describe, expect, it, vi } from 'vitest';
import { ReadCheckFailed, readWholeChecked } from '../../src/manager/verifiedRead.ts';

const bytes = randomBytes(300_000);
const expected = { size: bytes.length, sha256: createHash('sha256').update(bytes).digest('hex') };

async function* chunksOf(b: Buffer, size = 65_536): AsyncGenerator<Buffer> {
  for (let at = 0; at < b.length; at += size) yield b.subarray(at, at + size);
}

describe('readWholeChecked', () => {
  it("hands out the record's bytes, whatever the chunking", async () => {
    for (const size of [1, 4_096, 65_536, bytes.length]) {
      const got = await readWholeChecked(chunksOf(bytes, size === 1 ? 99_999 : size), expected);
      expect(got.equals(bytes)).toBe(true);
    }
  });

  it('refuses a copy that is longer, shorter or other bytes', async () => {
    const longer = Buffer.concat([bytes, Buffer.from('x')]);
    await expect(readWholeChecked(chunksOf(longer), expected)).rejects.toThrow(/longer/);
    await expect(readWholeChecked(chunksOf(bytes.subarray(1)), expected)).rejects.toThrow(
      /bytes, the record/,
    );
    const flipped = Buffer.from(bytes);
    flipped[1234]! ^= 0x01;
    await expect(readWholeChecked(chunksOf(flipped), expected)).rejects.toBeInstanceOf(ReadCheckFailed);
  });

  it('hashes a read alone as it arrives, one beside others on the threadpool, a short one on neither', async () => {
    const digest = vi.spyOn(webcrypto.subtle, 'digest');
    try {
      await expect(readWholeChecked(chunksOf(bytes.subarray(7)), expected)).rejects.toThrow(
        `the copy has ${bytes.length - 7} bytes, the record ${bytes.length}`,
      );
      expect((await readWholeChecked(chunksOf(bytes), expected)).equals(bytes)).toBe(true);
      expect(digest).not.toHaveBeenCalled();

      // Beside a read still gathering: hashed on the threadpool once the whole is in.
      let release!: () => void;
      const held = new Promise<void>((resolve) => {
        release = resolve;
      });
      async function* slow(): AsyncGenerator<Buffer> {
        yield bytes.subarray(0, 1_000);
        await held;
        yield bytes.subarray(1_000);
      }
      const first = readWholeChecked(slow(), expected);
      await expect(readWholeChecked(chunksOf(bytes.subarray(7)), expected)).rejects.toThrow(/the record/);
      expect(digest).not.toHaveBeenCalled();
      expect((await readWholeChecked(chunksOf(bytes), expected)).equals(bytes)).toBe(true);
      expect(digest).toHaveBeenCalledTimes(1);
      release();
      expect((await first).equals(bytes)).toBe(true);
      expect(digest).toHaveBeenCalledTimes(1);
    } finally {
      digest.mockRestore();
    }
  });

  it('judges each of many reads checked at once on its own bytes', async () => {
    // More than the hashes let onto the threadpool at a time: the waiting ones must still be
    // checked against their own record, and a bad copy among them refused alone.
    const copies = Array.from({ length: 9 }, (_, i) => {
      const copy = randomBytes(200_000 + i);
      return {
        copy,
        expected: { size: copy.length, sha256: createHash('sha256').update(copy).digest('hex') },
      };
    });
    // The first is hashed as it arrives, the others on the threadpool: a bad one of each kind.
    copies[0]!.copy[100]! ^= 0x01;
    copies[4]!.copy[100]! ^= 0x01;
    const verdicts = await Promise.allSettled(
      copies.map((c) => readWholeChecked(chunksOf(c.copy), c.expected)),
    );
    expect(verdicts.map((v) => v.status)).toEqual(
      copies.map((_, i) => (i === 0 || i === 4 ? 'rejected' : 'fulfilled')),
    );
    verdicts.forEach((v, i) => {
      if (v.status === 'fulfilled') expect(v.value.equals(copies[i]!.copy)).toBe(true);
    });
  });

  it('gathers into a buffer it is given, and refuses one too small for the record', async () => {
    const into = Buffer.alloc(bytes.length + 100, 0xee);
    const got = await readWholeChecked(chunksOf(bytes), expected, into);
    expect(got.equals(bytes)).toBe(true);
    expect(got.buffer).toBe(into.buffer);
    await expect(readWholeChecked(chunksOf(bytes), expected, Buffer.alloc(bytes.length - 1))).rejects.toThrow(
      RangeError,
    );
  });

  it('reads an empty object', async () => {
    const empty = { size: 0, sha256: createHash('sha256').digest('hex') };
    expect((await readWholeChecked(chunksOf(Buffer.alloc(0)), empty)).length).toBe(0);
  });
});
