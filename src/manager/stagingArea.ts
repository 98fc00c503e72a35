// The leader's staging folder: an upload is streamed here once, hashed and sniffed on the way
// (docs/seed-flow.md: "receives an image, saves it locally"), either before any worker sees it
// (`stage`) or beside the copies forwarded as it arrives (`tee`). Staged files are
// transient: deleted once both replicas are confirmed, and swept at start-up after a crash. The type
// is sniffed from the first bytes, before any of them is written: a body that is no image is refused
// having cost the leader a few KiB, not a staged file. A teed body that fits the memory budget is
// held in reused slabs (heldBodies.ts) instead of a file: the file was never synced, so it kept
// nothing a crash would not lose too, and creating, writing and unlinking it cost the leader a
// tenth of its CPU per upload (docs/measurements.md).

import { createHash, randomUUID } from 'node:crypto';
import { open, readdir, rm, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { freeBytesAt } from '../diskReserve.ts';
import { makePrivateDir, PRIVATE_FILE_MODE, writeBatched } from '../fileWrites.ts';
import { BodyTooSlow } from '../http/requestBody.ts';
import { Crc32c } from '../protocol/checksums.ts';
import { isDiskFull } from '../storageFailure.ts';
import { ChunkFanOut } from './chunkFanOut.ts';
import { HeldBody, SLAB_BYTES, SlabPool, slabBytesFor } from './heldBodies.ts';
import { SNIFF_BYTES, sniffImageType } from './imageTypes.ts';

export { ACCEPTED_IMAGE_TYPES } from './imageTypes.ts';

/** Bytes gathered before one write to the staged file. */
const WRITE_BATCH_BYTES = 256 * 1024;
/** Bytes of a teed body gathered before they are handed to the copies and the staged file. */
const FORWARD_BATCH_BYTES = 256 * 1024;

/** Where a staged upload's bytes are: a file, or (a teed body within the memory budget) its chunks. */
export type StagedBytes =
  | { path: string; chunks?: undefined }
  | { path: null; chunks: readonly Uint8Array[] };

export type StagedUpload = StagedBytes & {
  size: number;
  sha256: string;
  /** Of the same bytes, in the same pass: what the workers check their copies with. */
  crc32c: string;
  contentType: string;
};

/** What `stage` makes: always a file. */
export type StagedFile = StagedUpload & { path: string };

export interface StagingOptions {
  /**
   * Bytes of teed bodies held in memory at once, all uploads (their Content-Lengths): a body that
   * does not fit is written to a staged file. 0: every body goes to a file.
   */
  memoryBytes?: number;
}

export type StageError =
  | { code: 'EmptyBody'; message: string }
  | { code: 'TooLarge'; message: string; limit: number }
  | { code: 'NotAnImage'; message: string }
  | { code: 'BodyTooSlow'; message: string }
  | { code: 'LengthMismatch'; message: string }
  /** The staging disk is full of other uploads' staged files, which free it as they end: retry. */
  | { code: 'StagingFull'; message: string }
  /** The staging disk is full, and the staged files would not make room: it will not empty by itself. */
  | { code: 'InsufficientStorage'; message: string };

export type StageResult = { ok: true; staged: StagedFile } | { ok: false; error: StageError };

/** What `holdWhole` makes: the body in one held slab. */
export type HoldResult = { ok: true; staged: StagedUpload } | { ok: false; error: StageError };

/**
 * The largest body read whole into memory before its copies start (StagingArea.holdWhole): one
 * slab. A teed body is forwarded in slabs, so one that fits a slab went out only once it had all
 * arrived anyway; held whole, each copy is one buffer sent with its request's headers and its
 * checksums in a header, with no tee, no trailer and no socket write of its own for either.
 */
export const HELD_WHOLE_MAX_BYTES = SLAB_BYTES;

class UploadTooLarge extends Error {}

class EmptyBody extends Error {}

const EMPTY_BODY: StageError = { code: 'EmptyBody', message: 'the request body is empty' };

class NotAnImage extends Error {}

/** The body did not carry the bytes its Content-Length announced. */
class LengthMismatch extends Error {}

/**
 * The accepted image type of `head` (the body's first bytes, not empty), or NotAnImage. The
 * chunks are joined only when the first is shorter than what the sniff reads: a first socket read
 * is often 64 KiB, and copying it cost half as much again as the sniff (docs/measurements.md).
 */
async function acceptedType(head: Uint8Array[], whole: boolean): Promise<string> {
  const first = head[0]!;
  const prefix =
    head.length === 1 || first.byteLength >= SNIFF_BYTES
      ? Buffer.from(first.buffer, first.byteOffset, first.byteLength)
      : Buffer.concat(head);
  const sniffed = await sniffImageType(prefix, whole);
  if (!sniffed.ok) throw new NotAnImage(sniffed.message);
  return sniffed.mime;
}

/**
 * Counts and checksums the chunks of a body whose Content-Length was `size`: `take` throws once it
 * passes `maxBytes` or its length, `ended` once it ended short (tee and holdWhole).
 */
class DeclaredBody {
  received = 0;
  private readonly hash = createHash('sha256');
  private readonly crc = new Crc32c();

  constructor(
    private readonly maxBytes: number,
    private readonly size: number,
  ) {}

  take(chunk: Uint8Array): void {
    this.received += chunk.byteLength;
    if (this.received > this.maxBytes) throw new UploadTooLarge();
    if (this.received > this.size) throw new LengthMismatch(`the body is longer than its ${this.size} bytes`);
    this.hash.update(chunk);
    this.crc.update(chunk);
  }

  /** Its sums, once it ended at its length. */
  ended(): { sha256: string; crc32c: string } {
    if (this.received !== this.size)
      throw new LengthMismatch(`the body ended at ${this.received} of its ${this.size} bytes`);
    return { sha256: this.hash.digest('hex'), crc32c: this.crc.hex() };
  }
}

/** The refusal `err` stands for, or null for an unexpected failure (a full disk: StagingArea.refusalOf). */
function stageError(err: unknown, maxBytes: number): StageError | null {
  if (isDiskFull(err)) {
    return { code: 'InsufficientStorage', message: "the leader's staging disk is full" };
  }
  if (err instanceof NotAnImage) return { code: 'NotAnImage', message: err.message };
  if (err instanceof BodyTooSlow) return { code: 'BodyTooSlow', message: err.message };
  if (err instanceof LengthMismatch) return { code: 'LengthMismatch', message: err.message };
  if (err instanceof UploadTooLarge) {
    return { code: 'TooLarge', message: `image exceeds the limit of ${maxBytes} bytes`, limit: maxBytes };
  }
  return null;
}

/** Cuts socket-sized chunks into batches of FORWARD_BATCH_BYTES (a body forwarded, not held). */
function concatBatches(): { add(chunk: Uint8Array): Uint8Array[]; end(): Uint8Array | null } {
  let batch: Uint8Array[] = [];
  let batched = 0;
  const flush = () => {
    const out = batch.length === 1 ? batch[0]! : Buffer.concat(batch, batched);
    batch = [];
    batched = 0;
    return out;
  };
  return {
    add(chunk) {
      batch.push(chunk);
      batched += chunk.byteLength;
      return batched >= FORWARD_BATCH_BYTES ? [flush()] : [];
    },
    end: () => (batched > 0 ? flush() : null),
  };
}

/** A teed upload's body was refused after its copies started (TeedUpload.staged). */
export class StageFailed extends Error {
  constructor(readonly error: StageError) {
    super(error.message);
    this.name = 'StageFailed';
  }
}

/**
 * An upload forwarded as it arrives (StagingArea.tee): each copy reads the body's chunks from its
 * branch while the body is kept too (in memory slabs, or a staging file past the memory budget),
 * for a copy whose first target fails.
 */
export interface TeedUpload {
  contentType: string;
  size: number;
  /** One a copy: the body's chunks as they arrive; it ends when the body has, whole. */
  copies: AsyncIterableIterator<Uint8Array>[];
  /** Stops feeding (and waiting for) the copy `i`, whose request ended. */
  detach(i: number): void;
  /** The body's checksums: available once the copies' branches have ended. */
  sums(): { sha256: string; crc32c: string };
  /**
   * The staged bytes once the whole body is in; rejects with StageFailed (or the body's own
   * error) after removing the file. The caller releases what it got (StagingArea.release).
   */
  staged: Promise<StagedUpload>;
  /** Stops reading the body: every copy's branch and `staged` fail with `reason`. */
  abort(reason: unknown): void;
}

export type TeeResult = { ok: true; teed: TeedUpload } | { ok: false; error: StageError };

export class StagingArea {
  /**
   * Bytes of the bodies held in memory now, reserved when their tee began: whole slabs each, as a
   * body pins them (a 20 KB body counting its size would pin 13 times what it counts).
   */
  private memoryHeld = 0;
  /** The memory-held uploads not yet released (by their chunks), each counted once in memoryHeld. */
  private readonly inMemory = new WeakMap<readonly Uint8Array[], HeldBody>();
  private readonly slabs: SlabPool;
  /** The staged files on disk now, each with the bytes it holds (or will, for a teed body). */
  private readonly files = new Map<string, () => number>();

  private constructor(
    readonly dir: string,
    private readonly memoryBytes: number,
  ) {
    this.slabs = new SlabPool(Math.floor(memoryBytes / SLAB_BYTES));
  }

  /** Opens the folder and removes whatever a crash left behind: nothing staged outlives its request. */
  static async open(dir: string, opts: StagingOptions = {}): Promise<StagingArea> {
    await makePrivateDir(dir);
    for (const name of await readdir(dir)) await rm(join(dir, name), { force: true, recursive: true });
    return new StagingArea(dir, opts.memoryBytes ?? 0);
  }

  /** Bytes of teed bodies held in memory right now. */
  get heldInMemory(): number {
    return this.memoryHeld;
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
    this.files.set(path, () => size);
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
      const error = await this.refusalOf(err, maxBytes, size);
      if (error) return { ok: false, error };
      throw err;
    }
    if (size === 0) {
      await this.discard(path);
      return { ok: false, error: EMPTY_BODY };
    }
    return { ok: true, staged: { path, size, sha256: hash.digest('hex'), crc32c: crc.hex(), contentType } };
  }

  /**
   * Reads `body` of `size` bytes (its Content-Length, at most HELD_WHOLE_MAX_BYTES) whole into one
   * held slab, hashing it on the way; the first SNIFF_BYTES are sniffed as soon as they are in, so
   * a body that is no image is refused from its first bytes as `tee` refuses it. Null, with the
   * body untouched, when the slab does not fit what is left of the memory budget (the caller tees
   * or stages it instead). The caller releases what it got (`release`).
   */
  async holdWhole(
    body: AsyncIterable<Uint8Array>,
    maxBytes: number,
    size: number,
  ): Promise<HoldResult | null> {
    if (size > HELD_WHOLE_MAX_BYTES) throw new Error(`holdWhole takes at most ${HELD_WHOLE_MAX_BYTES} bytes`);
    const held = this.holdInMemory(size);
    if (!held) return null;
    const meter = new DeclaredBody(maxBytes, size);
    let contentType: string | null = null;
    let sums: { sha256: string; crc32c: string };
    try {
      for await (const chunk of body) {
        meter.take(chunk);
        held.add(chunk);
        if (contentType === null && meter.received >= SNIFF_BYTES) {
          contentType = await acceptedType([held.firstSlabBytes], false);
        }
      }
      if (meter.received === 0) throw new EmptyBody();
      sums = meter.ended();
      contentType ??= await acceptedType([held.firstSlabBytes], true);
      held.end();
    } catch (err) {
      // Nothing was sent from these slabs: they go back to the pool.
      this.releaseMemory(held.chunks, true);
      const error = err instanceof EmptyBody ? EMPTY_BODY : stageError(err, maxBytes);
      if (error) return { ok: false, error };
      throw err;
    }
    return {
      ok: true,
      staged: {
        path: null,
        chunks: held.chunks,
        size,
        contentType,
        ...sums,
      },
    };
  }

  /**
   * Streams `body` of `size` bytes (its Content-Length) to `copies` consumers and keeps it, hashing
   * as it goes: held in slabs when they (whole: slabBytesFor) fit what is left of the memory
   * budget, else written to a staged file. The first SNIFF_BYTES are read and their type checked before this returns: a
   * refused body reaches no consumer. Memory: a held body whole (within the budget); else a
   * forward batch being gathered, and ChunkFanOut's depth of batches a branch (the branches share
   * them). `copyStallMs`: a copy that holds the body back this long fails (BranchStalled, from its
   * branch) and stops being waited for, so the body and the other copies go on; the staged file is
   * waited for always.
   */
  async tee(
    body: AsyncIterable<Uint8Array>,
    maxBytes: number,
    size: number,
    copies: number,
    copyStallMs?: number,
  ): Promise<TeeResult> {
    const iterator = body[Symbol.asyncIterator]();
    const meter = new DeclaredBody(maxBytes, size);
    const head: Uint8Array[] = [];
    let ended = false;
    let contentType: string;
    try {
      while (meter.received < SNIFF_BYTES && !ended) {
        const next = await iterator.next();
        if (next.done) ended = true;
        else head.push(next.value);
        if (!next.done) meter.take(next.value);
      }
      if (meter.received === 0) return { ok: false, error: EMPTY_BODY };
      contentType = await acceptedType(head, ended);
    } catch (err) {
      await iterator.return?.()?.catch(() => {});
      const error = stageError(err, maxBytes);
      if (error) return { ok: false, error };
      throw err;
    }
    let sums: { sha256: string; crc32c: string } | null = null;
    const held = this.holdInMemory(size);
    const gather = held ?? concatBatches();
    // The first chunks go into the slabs (or a batch) here, out of every closure: kept in one to
    // the upload's end, each first chunk (a socket read, up to 64 KiB outside V8's heap) reached the
    // old generation, whose external bytes start V8's mark-compacts (docs/measurements.md).
    const firstBatches = head.flatMap((chunk) => gather.add(chunk));
    async function* whole(): AsyncGenerator<Uint8Array> {
      let finished = ended;
      try {
        yield* firstBatches;
        while (!finished) {
          const next = await iterator.next();
          finished = next.done === true;
          if (next.done) break;
          meter.take(next.value);
          yield* gather.add(next.value);
        }
        const last = gather.end();
        if (last) yield last;
      } finally {
        if (!finished) await iterator.return?.()?.catch(() => {});
      }
      sums = meter.ended();
    }
    const stall = copyStallMs === undefined ? undefined : { ms: copyStallMs, branches: copies };
    const fan = new ChunkFanOut(whole(), held ? copies : copies + 1, undefined, stall);
    const failed = async (err: unknown) => {
      const error = await this.refusalOf(err, maxBytes, size);
      return error ? new StageFailed(error) : err;
    };
    let staged: Promise<StagedUpload>;
    if (held) {
      staged = fan.done.then(
        (): StagedUpload => ({ path: null, chunks: held.chunks, size, contentType, ...sums! }),
        async (err: unknown) => {
          this.releaseMemory(held.chunks, false);
          throw await failed(err);
        },
      );
    } else {
      const path = join(this.dir, `${randomUUID()}.part`);
      this.files.set(path, () => meter.received);
      const written = this.writeBranch(path, fan.branch(copies));
      written.catch((err: unknown) => fan.abort(err));
      staged = Promise.all([fan.done, written]).then(
        (): StagedUpload => ({ path, size, contentType, ...sums! }),
        async (err: unknown) => {
          await Promise.allSettled([fan.done, written]);
          await this.discard(path);
          throw await failed(err);
        },
      );
    }
    staged.catch(() => {});
    const teed: TeedUpload = {
      contentType,
      size,
      copies: Array.from({ length: copies }, (_, i) => fan.branch(i)),
      detach: (i) => fan.detach(i),
      sums: () => {
        if (!sums) throw new Error('the checksums of an upload are known only once its body ended');
        return sums;
      },
      staged,
      abort: (reason) => fan.abort(reason),
    };
    return { ok: true, teed };
  }

  /** Room for a body of `size` bytes (its whole slabs), reserved in the budget; null if it does not fit. */
  private holdInMemory(size: number): HeldBody | null {
    const reserved = slabBytesFor(size);
    if (this.memoryHeld + reserved > this.memoryBytes) return null;
    this.memoryHeld += reserved;
    const held = new HeldBody(this.slabs, reserved);
    this.inMemory.set(held.chunks, held);
    return held;
  }

  private releaseMemory(chunks: readonly Uint8Array[], reuse: boolean): void {
    const held = this.inMemory.get(chunks);
    if (!held) return;
    this.inMemory.delete(chunks);
    this.memoryHeld -= held.reserved;
    if (reuse) this.slabs.give(held.slabs);
  }

  /**
   * Lets go of staged bytes: removes the file, or returns a memory-held body's room. Idempotent.
   * `reuse`: every request that was sent the body's slabs has answered after reading all of it (its
   * copies were stored at their first targets), so no socket still holds one and they may carry
   * the next body. Otherwise they are left to the garbage collector.
   */
  async release(staged: StagedUpload, opts: { reuse?: boolean } = {}): Promise<void> {
    if (staged.path === null) this.releaseMemory(staged.chunks, opts.reuse ?? false);
    else await this.discard(staged.path);
  }

  /** Slabs kept for the next held bodies. */
  get spareSlabs(): number {
    return this.slabs.spareCount;
  }

  /** Writes a branch's chunks to a new, unsynced staged file, closed whatever happens. */
  private async writeBranch(path: string, chunks: AsyncIterable<Uint8Array>): Promise<void> {
    const opened = open(path, 'wx', PRIVATE_FILE_MODE);
    opened.catch(() => {});
    try {
      await writeBatched(
        opened.then((f) => f.fd),
        chunks,
        WRITE_BATCH_BYTES,
      );
    } finally {
      await (await opened.catch(() => null))?.close();
    }
  }

  /** Removes a staged file, if there is one: a bare unlink (rm's lstat first is a second round trip). */
  async discard(path: string): Promise<void> {
    await unlink(path).catch((err: unknown) => {
      if ((err as { code?: unknown }).code !== 'ENOENT') throw err;
    });
    this.files.delete(path);
  }

  /** The refusal `err` stands for (a full disk judged by `fullDisk`), or null for an unexpected failure. */
  private async refusalOf(err: unknown, maxBytes: number, need: number): Promise<StageError | null> {
    return isDiskFull(err) ? this.fullDisk(need) : stageError(err, maxBytes);
  }

  /**
   * An upload that needed `need` bytes (its length, or what had arrived) found the staging disk
   * full, its own file removed. Staged files live only as long as their upload, so when the free
   * space and the files staged now would hold it, the room comes back within seconds: a retry
   * (503 StagingFull) rather than a final 507, which says that the disk is full of something else
   * and will not empty by itself.
   */
  private async fullDisk(need: number): Promise<StageError> {
    let staged = 0;
    for (const bytes of this.files.values()) staged += bytes();
    const free = await freeBytesAt(this.dir).catch(() => 0);
    // Free space alone must clear the need by a write batch: a failed write's own blocks were
    // just freed, and should not pass for room coming back.
    if ((staged > 0 && free + staged >= need) || free >= need + WRITE_BATCH_BYTES) {
      return {
        code: 'StagingFull',
        message: `the leader's staging disk is full with the uploads in progress (${staged} bytes staged); retry shortly`,
      };
    }
    return {
      code: 'InsufficientStorage',
      message: "the leader's staging disk is full, and not with uploads in progress: it needs room freed",
    };
  }
}
