import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Crc32c, crc32cHex, crc32cOf } from '../../src/protocol/checksums.ts';

/**
 * The CRC32C every process checks bytes with must be Castagnoli's (what the record carries and the
 * workers' trailers hold), whatever library computes it: checked against a bitwise reference, on
 * chunks of any length at any offset, continued across chunks as uploads and workers sum a body.
 */

/** CRC32C bit by bit (reflected polynomial 0x82f63b78): slow and obviously right. */
function referenceCrc32c(bytes: Uint8Array): number {
  let crc = 0xffffffff;
  for (const byte of bytes) {
    crc ^= byte;
    for (let k = 0; k < 8; k++) crc = crc & 1 ? (crc >>> 1) ^ 0x82f63b78 : crc >>> 1;
  }
  return (crc ^ 0xffffffff) >>> 0;
}

describe('CRC32C', () => {
  it('is Castagnoli, not the CRC-32 of zlib', () => {
    // The check values of "123456789": CRC32C e3069283 (RFC 3720), CRC-32 cbf43926.
    expect(crc32cHex(Buffer.from('123456789'))).toBe('e3069283');
    expect(crc32cHex(new Uint8Array(0))).toBe('00000000');
  });

  it('agrees with the bitwise reference on bodies of any length and offset', () => {
    const bytes = randomBytes(300_003);
    for (const [start, end] of [
      [0, 1],
      [1, 8],
      [3, 4_099],
      [7, 65_543],
      [5, 300_003],
    ] as const) {
      const view = new Uint8Array(bytes.buffer, bytes.byteOffset + start, end - start);
      expect(crc32cOf(view)).toBe(referenceCrc32c(view));
    }
  });

  it('summed chunk by chunk equals the sum of the whole, unsigned', () => {
    const bytes = randomBytes(1 << 20);
    const running = new Crc32c();
    let at = 0;
    for (const size of [0, 1, 63, 65_536, 262_144, 17, 0, 100_000]) {
      running.update(bytes.subarray(at, at + size));
      at += size;
    }
    running.update(bytes.subarray(at));
    const whole = crc32cOf(bytes);
    expect(whole).toBe(referenceCrc32c(bytes));
    expect(whole).toBeGreaterThanOrEqual(0);
    expect(running.hex()).toBe(whole.toString(16).padStart(8, '0'));
  });
});
