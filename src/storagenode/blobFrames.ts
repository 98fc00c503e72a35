// Many blobs in one request body, for worker-to-worker batch copies: per blob, one JSON header
// line `{"id","size","sha256","crc32c"?}` and then exactly `size` bytes. One request carries a whole repair
// batch, so the per-request cost (HTTP parsing, routing, the client's request set-up) is paid once
// per batch rather than once per blob, on both workers.

import { z } from 'zod';
import { CRC32C_HEX_PATTERN } from '../protocol/checksums.ts';
import { SHA256_HEX_PATTERN } from './blobId.ts';

export const FRAMES_CONTENT_TYPE = 'application/x-imgvault-blob-frames';
/** Longer than any valid header (an id is at most 128 characters); a longer line is refused. */
const MAX_HEADER_BYTES = 1024;

export const frameHeaderSchema = z.strictObject({
  id: z.string().max(256),
  size: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  sha256: z.string().regex(SHA256_HEX_PATTERN),
  /** Checked instead of the sha256 when present (see CRC32C_HEADER). */
  crc32c: z.string().regex(CRC32C_HEX_PATTERN).optional(),
});
export type FrameHeader = z.infer<typeof frameHeaderSchema>;

export function encodeFrameHeader(header: FrameHeader): Buffer {
  return Buffer.from(`${JSON.stringify(header)}\n`);
}

/**
 * The body is not a well-formed sequence of frames (cut short, or a bad header), or, `aborted`,
 * it failed underneath (the sender went away).
 */
export class FrameError extends Error {
  override readonly name = 'FrameError';
  constructor(
    message: string,
    readonly aborted = false,
  ) {
    super(message);
  }
}

/**
 * Reads frames off a body. Each blob's bytes must be consumed to the end, or skipped with
 * `FrameBody.skipRest`, before the next header is read.
 */
export class FrameReader {
  private readonly iterator: AsyncIterator<Uint8Array>;
  /** Bytes read from the body and not yet handed out. */
  private pending: Buffer = Buffer.alloc(0);
  private ended = false;
  private failed: FrameError | null = null;

  constructor(body: AsyncIterable<Uint8Array>) {
    this.iterator = body[Symbol.asyncIterator]();
  }

  /** The next header, or null where the body ends between frames. */
  async header(): Promise<FrameHeader | null> {
    let searched = 0;
    for (;;) {
      const newline = this.pending.indexOf(10, searched);
      if (newline >= 0) {
        const line = this.pending.subarray(0, newline).toString('utf8');
        this.pending = this.pending.subarray(newline + 1);
        let raw: unknown;
        try {
          raw = JSON.parse(line);
        } catch {
          throw new FrameError('a frame header is not JSON');
        }
        const parsed = frameHeaderSchema.safeParse(raw);
        if (!parsed.success) throw new FrameError(`bad frame header: ${z.prettifyError(parsed.error)}`);
        return parsed.data;
      }
      searched = this.pending.length;
      if (searched > MAX_HEADER_BYTES)
        throw new FrameError(`a frame header is over ${MAX_HEADER_BYTES} bytes`);
      const chunk = await this.read();
      if (chunk === null) {
        if (this.pending.length === 0) return null;
        throw new FrameError('the body ended inside a frame header');
      }
      this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    }
  }

  /** The `size` bytes that follow the header just read. */
  body(size: number): FrameBody {
    return new FrameBody(this, size);
  }

  /** Up to `max` bytes: what is pending first, else the body's next chunk. Throws at the body's end. */
  async take(max: number): Promise<Buffer> {
    if (this.pending.length === 0) {
      const chunk = await this.read();
      if (chunk === null) throw new FrameError('the body ended inside a blob');
      this.pending = chunk;
    }
    const out = this.pending.length <= max ? this.pending : this.pending.subarray(0, max);
    this.pending = this.pending.subarray(out.length);
    return out;
  }

  private async read(): Promise<Buffer | null> {
    if (this.failed) throw this.failed;
    if (this.ended) return null;
    let next: IteratorResult<Uint8Array>;
    try {
      next = await this.iterator.next();
    } catch (err) {
      // Kept: a consumer that saw this and stopped must not read a clean end afterwards.
      this.failed = new FrameError(`the body ended abnormally: ${(err as Error).message}`, true);
      throw this.failed;
    }
    if (next.done) {
      this.ended = true;
      return null;
    }
    const v = next.value;
    return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  }
}

/**
 * One blob's bytes. Iterating it may stop early (a consumer that refused the blob); `skipRest`
 * then reads past what is left, so the reader stands at the next header either way.
 */
export class FrameBody implements AsyncIterable<Buffer> {
  private left: number;

  constructor(
    private readonly reader: FrameReader,
    size: number,
  ) {
    this.left = size;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Buffer> {
    while (this.left > 0) {
      const chunk = await this.reader.take(this.left);
      this.left -= chunk.length;
      yield chunk;
    }
  }

  async skipRest(): Promise<void> {
    while (this.left > 0) this.left -= (await this.reader.take(this.left)).length;
  }
}
