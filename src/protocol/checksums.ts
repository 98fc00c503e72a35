// Between processes and at rest on workers, bytes are checked with CRC32C (Castagnoli), as HDFS,
// Ceph and SeaweedFS do: a quarter of sha256's CPU, and made for catching what a disk, a socket or
// a bug does to bytes by accident. sha256 stays what users see (the record, the etag), computed
// once while staging; a worker keeps it beside the CRC32C it checks.

import { crc32c } from '@node-rs/crc32';

/** On a blob PUT: the CRC32C of the body as 8 hex digits; the worker refuses bytes that do not match. */
export const CRC32C_HEADER = 'x-imgvault-crc32c';

export const CRC32C_HEX_PATTERN = /^[0-9a-f]{8}$/;

/** The CRC32C of `bytes`, continued from `previous` (the CRC32C of the bytes before them), unsigned. */
export function crc32cOf(bytes: Uint8Array, previous = 0): number {
  return crc32c(bytes as Buffer, previous) >>> 0;
}

/** A running CRC32C over chunks, as 8 lowercase hex digits. */
export class Crc32c {
  private state = 0;

  update(chunk: Uint8Array): this {
    this.state = crc32cOf(chunk, this.state);
    return this;
  }

  hex(): string {
    return this.state.toString(16).padStart(8, '0');
  }
}

export function crc32cHex(bytes: Uint8Array): string {
  return new Crc32c().update(bytes).hex();
}
