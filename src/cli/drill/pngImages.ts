// Real, decodable PNG files for the drill's load: every one a different size and picture, so no two
// uploads share bytes and a copy swapped between ids would show in the sha256 check.

import { randomInt } from 'node:crypto';
import { crc32, deflateSync } from 'node:zlib';

const SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

/** One PNG chunk: length, type, data and the CRC over type and data. */
export function pngChunk(type: string, data: Buffer): Buffer {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(data.length, 0);
  head.write(type, 4, 'latin1');
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(Buffer.concat([head.subarray(4), data])) >>> 0, 0);
  return Buffer.concat([head, data, crc]);
}

/**
 * A `width` x `height` 8-bit RGB PNG: a gradient in a random tint with random noise, so the
 * compressed size (and the bytes) differ from one call to the next. Rows use filter type 0.
 */
export function pngPicture(width: number, height: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8; // bit depth
  ihdr[9] = 2; // colour type: RGB; compression, filter and interlace bytes stay 0
  const tint = [randomInt(256), randomInt(256), randomInt(256)];
  const noise = randomInt(1, 64);
  const stride = 1 + width * 3;
  const raw = Buffer.alloc(stride * height);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const at = y * stride + 1 + x * 3;
      raw[at] = (tint[0]! + x * 4 + randomInt(noise)) & 0xff;
      raw[at + 1] = (tint[1]! + y * 4 + randomInt(noise)) & 0xff;
      raw[at + 2] = (tint[2]! + (x ^ y) + randomInt(noise)) & 0xff;
    }
  }
  return Buffer.concat([
    SIGNATURE,
    pngChunk('IHDR', ihdr),
    pngChunk('IDAT', deflateSync(raw)),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/** A picture of random size between 8x8 and 64x64 pixels (roughly 0.3-12 KB). */
export function randomPng(): Buffer {
  return pngPicture(randomInt(8, 65), randomInt(8, 65));
}
