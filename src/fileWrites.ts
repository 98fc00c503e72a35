// Moving bytes between a stream and a file with as few trips through libuv's threadpool as
// possible: the workers' blob writes and the leader's staged uploads take this path.

import { closeSync, openSync, readSync, writevSync } from 'node:fs';

/**
 * Writes `source` to the file in batches of at least `batchBytes` as they arrive. The writes run
 * on this thread: they only copy into the page cache (the fsync, which waits for the disk, goes to
 * the pool), and a threadpool round trip per batch costs more CPU than the copy itself (1 MiB in
 * 64 KiB batches: 2.8 ms through the pool, 1.4 ms here, on the 2-core CI machine). Memory stays
 * bounded by one batch, and a slow disk still slows the sender down: the source is not read
 * during a write.
 */
export async function writeBatched(
  opened: Promise<number>,
  source: AsyncIterable<Uint8Array>,
  batchBytes: number,
): Promise<void> {
  let batch: Uint8Array[] = [];
  let pending = 0;
  for await (const chunk of source) {
    batch.push(chunk);
    pending += chunk.byteLength;
    if (pending >= batchBytes) {
      writeAll(await opened, batch, pending);
      batch = [];
      pending = 0;
    }
  }
  const fd = await opened;
  if (pending > 0) writeAll(fd, batch, pending);
}

/** writev until every byte is written (a regular file may take fewer bytes than asked). */
function writeAll(fd: number, chunks: Uint8Array[], total: number): void {
  let rest = chunks;
  let left = total;
  while (left > 0) {
    const bytesWritten = writevSync(fd, rest as NodeJS.ArrayBufferView[]);
    left -= bytesWritten;
    if (left === 0) return;
    if (bytesWritten === 0) throw new Error('writev wrote no byte');
    let skip = bytesWritten;
    const next: Uint8Array[] = [];
    for (const chunk of rest) {
      if (skip >= chunk.byteLength) {
        skip -= chunk.byteLength;
        continue;
      }
      next.push(skip > 0 ? chunk.subarray(skip) : chunk);
      skip = 0;
    }
    rest = next;
  }
}

/**
 * The bytes of a file, `chunkBytes` at a time, read on this thread (a file just written is in the
 * page cache; see writeBatched for why). The generator owns its descriptor: opened at the first
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
