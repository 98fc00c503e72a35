import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { checkingStream, ReadCheckFailed, readWholeChecked } from '../../src/manager/verifiedRead.ts';
import { crc32cHex } from '../../src/protocol/checksums.ts';

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

  it('reads an empty object', async () => {
    const empty = { size: 0, sha256: createHash('sha256').digest('hex') };
    expect((await readWholeChecked(chunksOf(Buffer.alloc(0)), empty)).length).toBe(0);
  });
});

describe("the check is the record's CRC32C when it carries one", () => {
  const withCrc = { ...expected, crc32c: crc32cHex(bytes) };
  const flipped = Buffer.from(bytes);
  flipped[200_000]! ^= 0x80;

  it("passes the bytes whose CRC32C is the record's, and refuses others", async () => {
    expect((await readWholeChecked(chunksOf(bytes), withCrc)).equals(bytes)).toBe(true);
    await expect(readWholeChecked(chunksOf(flipped), withCrc)).rejects.toThrow(/crc32c is [0-9a-f]{8}/);
  });

  it('checks the CRC32C, not the sha256, when both are recorded', async () => {
    // A record whose crc32c names other bytes than its sha256 does: the CRC32C decides.
    const otherCrc = { ...expected, crc32c: crc32cHex(flipped) };
    await expect(readWholeChecked(chunksOf(bytes), otherCrc)).rejects.toThrow(/crc32c/);
    const otherSha = { ...withCrc, sha256: createHash('sha256').update(flipped).digest('hex') };
    expect((await readWholeChecked(chunksOf(bytes), otherSha)).equals(bytes)).toBe(true);
  });

  it('streams: the bytes pass whole when they match, the stream fails before its last chunk when not', async () => {
    const sink = async (source: Buffer, want: typeof withCrc) => {
      const got: Buffer[] = [];
      const mismatches: string[] = [];
      const run = pipeline(
        Readable.from(chunksOf(source)),
        checkingStream(want, (why) => mismatches.push(why)),
        async (s) => {
          for await (const chunk of s) got.push(chunk as Buffer);
        },
      );
      return { run, got, mismatches };
    };
    const good = await sink(bytes, withCrc);
    await good.run;
    expect(Buffer.concat(good.got).equals(bytes)).toBe(true);
    const bad = await sink(flipped, withCrc);
    await expect(bad.run).rejects.toBeInstanceOf(ReadCheckFailed);
    expect(Buffer.concat(bad.got).length).toBeLessThan(bytes.length);
    expect(bad.mismatches).toEqual([expect.stringMatching(/crc32c/)]);
  });
});
