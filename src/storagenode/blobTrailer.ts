// The trailer a worker appends to every blob file it writes: the blob's size, CRC32C and sha256,
// sealed with a CRC32C of its own. It makes a file at its final name self-describing, so the blob
// store needs no synced record beside the file to find a blob whose index entry a power cut lost
// (see the write protocol in blobStore.ts): the start-up walk after an unclean stop reads the
// trailer, checks the bytes against it and indexes them again. Blob bytes come first and the
// trailer after them, so every read of a blob's bytes reads at the same offsets as before; a file
// without a trailer (`size` bytes exactly) was written before trailers existed and is still read.

import { closeSync, createReadStream, fstatSync, openSync, readSync } from 'node:fs';
import { crc32cOf } from '../protocol/checksums.ts';
import type { BlobRecord } from './blobIndex.ts';

const MAGIC = Buffer.from('imgvblb1', 'latin1');
/** magic (8) + size (u64) + crc32c (u32) + sha256 (32) + the trailer's own crc32c (u32). */
export const TRAILER_BYTES = 56;
const SEALED_BYTES = TRAILER_BYTES - 4;

/** The trailer of a blob with `record`'s size and checksums (its crc32c is required). */
export function encodeTrailer(record: Required<BlobRecord>): Buffer {
  const out = Buffer.alloc(TRAILER_BYTES);
  MAGIC.copy(out, 0);
  out.writeBigUInt64BE(BigInt(record.size), 8);
  out.writeUInt32BE(Number.parseInt(record.crc32c, 16), 16);
  out.write(record.sha256, 20, 32, 'hex');
  out.writeUInt32BE(crc32cOf(out.subarray(0, SEALED_BYTES)), SEALED_BYTES);
  return out;
}

/** The record a trailer names, or null when `bytes` is no intact trailer. */
export function decodeTrailer(bytes: Buffer): Required<BlobRecord> | null {
  if (bytes.length !== TRAILER_BYTES || !bytes.subarray(0, MAGIC.length).equals(MAGIC)) return null;
  if (bytes.readUInt32BE(SEALED_BYTES) !== crc32cOf(bytes.subarray(0, SEALED_BYTES))) return null;
  const size = bytes.readBigUInt64BE(8);
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) return null;
  return {
    size: Number(size),
    crc32c: bytes.readUInt32BE(16).toString(16).padStart(8, '0'),
    sha256: bytes.subarray(20, 52).toString('hex'),
  };
}

/**
 * Whether a file of `fileSize` bytes can hold the blob `record` describes: its bytes alone (written
 * before trailers), or its bytes and a trailer.
 */
export function fitsRecord(fileSize: number, record: BlobRecord): boolean {
  return fileSize === record.size || fileSize === record.size + TRAILER_BYTES;
}

/** The trailer at the end of `file` and the file's size; `record` null when it has none intact. */
export function readTrailer(file: string): { fileSize: number; record: Required<BlobRecord> | null } {
  const fd = openSync(file, 'r');
  try {
    const fileSize = fstatSync(fd).size;
    if (fileSize < TRAILER_BYTES) return { fileSize, record: null };
    const bytes = Buffer.alloc(TRAILER_BYTES);
    const n = readSync(fd, bytes, 0, TRAILER_BYTES, fileSize - TRAILER_BYTES);
    const record = n === TRAILER_BYTES ? decodeTrailer(bytes) : null;
    return { fileSize, record: record && fileSize === record.size + TRAILER_BYTES ? record : null };
  } finally {
    closeSync(fd);
  }
}

/**
 * Feeds the blob's bytes, the first `size` of `file` (a trailer after them is not read), to `hasher`
 * in order and returns how many it read: fewer than `size` when the file is shorter.
 */
export async function hashBlobBytes(
  file: string,
  size: number,
  hasher: { update(chunk: Uint8Array): unknown },
): Promise<number> {
  // createReadStream cannot express an empty range (end: -1 reads the whole file).
  if (size === 0) return 0;
  let read = 0;
  for await (const chunk of createReadStream(file, {
    start: 0,
    end: size - 1,
    highWaterMark: 256 * 1024,
  }) as AsyncIterable<Buffer>) {
    read += chunk.byteLength;
    hasher.update(chunk);
  }
  return read;
}
