// The leader's staging folder: an upload is streamed here once, hashed and sniffed on the way,
// before any worker sees it (docs/seed-flow.md: "receives an image, saves it locally"). Staged files are
// transient: deleted once both replicas are confirmed, and swept at start-up after a crash. The type
// is sniffed from the first bytes, before any of them is written: a body that is no image is refused
// having cost the leader a few KiB, not a staged file.

import { createHash, randomUUID } from 'node:crypto';
import { open, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { makePrivateDir, PRIVATE_FILE_MODE, writeBatched } from '../fileWrites.ts';
import { BodyTooSlow } from '../http/requestBody.ts';
import { Crc32c } from '../protocol/checksums.ts';
import { SNIFF_BYTES, sniffImageType } from './imageTypes.ts';

export { ACCEPTED_IMAGE_TYPES } from './imageTypes.ts';

/** Bytes gathered before one write to the staged file. */
const WRITE_BATCH_BYTES = 256 * 1024;

export interface StagedUpload {
  path: string;
  size: number;
  sha256: string;
  /** Of the same bytes, in the same pass: what the workers check their copies with. */
  crc32c: string;
  contentType: string;
}

export type StageError =
  | { code: 'EmptyBody'; message: string }
  | { code: 'TooLarge'; message: string; limit: number }
  | { code: 'NotAnImage'; message: string }
  | { code: 'BodyTooSlow'; message: string }
  | { code: 'InsufficientStorage'; message: string };

export type StageResult = { ok: true; staged: StagedUpload } | { ok: false; error: StageError };

class UploadTooLarge extends Error {}

class NotAnImage extends Error {}

/** The accepted image type of `head` (the body's first bytes), or NotAnImage. */
async function acceptedType(head: Uint8Array[], whole: boolean): Promise<string> {
  const sniffed = await sniffImageType(Buffer.concat(head), whole);
  if (!sniffed.ok) throw new NotAnImage(sniffed.message);
  return sniffed.mime;
}

export class StagingArea {
  private constructor(readonly dir: string) {}

  /** Opens the folder and removes whatever a crash left behind: nothing staged outlives its request. */
  static async open(dir: string): Promise<StagingArea> {
    await makePrivateDir(dir);
    for (const name of await readdir(dir)) await rm(join(dir, name), { force: true, recursive: true });
    return new StagingArea(dir);
  }

  /**
   * Streams `body` to a new staged file, computing size, sha256 and CRC32C. The first SNIFF_BYTES (or the
   * whole body, if shorter) are held until their type is known; nothing goes to the file before.
   * Never holds more than two write batches plus SNIFF_BYTES and a chunk in memory. On any refusal
   * or failure the partial file is removed before returning or throwing.
   */
  async stage(body: AsyncIterable<Uint8Array>, maxBytes: number): Promise<StageResult> {
    const path = join(this.dir, `${randomUUID()}.part`);
    const hash = createHash('sha256');
    const crc = new Crc32c();
    let held: Uint8Array[] | null = [];
    let contentType = '';
    let size = 0;
    async function* meter(): AsyncGenerator<Uint8Array> {
      for await (const chunk of body) {
        size += chunk.byteLength;
        if (size > maxBytes) throw new UploadTooLarge();
        hash.update(chunk);
        crc.update(chunk);
        if (held === null) {
          yield chunk;
          continue;
        }
        held.push(chunk);
        if (size < SNIFF_BYTES) continue;
        contentType = await acceptedType(held, false);
        yield* held;
        held = null;
      }
      if (held !== null && size > 0) {
        contentType = await acceptedType(held, true);
        yield* held;
      }
    }
    const opened = open(path, 'wx', PRIVATE_FILE_MODE);
    const fd = opened.then((f) => f.fd);
    // Awaited by writeBatched once the first batch is full; this keeps an early failure from
    // counting as an unhandled rejection meanwhile.
    fd.catch(() => {});
    try {
      try {
        await writeBatched(fd, meter(), WRITE_BATCH_BYTES);
      } finally {
        await (await opened.catch(() => null))?.close();
      }
    } catch (err) {
      await this.discard(path);
      if ((err as { code?: unknown }).code === 'ENOSPC') {
        return {
          ok: false,
          error: { code: 'InsufficientStorage', message: "the leader's staging disk is full" },
        };
      }
      if (err instanceof NotAnImage)
        return { ok: false, error: { code: 'NotAnImage', message: err.message } };
      if (err instanceof BodyTooSlow)
        return { ok: false, error: { code: 'BodyTooSlow', message: err.message } };
      if (err instanceof UploadTooLarge) {
        return {
          ok: false,
          error: {
            code: 'TooLarge',
            message: `image exceeds the limit of ${maxBytes} bytes`,
            limit: maxBytes,
          },
        };
      }
      throw err;
    }
    if (size === 0) {
      await this.discard(path);
      return { ok: false, error: { code: 'EmptyBody', message: 'the request body is empty' } };
    }
    return { ok: true, staged: { path, size, sha256: hash.digest('hex'), crc32c: crc.hex(), contentType } };
  }

  async discard(path: string): Promise<void> {
    await rm(path, { force: true });
  }
}
