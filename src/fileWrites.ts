// Moving bytes between a stream and a file in few trips through libuv's threadpool, each of which
// costs tens of microseconds of CPU on a busy machine: the workers' blob writes and the leader's
// staged uploads take this path.

import { closeSync, openSync, readSync, writev } from 'node:fs';
import fsp, { chmod, mkdir } from 'node:fs/promises';

/**
 * Service data (images, the Raft log and tables, staged uploads, logs) is the service user's alone:
 * no other local user may read a photo or forge a log entry (docs/security.md).
 */
export const PRIVATE_DIR_MODE = 0o700;
export const PRIVATE_FILE_MODE = 0o600;

/**
 * Makes every file and folder this process (and any child it starts) creates from now on private,
 * whatever umask it was started with: LevelDB creates its files with no mode we could pass.
 */
export function keepNewFilesPrivate(): void {
  process.umask(0o077);
}

/** fsync of a file, or of a folder (which makes the names created or renamed in it durable). */
export async function fsyncPath(path: string): Promise<void> {
  const fh = await fsp.open(path, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `mkdir -p` of a private folder; a folder an earlier version left open is closed too. */
export async function makePrivateDir(dir: string): Promise<void> {
  await mkdir(dir, { recursive: true, mode: PRIVATE_DIR_MODE });
  await chmod(dir, PRIVATE_DIR_MODE);
}

/**
 * How a write pipeline (`writeGathered`) gathers a source's bytes into batches and writes them:
 * chunks kept as they are (`writeBatched`), or bytes copied into aligned slabs (directWrites.ts).
 */
export interface Gatherer {
  /** The batch being gathered is full: it goes out before any further byte is taken. */
  readonly full: boolean;
  /** Takes as much of `chunk` from byte `at` on as the batch holds; returns where it stopped. */
  take(chunk: Uint8Array, at: number): number;
  /**
   * Hands the full batch to a write on the file `opened` and starts a new batch. The write may
   * fail; whatever the batch held is let go of once it settles, whether or not it ran.
   */
  send(opened: Promise<number>): Promise<void>;
  /** Writes the last batch, which may be partial or empty. */
  finish(fd: number): Promise<void>;
  /** Lets go of the batch being gathered; called last, with no write running. */
  release(): void;
}

/**
 * Writes `source` to the file `opened` as it arrives, through `gatherer`'s batches, one batch on
 * disk while the next one arrives: the copy into the file overlaps with receiving instead of adding
 * to it. At most one write is in flight and one batch waits, so memory stays bounded and a slow
 * disk slows the sender down. A full batch goes out only once more bytes follow it, so the source's
 * last chunk (a blob's trailer) rides in the last batch instead of costing a write of its own.
 */
export async function writeGathered(
  opened: Promise<number>,
  source: AsyncIterable<Uint8Array>,
  gatherer: Gatherer,
): Promise<void> {
  let inFlight: Promise<void> | undefined;
  try {
    for await (const chunk of source) {
      for (let at = 0; at < chunk.byteLength; ) {
        if (gatherer.full) {
          await inFlight;
          inFlight = gatherer.send(opened);
          // Handled here so a failure while the next chunk is awaited is not an unhandled rejection;
          // it is still thrown by the `await inFlight` that follows.
          inFlight.catch(() => {});
        }
        at = gatherer.take(chunk, at);
      }
    }
    await inFlight;
    await gatherer.finish(await opened);
  } finally {
    // Never leave a write running on a descriptor the caller is about to close.
    await inFlight?.catch(() => {});
    gatherer.release();
  }
}

/**
 * Writes `source` to the file in batches of at least `batchBytes` (at most one chunk over; the last
 * one may be smaller), as `writeGathered` does, each batch the chunks as they came (one `writev`).
 * Batches of 256 KiB keep the round trips few (see WRITE_BATCH_BYTES in
 * src/storagenode/blobStore.ts).
 */
export function writeBatched(
  opened: Promise<number>,
  source: AsyncIterable<Uint8Array>,
  batchBytes: number,
  /** Told after each batch but the last is written: a caller may start syncing those bytes. */
  onBatchWritten?: (fd: number) => void,
): Promise<void> {
  return writeGathered(opened, source, new ChunkBatches(batchBytes, onBatchWritten));
}

/** Batches of whole chunks, as `writeBatched` writes them. */
class ChunkBatches implements Gatherer {
  private batch: Uint8Array[] = [];
  private pending = 0;
  private position = 0;

  constructor(
    private readonly batchBytes: number,
    private readonly onBatchWritten: ((fd: number) => void) | undefined,
  ) {}

  get full(): boolean {
    return this.pending >= this.batchBytes;
  }

  take(chunk: Uint8Array, at: number): number {
    this.batch.push(at === 0 ? chunk : chunk.subarray(at));
    this.pending += chunk.byteLength - at;
    return chunk.byteLength;
  }

  send(opened: Promise<number>): Promise<void> {
    const { batch, pending, position } = this;
    this.batch = [];
    this.pending = 0;
    this.position += pending;
    return opened.then(async (fd) => {
      await writeAllAt(fd, batch, pending, position);
      this.onBatchWritten?.(fd);
    });
  }

  async finish(fd: number): Promise<void> {
    if (this.pending > 0) await writeAllAt(fd, this.batch, this.pending, this.position);
  }

  release(): void {}
}

/**
 * Writes all `total` bytes of `chunks` at `position` of the file, through the threadpool: writev at
 * a position until done, since a regular file may take fewer bytes than asked.
 */
export async function writeAllAt(
  fd: number,
  chunks: readonly Uint8Array[],
  total: number,
  position: number,
): Promise<void> {
  let rest = chunks;
  let done = 0;
  while (done < total) {
    const bytesWritten = await new Promise<number>((resolve, reject) => {
      writev(fd, rest as NodeJS.ArrayBufferView[], position + done, (err, n) =>
        err ? reject(err) : resolve(n),
      );
    });
    done += bytesWritten;
    if (done === total) return;
    rest = unwritten(rest, bytesWritten);
  }
}

/** What is left of `chunks` after `written` bytes of them. */
function unwritten(chunks: readonly Uint8Array[], written: number): Uint8Array[] {
  if (written === 0) throw new Error('write wrote no byte');
  let skip = written;
  const next: Uint8Array[] = [];
  for (const chunk of chunks) {
    if (skip >= chunk.byteLength) {
      skip -= chunk.byteLength;
      continue;
    }
    next.push(skip > 0 ? chunk.subarray(skip) : chunk);
    skip = 0;
  }
  return next;
}

/**
 * The bytes of a file, `chunkBytes` at a time, read on this thread: for a file just written, which
 * is in the page cache, a read is a copy, cheaper than a threadpool round trip. (Not for blobs a
 * worker serves: those may be on disk only.) The generator owns its descriptor: opened at the first
 * read, closed when it ends or is returned. Each chunk is a new buffer, since the consumer may
 * still hold the previous one (in a socket's write queue, say).
 */
export async function* readFileChunks(
  file: string,
  size: number,
  chunkBytes: number,
): AsyncGenerator<Buffer> {
  const fd = openSync(file, 'r');
  try {
    let position = 0;
    while (position < size) {
      const chunk = Buffer.allocUnsafe(Math.min(chunkBytes, size - position));
      const n = readSync(fd, chunk, 0, chunk.length, position);
      if (n === 0) throw new Error(`${file} ended at byte ${position} of ${size}`);
      position += n;
      yield n === chunk.length ? chunk : chunk.subarray(0, n);
    }
  } finally {
    closeSync(fd);
  }
}
