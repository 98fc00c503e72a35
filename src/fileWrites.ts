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
 * Writes `source` to the file in batches of at least `batchBytes` (at most one chunk over; the last
 * one may be smaller) as they arrive, through the threadpool, one batch on disk while the next one
 * arrives: the copy into the page cache overlaps with receiving instead of adding to it. Batches of
 * 256 KiB keep the round trips few (see WRITE_BATCH_BYTES in src/storagenode/blobStore.ts). At most
 * one write is in flight and one batch waits, so memory stays bounded and a slow disk slows the
 * sender down.
 */
export async function writeBatched(
  opened: Promise<number>,
  source: AsyncIterable<Uint8Array>,
  batchBytes: number,
  /** Told after each batch but the last is written: a caller may start syncing those bytes. */
  onBatchWritten?: (fd: number) => void,
): Promise<void> {
  let batch: Uint8Array[] = [];
  let pending = 0;
  let inFlight: Promise<void> | undefined;
  try {
    for await (const chunk of source) {
      // A full batch goes out only once another chunk follows it, so the source's last chunk (a
      // blob's trailer) rides in the last batch instead of costing a write of its own.
      if (pending >= batchBytes) {
        await inFlight;
        const full = batch;
        const fullBytes = pending;
        inFlight = opened.then(async (fd) => {
          await writeAllInPool(fd, full, fullBytes);
          onBatchWritten?.(fd);
        });
        // Handled here so a failure while the next chunk is awaited is not an unhandled rejection;
        // it is still thrown by the `await inFlight` that follows.
        inFlight.catch(() => {});
        batch = [];
        pending = 0;
      }
      batch.push(chunk);
      pending += chunk.byteLength;
    }
    await inFlight;
    const fd = await opened;
    if (pending > 0) await writeAllInPool(fd, batch, pending);
  } finally {
    // Never leave a write running on a descriptor the caller is about to close.
    await inFlight?.catch(() => {});
  }
}

/** writev until every byte is written (a regular file may take fewer bytes than asked). */
async function writeAllInPool(fd: number, chunks: Uint8Array[], total: number): Promise<void> {
  let rest = chunks;
  let left = total;
  while (left > 0) {
    const bytesWritten = await new Promise<number>((resolve, reject) => {
      writev(fd, rest as NodeJS.ArrayBufferView[], (err, n) => (err ? reject(err) : resolve(n)));
    });
    left -= bytesWritten;
    if (left === 0) return;
    rest = unwritten(rest, bytesWritten);
  }
}

/** What is left of `chunks` after `written` bytes of them. */
function unwritten(chunks: Uint8Array[], written: number): Uint8Array[] {
  if (written === 0) throw new Error('writev wrote no byte');
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
