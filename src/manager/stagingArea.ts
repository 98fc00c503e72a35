// The leader's staging folder: an upload is streamed here once, hashed and sniffed on the way,
// before any worker sees it (the seed's "receives an image, saves it locally"). Staged files are
// transient: deleted once both replicas are confirmed, and swept at start-up after a crash.

import { createHash, randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { type Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileTypeFromBuffer } from 'file-type';

/** Image types we accept, by sniffed MIME type. SVG is refused: it is a script-capable document. */
export const ACCEPTED_IMAGE_TYPES: ReadonlySet<string> = new Set([
  'image/jpeg',
  'image/png',
  'image/gif',
  'image/webp',
  'image/avif',
  'image/heic',
  'image/heif',
  'image/tiff',
  'image/bmp',
]);

/** Enough leading bytes for file-type to recognise every accepted format. */
const SNIFF_BYTES = 4100;

export interface StagedUpload {
  path: string;
  size: number;
  sha256: string;
  contentType: string;
}

export type StageError =
  | { code: 'EmptyBody'; message: string }
  | { code: 'TooLarge'; message: string; limit: number }
  | { code: 'NotAnImage'; message: string }
  | { code: 'InsufficientStorage'; message: string };

export type StageResult = { ok: true; staged: StagedUpload } | { ok: false; error: StageError };

class UploadTooLarge extends Error {}

export class StagingArea {
  private constructor(readonly dir: string) {}

  /** Opens the folder and removes whatever a crash left behind: nothing staged outlives its request. */
  static async open(dir: string): Promise<StagingArea> {
    await mkdir(dir, { recursive: true });
    for (const name of await readdir(dir)) await rm(join(dir, name), { force: true, recursive: true });
    return new StagingArea(dir);
  }

  /**
   * Streams `body` to a new staged file, computing size and sha256 and keeping the first bytes to
   * sniff the type. Never holds more than one chunk plus SNIFF_BYTES in memory. On any refusal or
   * failure the partial file is removed before returning or throwing.
   */
  async stage(body: Readable, maxBytes: number): Promise<StageResult> {
    const path = join(this.dir, `${randomUUID()}.part`);
    const hash = createHash('sha256');
    const head: Buffer[] = [];
    let headBytes = 0;
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, done) {
        size += chunk.length;
        if (size > maxBytes) return done(new UploadTooLarge());
        hash.update(chunk);
        if (headBytes < SNIFF_BYTES) {
          head.push(chunk.subarray(0, SNIFF_BYTES - headBytes));
          headBytes += Math.min(chunk.length, SNIFF_BYTES - headBytes);
        }
        done(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(path, { flags: 'wx' }));
    } catch (err) {
      await this.discard(path);
      if ((err as { code?: unknown }).code === 'ENOSPC') {
        return {
          ok: false,
          error: { code: 'InsufficientStorage', message: "the leader's staging disk is full" },
        };
      }
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
    const detected = await fileTypeFromBuffer(Buffer.concat(head));
    if (!detected || !ACCEPTED_IMAGE_TYPES.has(detected.mime)) {
      await this.discard(path);
      const what = detected
        ? `${detected.mime} is not an accepted image type`
        : 'content is not a recognised image';
      return { ok: false, error: { code: 'NotAnImage', message: what } };
    }
    return { ok: true, staged: { path, size, sha256: hash.digest('hex'), contentType: detected.mime } };
  }

  async discard(path: string): Promise<void> {
    await rm(path, { force: true });
  }
}
