// Thumbnails for the dashboard's gallery: made with sharp on the first request for an image, then
// served from a cache on this manager's disk (<data>/thumbnails). Nothing here runs on the upload
// path: a thumbnail costs only the request that asks for it, at most MAX_CONCURRENT at a time, and
// sharp works on libuv's threads, off the event loop that serves uploads and Raft.

import { mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Sharp, SharpInput, SharpOptions } from 'sharp';
import type { ImageService } from './imageService.ts';

/** The longest side of a thumbnail, in pixels; smaller images are not enlarged. */
export const THUMBNAIL_SIZE = 256;
export const THUMBNAIL_CONTENT_TYPE = 'image/webp';

/** Thumbnails made at once by this manager; more requests wait their turn. */
const MAX_CONCURRENT = 2;
/** A decoded image larger than this (pixels) is refused rather than resized: a decompression bomb. */
const MAX_INPUT_PIXELS = 100_000_000;
/**
 * The original is read into memory to be decoded: one larger than this gets no thumbnail, so the
 * MAX_CONCURRENT thumbnails in the making hold at most 2 x 128 MiB, whatever --max-image-bytes allows.
 */
export const MAX_THUMBNAIL_SOURCE_BYTES = 128 * 1024 * 1024;

type SharpFactory = (input: SharpInput, options: SharpOptions) => Sharp;
let loaded: Promise<SharpFactory> | undefined;

/** sharp (libvips, tens of MB) is loaded on the first thumbnail: most managers never make one. */
function loadSharp(): Promise<SharpFactory> {
  loaded ??= import('sharp').then(({ default: sharp }) => {
    // One libvips thread per image: the manager's cores belong to Raft and uploads first.
    sharp.concurrency(1);
    return sharp;
  });
  return loaded;
}

export class ThumbnailFailed extends Error {}

export interface Thumbnail {
  bytes: Buffer;
  /** The original's sha256: the cache key and the thumbnail's ETag (the content never changes). */
  sha256: string;
}

export class ThumbnailCache {
  private readonly inFlight = new Map<string, Promise<Buffer>>();
  private running = 0;
  private readonly waiting: (() => void)[] = [];

  /** `dir` is made on the first thumbnail. */
  constructor(
    private readonly dir: string,
    private readonly images: ImageService,
  ) {}

  /**
   * The thumbnail of image `id`. Its record is read first (ImageError NotFound / InvalidId as for
   * the image itself), so a deleted image has none even when its thumbnail is still cached. Cached
   * by content: two ids with the same bytes share one file.
   */
  async get(id: string): Promise<Thumbnail> {
    const object = await this.images.getMeta(id);
    if (object.size > MAX_THUMBNAIL_SOURCE_BYTES) {
      throw new ThumbnailFailed(
        `image ${id} is larger than ${MAX_THUMBNAIL_SOURCE_BYTES} bytes: no thumbnail`,
      );
    }
    const file = join(this.dir, `${object.sha256}-${THUMBNAIL_SIZE}.webp`);
    const cached = await readFile(file).catch(() => null);
    if (cached) return { bytes: cached, sha256: object.sha256 };
    let made = this.inFlight.get(object.sha256);
    if (!made) {
      made = this.limited(() => this.make(id, file)).finally(() => this.inFlight.delete(object.sha256));
      this.inFlight.set(object.sha256, made);
    }
    return { bytes: await made, sha256: object.sha256 };
  }

  private async make(id: string, file: string): Promise<Buffer> {
    const original = await this.download(id);
    const sharp = await loadSharp();
    let bytes: Buffer;
    try {
      bytes = await sharp(original, { limitInputPixels: MAX_INPUT_PIXELS })
        .rotate()
        .resize(THUMBNAIL_SIZE, THUMBNAIL_SIZE, { fit: 'inside', withoutEnlargement: true })
        .webp({ quality: 70 })
        .toBuffer();
    } catch (err) {
      throw new ThumbnailFailed(`image ${id} could not be decoded: ${(err as Error).message}`);
    }
    // Written aside and renamed, so a reader never sees half a file; a failed write only costs a remake.
    const tmp = `${file}.${process.pid}.tmp`;
    await mkdir(this.dir, { recursive: true, mode: 0o700 })
      .then(() => writeFile(tmp, bytes, { mode: 0o600 }))
      .then(() => rename(tmp, file))
      .catch(() => rm(tmp, { force: true }));
    return bytes;
  }

  /** The original's bytes, checked against its record by ImageService.open. */
  private async download(id: string): Promise<Buffer> {
    const { body } = await this.images.open(id, { method: 'GET' });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > MAX_THUMBNAIL_SOURCE_BYTES) {
        body.destroy();
        throw new ThumbnailFailed(
          `image ${id} is larger than ${MAX_THUMBNAIL_SOURCE_BYTES} bytes: no thumbnail`,
        );
      }
      chunks.push(chunk as Buffer);
    }
    return Buffer.concat(chunks);
  }

  private async limited<T>(work: () => Promise<T>): Promise<T> {
    while (this.running >= MAX_CONCURRENT) await new Promise<void>((wake) => this.waiting.push(wake));
    this.running++;
    try {
      return await work();
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}
