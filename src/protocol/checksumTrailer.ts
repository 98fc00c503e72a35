// A blob PUT whose sender learns the checksums only as the last byte goes out: the leader forwards
// an upload to the workers while it is still arriving, so neither its sha256 nor its CRC32C is known
// when the request's headers are sent. The body is then the blob's bytes followed by a fixed-size
// trailer naming both; the Content-Length counts the trailer. (HTTP trailers would need chunked
// bodies, which undici cannot send with trailers.) The worker checks the bytes' CRC32C against the
// trailer's, as it checks CRC32C_HEADER on an ordinary PUT.

/** On a blob PUT, with the value TRAILING_CHECKSUMS: the body ends with the checksum trailer. */
export const CHECKSUMS_HEADER = 'x-imgvault-checksums';
export const TRAILING_CHECKSUMS = 'trailing';

/** sha256 (32 bytes) then CRC32C (4 bytes, big-endian). */
export const CHECKSUM_TRAILER_BYTES = 36;

export interface BlobSums {
  sha256: string;
  crc32c: string;
}

export function encodeChecksumTrailer(sums: BlobSums): Buffer {
  const out = Buffer.alloc(CHECKSUM_TRAILER_BYTES);
  out.write(sums.sha256, 0, 32, 'hex');
  out.writeUInt32BE(Number.parseInt(sums.crc32c, 16), 32);
  return out;
}

export function decodeChecksumTrailer(bytes: Buffer): BlobSums {
  if (bytes.length !== CHECKSUM_TRAILER_BYTES) {
    throw new Error(`a checksum trailer is ${CHECKSUM_TRAILER_BYTES} bytes, not ${bytes.length}`);
  }
  return {
    sha256: bytes.subarray(0, 32).toString('hex'),
    crc32c: bytes.readUInt32BE(32).toString(16).padStart(8, '0'),
  };
}

/**
 * Splits a body of `size` blob bytes plus the trailer: `bytes` yields the blob's bytes, and
 * `sums()`, once they are all read, the trailer's checksums (it throws if the body ended before
 * a whole trailer, or carried more than one).
 */
export function splitChecksumTrailer(
  body: AsyncIterable<Uint8Array>,
  size: number,
): { bytes: AsyncGenerator<Uint8Array>; sums: () => BlobSums } {
  const tail: Uint8Array[] = [];
  let tailBytes = 0;
  async function* bytes(): AsyncGenerator<Uint8Array> {
    let left = size;
    for await (const chunk of body) {
      if (left >= chunk.byteLength) {
        left -= chunk.byteLength;
        yield chunk;
        continue;
      }
      if (left > 0) yield chunk.subarray(0, left);
      tail.push(chunk.subarray(left));
      tailBytes += chunk.byteLength - left;
      left = 0;
    }
  }
  return {
    bytes: bytes(),
    sums: () => decodeChecksumTrailer(Buffer.concat(tail, tailBytes)),
  };
}
