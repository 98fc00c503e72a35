// The snapshot files of one manager: a folder beside its Raft log holding the state machine's
// streamed snapshots, named by what identifies them, so the Raft log, the core and MsgSnap carry only
// a small descriptor (src/consensus/snapshots.ts) and never the state itself.
//
//   <index:16 hex>-<term:16 hex>-<sha256:16 hex>.snap   complete and checked (size and sha256)
//   <same>.part                                          being received from the leader (resumable)
//   <same>.tmp                                           being written by this manager's own snapshot
//
// A name appears with `.snap` only by a rename after its bytes were fsynced and checked, followed
// by an fsync of the folder (etcd's snap/ does the same for its db files), so a `.snap` present after
// a crash is whole. Its owner records the descriptor only after that, and removes older files only
// once a newer one is durable and recorded (`removeOlderThan`).

import { createHash, type Hash } from 'node:crypto';
import { type FileHandle, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fsyncPath, makePrivateDir, PRIVATE_FILE_MODE } from '../fileWrites.ts';
import type { Index, Term } from './types.ts';

/** What names a snapshot file: the descriptor's `file`. */
export interface SnapshotFileRef {
  index: Index;
  term: Term;
  /** Bytes in the file. */
  size: number;
  /** sha256 (hex) of the file's bytes. */
  sha256: string;
}

/** Bytes a read of a snapshot file hands out at a time. */
export const SNAPSHOT_READ_CHUNK_BYTES = 1024 * 1024;
// The third field: the whole sha256 (`.snap`, `.part`), or the time a `.tmp` was started.
const NAME = /^([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16}|[0-9a-f]{64})\.(snap|part|tmp)$/;

/** A code the transport maps to one HTTP status each (snapshotRoutes.ts). */
export class SnapshotFileError extends Error {
  constructor(
    readonly code: 'OffsetMismatch' | 'DigestMismatch' | 'TooLarge',
    message: string,
    /** Bytes held after the failure (what a sender resumes from). */
    readonly received: number,
  ) {
    super(message);
    this.name = 'SnapshotFileError';
  }
}

const hex16 = (n: number): string => n.toString(16).padStart(16, '0');

export function snapshotFileName(ref: SnapshotFileRef): string {
  return `${hex16(ref.index)}-${hex16(ref.term)}-${ref.sha256}.snap`;
}

/** A `.part` being received: the sha256 of its bytes so far, so completing it reads nothing back. */
interface PartHash {
  hash: Hash;
  size: number;
}

export class SnapshotFolder {
  /**
   * Sizes of the complete files by name (the name carries the whole sha256), so `holds` answers
   * without a system call (from the Ready loop).
   */
  private readonly complete = new Map<string, number>();
  /** Running hashes of the `.part` files appended to since this process opened the folder. */
  private readonly partHashes = new Map<string, PartHash>();
  /** Complete files being sent (name -> senders): `removeOlderThan` leaves them. */
  private readonly pinned = new Map<string, number>();
  /** Serialises the work on incoming files: a retried piece may overlap one still being written. */
  private incoming: Promise<unknown> = Promise.resolve();

  private constructor(readonly dir: string) {}

  /**
   * Opens (creating if needed) the folder. An own snapshot a crash interrupted (`.tmp`) is removed,
   * and so is a `.part` not newer than the newest complete file (a transfer the leader gave up).
   */
  static async open(dir: string): Promise<SnapshotFolder> {
    const existed = await stat(dir).then(
      () => true,
      () => false,
    );
    await makePrivateDir(dir);
    // The folder's own name is durable only once its parent is synced.
    if (!existed) await fsyncPath(dirname(dir));
    const folder = new SnapshotFolder(dir);
    const names = await readdir(dir);
    let newest = -1;
    for (const name of names) {
      const m = NAME.exec(name);
      if (m?.[4] !== 'snap') continue;
      folder.complete.set(name, (await stat(join(dir, name))).size);
      newest = Math.max(newest, Number.parseInt(m[1]!, 16));
    }
    let removed = false;
    for (const name of names) {
      const m = NAME.exec(name);
      const stale = m?.[4] === 'tmp' || (m?.[4] === 'part' && Number.parseInt(m[1]!, 16) <= newest);
      if (!stale) continue;
      await rm(join(dir, name), { force: true });
      removed = true;
    }
    if (removed) await fsyncPath(dir);
    return folder;
  }

  /** Whether the complete file `ref` names (index, term, whole sha256, and size) is here. */
  holds(ref: SnapshotFileRef): boolean {
    return this.complete.get(snapshotFileName(ref)) === ref.size;
  }

  pathOf(ref: SnapshotFileRef): string {
    return join(this.dir, snapshotFileName(ref));
  }

  /**
   * Keeps `ref`'s file from `removeOlderThan` until the returned release is called: a file being
   * sent stays on disk, so a retried or resumed transfer still finds it.
   */
  pin(ref: SnapshotFileRef): () => void {
    const name = snapshotFileName(ref);
    this.pinned.set(name, (this.pinned.get(name) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.pinned.get(name) ?? 1) - 1;
      if (left > 0) this.pinned.set(name, left);
      else this.pinned.delete(name);
    };
  }

  /**
   * Writes `chunks` (an own snapshot at `index`, `term`) to a temp file, hashing on the way, fsyncs
   * it, renames it to its final name and fsyncs the folder. Memory: one chunk at a time. Done with
   * each chunk before it asks for the next: a source may hand out one buffer written over.
   */
  async write(index: Index, term: Term, chunks: AsyncIterable<Uint8Array>): Promise<SnapshotFileRef> {
    const tmp = join(
      this.dir,
      `${hex16(index)}-${hex16(term)}-${Date.now().toString(16).padStart(16, '0')}.tmp`,
    );
    const hash = createHash('sha256');
    let size = 0;
    let fh: FileHandle;
    try {
      fh = await open(tmp, 'w', PRIVATE_FILE_MODE);
    } catch (err) {
      // Returned unread, the source releases what it holds (a LevelDB snapshot, say).
      await chunks[Symbol.asyncIterator]().return?.();
      throw err;
    }
    try {
      for await (const chunk of chunks) {
        hash.update(chunk);
        size += chunk.byteLength;
        await fh.write(chunk);
      }
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(tmp, { force: true });
      throw err;
    } finally {
      await fh.close().catch(() => {});
    }
    const ref = { index, term, size, sha256: hash.digest('hex') };
    await rename(tmp, this.pathOf(ref));
    await fsyncPath(this.dir);
    this.complete.set(snapshotFileName(ref), size);
    return ref;
  }

  /**
   * The file's bytes `from`..`to`. A read of the whole file is checked: a size or sha256 that is not
   * the descriptor's throws at the end, before the consumer sees the stream end (a state machine's
   * `restoreChunks` then keeps its old state).
   */
  async *read(ref: SnapshotFileRef, from = 0, to = ref.size): AsyncGenerator<Buffer> {
    const path = this.pathOf(ref);
    const hash = from === 0 && to === ref.size ? createHash('sha256') : null;
    const fh = await open(path, 'r');
    try {
      for await (const piece of readRange(fh, path, from, to)) {
        hash?.update(piece);
        yield piece;
      }
      if ((await fh.stat()).size !== ref.size)
        throw new Error(`snapshot file ${path} is not ${ref.size} bytes`);
    } finally {
      await fh.close();
    }
    if (hash !== null && hash.digest('hex') !== ref.sha256) {
      throw new Error(`snapshot file ${path} does not match its sha256`);
    }
  }

  /**
   * The complete file `ref` names, opened for reading pieces of it (`readRange`) for as long as a
   * transfer lasts: on POSIX an open file stays readable when a newer snapshot removes its name.
   */
  async openComplete(ref: SnapshotFileRef): Promise<FileHandle> {
    return open(this.pathOf(ref), 'r');
  }

  /**
   * Bytes held of `ref`: its size when complete, else what a `.part` holds, else 0. A `.part` that
   * holds every byte (a crash came between its last write and its rename) is completed first, so
   * the sender, which then sends no piece, finds the file there when it delivers the MsgSnap.
   */
  received(ref: SnapshotFileRef): Promise<number> {
    return this.serialised(() => this.settle(ref));
  }

  /**
   * Appends `body` (bytes `offset`.. of `ref`) to its `.part`, at most `maxBytes` of it; when that
   * completes the file, checks its size and sha256 and makes it a `.snap` (a mismatch removes the
   * `.part`: the sender starts over). Returns the bytes now held. Throws SnapshotFileError when
   * `offset` is not what is held (the sender resumes from `received`).
   */
  append(
    ref: SnapshotFileRef,
    offset: number,
    body: AsyncIterable<Uint8Array>,
    maxBytes: number,
  ): Promise<number> {
    return this.serialised(() => this.appendNow(ref, offset, body, maxBytes));
  }

  private serialised<T>(work: () => Promise<T>): Promise<T> {
    const run = this.incoming.then(work);
    this.incoming = run.catch(() => {});
    return run;
  }

  private partOf(ref: SnapshotFileRef): string {
    return join(this.dir, snapshotFileName(ref).replace(/\.snap$/, '.part'));
  }

  /** `received` inside the queue: completes a whole `.part` (or a 0-byte file) on the way. */
  private async settle(ref: SnapshotFileRef): Promise<number> {
    if (this.holds(ref)) return ref.size;
    const part = this.partOf(ref);
    const held = await stat(part).then(
      (s) => s.size,
      () => null,
    );
    if (held !== null && held > ref.size) {
      // Not a prefix of this file: the sender starts over.
      this.partHashes.delete(part);
      await rm(part, { force: true });
      return 0;
    }
    if ((held ?? 0) !== ref.size) return held ?? 0;
    if (held === null) await this.startPart(ref);
    await this.completePart(ref, part);
    return ref.size;
  }

  private async appendNow(
    ref: SnapshotFileRef,
    offset: number,
    body: AsyncIterable<Uint8Array>,
    maxBytes: number,
  ): Promise<number> {
    const held = await this.settle(ref);
    if (offset !== held)
      throw new SnapshotFileError('OffsetMismatch', `holding ${held} bytes, not ${offset}`, held);
    if (held === ref.size) return held;
    const part = this.partOf(ref);
    if (held === 0) await this.startPart(ref);
    const running = await this.partHash(part, held);
    const fh = await open(part, 'a', PRIVATE_FILE_MODE);
    try {
      for await (const chunk of body) {
        if (running.size + chunk.byteLength > ref.size || running.size + chunk.byteLength - held > maxBytes) {
          throw new SnapshotFileError(
            'TooLarge',
            'the piece runs past the snapshot or the piece limit',
            running.size,
          );
        }
        await fh.write(chunk);
        running.hash.update(chunk);
        running.size += chunk.byteLength;
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (running.size === ref.size) await this.completePart(ref, part);
    return running.size;
  }

  /**
   * Creates `ref`'s `.part` and removes every other `.part` of a lower index: the leader moved on
   * to a newer snapshot, and an abandoned transfer may hold gigabytes.
   */
  private async startPart(ref: SnapshotFileRef): Promise<void> {
    for (const name of await readdir(this.dir)) {
      const m = NAME.exec(name);
      if (m?.[4] !== 'part' || Number.parseInt(m[1]!, 16) >= ref.index) continue;
      this.partHashes.delete(join(this.dir, name));
      await rm(join(this.dir, name), { force: true });
    }
    await (await open(this.partOf(ref), 'a', PRIVATE_FILE_MODE)).close();
  }

  /**
   * The running hash of `part`, which holds `size` bytes. Kept from the appends of this process;
   * after a restart (or a write that failed halfway) the bytes on disk are hashed once, with reads
   * through the threadpool so the event loop keeps serving heartbeats meanwhile.
   */
  private async partHash(part: string, size: number): Promise<PartHash> {
    const known = this.partHashes.get(part);
    if (known !== undefined && known.size === size) return known;
    const running: PartHash = { hash: createHash('sha256'), size: 0 };
    this.partHashes.delete(part);
    const fh = await open(part, 'r');
    try {
      for await (const chunk of readRange(fh, part, 0, size)) running.hash.update(chunk);
    } finally {
      await fh.close();
    }
    running.size = size;
    this.partHashes.set(part, running);
    return running;
  }

  private async completePart(ref: SnapshotFileRef, part: string): Promise<void> {
    const running = await this.partHash(part, ref.size);
    this.partHashes.delete(part);
    if (running.hash.digest('hex') !== ref.sha256) {
      await rm(part, { force: true });
      throw new SnapshotFileError('DigestMismatch', 'the received snapshot does not match its sha256', 0);
    }
    await rename(part, this.pathOf(ref));
    await fsyncPath(this.dir);
    this.complete.set(snapshotFileName(ref), ref.size);
  }

  /** Removes a complete file that was never recorded (unless it is being sent). */
  async discard(ref: SnapshotFileRef): Promise<void> {
    const name = snapshotFileName(ref);
    if (this.pinned.has(name)) return;
    this.complete.delete(name);
    await rm(join(this.dir, name), { force: true });
  }

  /**
   * Removes the complete files older than `kept` (the snapshot just recorded in the Raft log),
   * except those being sent (`pin`), and the incoming ones not newer: nothing newer goes, since it
   * may be about to be recorded.
   */
  async removeOlderThan(kept: SnapshotFileRef): Promise<void> {
    await this.removeBefore(kept.index, snapshotFileName(kept));
  }

  /**
   * Removes the complete files below `index` and the incoming ones not above it (except those being
   * sent, and `keptName`): the log was compacted at `index`, and no file older serves a follower.
   */
  async removeBefore(index: Index, keptName: string | null = null): Promise<void> {
    for (const name of await readdir(this.dir)) {
      const m = NAME.exec(name);
      if (m === null || name === keptName || m[4] === 'tmp' || this.pinned.has(name)) continue;
      const at = Number.parseInt(m[1]!, 16);
      if (at < index || (m[4] === 'part' && at <= index)) {
        this.complete.delete(name);
        this.partHashes.delete(join(this.dir, name));
        await rm(join(this.dir, name), { force: true });
      }
    }
  }
}

/** Bytes `from`..`to` of the open file `fh`, one read chunk at a time, each a new buffer. */
export async function* readRange(
  fh: FileHandle,
  path: string,
  from: number,
  to: number,
): AsyncGenerator<Buffer> {
  let position = from;
  while (position < to) {
    const chunk = Buffer.allocUnsafe(Math.min(SNAPSHOT_READ_CHUNK_BYTES, to - position));
    const { bytesRead } = await fh.read(chunk, 0, chunk.length, position);
    if (bytesRead === 0) throw new Error(`snapshot file ${path} ends at byte ${position} of ${to}`);
    position += bytesRead;
    yield bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
  }
}
