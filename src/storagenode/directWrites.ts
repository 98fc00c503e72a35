// Blob files written with O_DIRECT: the bytes go from a reused buffer of ours to the disk, never
// into the page cache. A buffered write copies every byte into page-cache pages the kernel must
// first find room for, and a worker's blobs are rarely read back soon (a copy lives on another
// worker, a backup is read when something was lost), so those pages bought nothing: on this project's
// test machine that copy was half of a worker's CPU per 1 MiB PUT (docs/measurements.md, "Worker
// PUT with O_DIRECT"). O_DIRECT wants the buffer, the file offset and the length aligned to the
// disk's block; the body's bytes are gathered into page-aligned slabs (WebAssembly memories, the one
// page-aligned allocation JavaScript can make), each written whole at its offset, and the last
// partial page goes through a second, buffered descriptor.
//
// Durability is unchanged: a direct write is only in the disk's volatile cache when it returns, and
// the file's size and extents are metadata, so the file is still fsynced before its rename.

import { closeSync, constants, open, openSync, writeSync } from 'node:fs';
import { type Gatherer, PRIVATE_FILE_MODE, writeAllAt, writeGathered } from '../fileWrites.ts';
import { errnoCode } from './errors.ts';

/** Alignment of every direct write's buffer, offset and length: a page, which any disk's block divides. */
export const DIRECT_ALIGN = 4096;
/**
 * Bytes of one direct write (WRITE_BATCH_BYTES of blobStore.ts): a multiple of DIRECT_ALIGN and of
 * a WebAssembly page (64 KiB).
 */
export const SLAB_BYTES = 256 * 1024;
const WASM_PAGE_BYTES = 64 * 1024;
/** Slabs carved from one WebAssembly memory; a write in flight holds two. */
const SLABS_PER_MEMORY = 8;

/** The runtime's WebAssembly.Memory (the project's TypeScript libs declare no WebAssembly values). */
const WasmMemory = (
  globalThis as unknown as {
    WebAssembly: { Memory: new (d: { initial: number; maximum: number }) => { buffer: ArrayBuffer } };
  }
).WebAssembly.Memory;

/**
 * A new zero-filled buffer of at least `bytes`, in whole WebAssembly pages: a WebAssembly memory
 * is page-aligned, which is what a direct write's buffer must be.
 */
export function pageAlignedBuffer(bytes: number): Buffer {
  const pages = Math.ceil(bytes / WASM_PAGE_BYTES);
  return Buffer.from(new WasmMemory({ initial: pages, maximum: pages }).buffer);
}

/**
 * Page-aligned buffers of SLAB_BYTES, reused from write to write. Memories are never given back:
 * the pool grows to what the most writes at once needed (two slabs, 512 KiB, a write) and stays.
 */
export class AlignedSlabs {
  private readonly free: Buffer[] = [];

  take(): Buffer {
    const slab = this.free.pop();
    if (slab !== undefined) return slab;
    const memory = pageAlignedBuffer(SLABS_PER_MEMORY * SLAB_BYTES);
    for (let i = 1; i < SLABS_PER_MEMORY; i++) {
      this.free.push(memory.subarray(i * SLAB_BYTES, (i + 1) * SLAB_BYTES));
    }
    return memory.subarray(0, SLAB_BYTES);
  }

  give(slab: Buffer): void {
    this.free.push(slab);
  }
}

/**
 * Creates `file` exclusively, private as every service file, for writes through the page cache or,
 * with `direct`, for direct writes from our slabs. A plain descriptor (not a FileHandle), so the PUT
 * path can close it without a threadpool round trip.
 */
export function createExclusive(file: string, direct: boolean): Promise<number> {
  const flags = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | (direct ? constants.O_DIRECT : 0);
  return new Promise((resolve, reject) => {
    open(file, flags, PRIVATE_FILE_MODE, (err, fd) => (err ? reject(err) : resolve(fd)));
  });
}

/**
 * Whether files in `dir` take direct writes from our slabs (tmpfs, say, refuses O_DIRECT; a
 * filesystem or disk wanting a coarser alignment refuses the write). Writes and removes `probe`.
 */
export async function directWritesWork(probe: string, slabs: AlignedSlabs): Promise<boolean> {
  let fd: number;
  try {
    fd = await createExclusive(probe, true);
  } catch (err) {
    if (isRefusal(err)) return false;
    throw err;
  }
  const slab = slabs.take();
  try {
    slab.fill(0, 0, DIRECT_ALIGN);
    await writeAllAt(fd, [slab.subarray(0, DIRECT_ALIGN)], DIRECT_ALIGN, 0);
    return true;
  } catch (err) {
    if (isRefusal(err)) return false;
    throw err;
  } finally {
    slabs.give(slab);
    closeSync(fd);
  }
}

function isRefusal(err: unknown): boolean {
  const code = errnoCode(err);
  return code === 'EINVAL' || code === 'EOPNOTSUPP' || code === 'ENOTSUP';
}

/**
 * Writes `source` to the file `opened` (by `createExclusive` with `direct`) at `file`, as it
 * arrives (`writeGathered`): its bytes are copied into slabs, each written whole at its offset. The
 * bytes after the last whole page are written on this thread through a buffered descriptor: a few
 * KiB into a page beyond the end of the file, which the kernel need not read first.
 */
export function writeDirect(
  opened: Promise<number>,
  file: string,
  source: AsyncIterable<Uint8Array>,
  slabs: AlignedSlabs,
): Promise<void> {
  return writeGathered(opened, source, new SlabBatches(file, slabs));
}

/** Batches of one slab each, as `writeDirect` writes them. */
class SlabBatches implements Gatherer {
  private slab: Buffer;
  private filled = 0;
  private position = 0;

  constructor(
    private readonly file: string,
    private readonly slabs: AlignedSlabs,
  ) {
    this.slab = slabs.take();
  }

  get full(): boolean {
    return this.filled === SLAB_BYTES;
  }

  take(chunk: Uint8Array, at: number): number {
    const n = Math.min(chunk.byteLength - at, SLAB_BYTES - this.filled);
    this.slab.set(n === chunk.byteLength ? chunk : chunk.subarray(at, at + n), this.filled);
    this.filled += n;
    return at + n;
  }

  send(opened: Promise<number>): Promise<void> {
    const full = this.slab;
    const offset = this.position;
    this.position += SLAB_BYTES;
    this.slab = this.slabs.take();
    this.filled = 0;
    return opened
      .then((fd) => writeAllAt(fd, [full], SLAB_BYTES, offset))
      .finally(() => this.slabs.give(full));
  }

  async finish(fd: number): Promise<void> {
    const { slab, filled, position } = this;
    const whole = filled - (filled % DIRECT_ALIGN);
    if (whole > 0) await writeAllAt(fd, [slab.subarray(0, whole)], whole, position);
    if (filled > whole) writeTail(this.file, slab.subarray(whole, filled), position + whole);
  }

  release(): void {
    this.slabs.give(this.slab);
  }
}

function writeTail(file: string, bytes: Buffer, position: number): void {
  const fd = openSync(file, 'r+');
  try {
    for (let done = 0; done < bytes.length; ) {
      done += writeSync(fd, bytes, done, bytes.length - done, position + done);
    }
  } finally {
    closeSync(fd);
  }
}
