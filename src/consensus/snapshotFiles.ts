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

import { createHash } from 'node:crypto';
import { open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { fsyncPath, makePrivateDir, PRIVATE_FILE_MODE, readFileChunks } from '../fileWrites.ts';
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
const NAME = /^([0-9a-f]{16})-([0-9a-f]{16})-([0-9a-f]{16})\.(snap|part|tmp)$/;

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
  return `${hex16(ref.index)}-${hex16(ref.term)}-${ref.sha256.slice(0, 16)}.snap`;
}

export class SnapshotFolder {
  /** Names of the complete files, so `holds` answers without a system call (from the Ready loop). */
  private readonly complete = new Set<string>();
  /** Serialises the writes to incoming files: a retried piece may overlap one still being written. */
  private incoming: Promise<unknown> = Promise.resolve();

  private constructor(readonly dir: string) {}

  /** Opens (creating if needed) the folder; an own snapshot a crash interrupted (`.tmp`) is removed. */
  static async open(dir: string): Promise<SnapshotFolder> {
    await makePrivateDir(dir);
    const folder = new SnapshotFolder(dir);
    for (const name of await readdir(dir)) {
      const m = NAME.exec(name);
      if (m?.[4] === 'tmp') await rm(join(dir, name), { force: true });
      else if (m?.[4] === 'snap') folder.complete.add(name);
    }
    return folder;
  }

  /** Whether the complete file `ref` names is here. */
  holds(ref: SnapshotFileRef): boolean {
    return this.complete.has(snapshotFileName(ref));
  }

  pathOf(ref: SnapshotFileRef): string {
    return join(this.dir, snapshotFileName(ref));
  }

  /**
   * Writes `chunks` (an own snapshot at `index`, `term`) to a temp file, hashing on the way, fsyncs
   * it, renames it to its final name and fsyncs the folder. Memory: one chunk at a time.
   */
  async write(index: Index, term: Term, chunks: AsyncIterable<Uint8Array>): Promise<SnapshotFileRef> {
    const tmp = join(
      this.dir,
      `${hex16(index)}-${hex16(term)}-${Date.now().toString(16).padStart(16, '0')}.tmp`,
    );
    const hash = createHash('sha256');
    let size = 0;
    let fh: Awaited<ReturnType<typeof open>>;
    try {
      fh = await open(tmp, 'w', PRIVATE_FILE_MODE);
    } catch (err) {
      // The state was captured when `chunks` was made (a LevelDB snapshot): starting and ending
      // the stream releases it.
      for await (const _ of chunks) break;
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
    this.complete.add(snapshotFileName(ref));
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
      let position = from;
      while (position < to) {
        const chunk = Buffer.allocUnsafe(Math.min(SNAPSHOT_READ_CHUNK_BYTES, to - position));
        const { bytesRead } = await fh.read(chunk, 0, chunk.length, position);
        if (bytesRead === 0) throw new Error(`snapshot file ${path} ends at byte ${position} of ${ref.size}`);
        position += bytesRead;
        const piece = bytesRead === chunk.length ? chunk : chunk.subarray(0, bytesRead);
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

  /** Bytes held of `ref`: its size when complete, else what a `.part` holds, else 0. */
  async received(ref: SnapshotFileRef): Promise<number> {
    if (this.holds(ref)) return ref.size;
    return stat(this.partOf(ref)).then(
      (s) => s.size,
      () => 0,
    );
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
    const run = this.incoming.then(() => this.appendNow(ref, offset, body, maxBytes));
    this.incoming = run.catch(() => {});
    return run;
  }

  private partOf(ref: SnapshotFileRef): string {
    return join(this.dir, snapshotFileName(ref).replace(/\.snap$/, '.part'));
  }

  private async appendNow(
    ref: SnapshotFileRef,
    offset: number,
    body: AsyncIterable<Uint8Array>,
    maxBytes: number,
  ): Promise<number> {
    const held = await this.received(ref);
    if (offset !== held)
      throw new SnapshotFileError('OffsetMismatch', `holding ${held} bytes, not ${offset}`, held);
    if (held === ref.size) return held;
    const part = this.partOf(ref);
    const fh = await open(part, 'a', PRIVATE_FILE_MODE);
    let size = held;
    try {
      for await (const chunk of body) {
        if (size + chunk.byteLength > ref.size || size + chunk.byteLength - held > maxBytes) {
          throw new SnapshotFileError(
            'TooLarge',
            'the piece runs past the snapshot or the piece limit',
            size,
          );
        }
        await fh.write(chunk);
        size += chunk.byteLength;
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (size === ref.size) await this.completePart(ref, part);
    return size;
  }

  private async completePart(ref: SnapshotFileRef, part: string): Promise<void> {
    const hash = createHash('sha256');
    for await (const chunk of readFileChunks(part, ref.size, SNAPSHOT_READ_CHUNK_BYTES)) hash.update(chunk);
    if (hash.digest('hex') !== ref.sha256) {
      await rm(part, { force: true });
      throw new SnapshotFileError('DigestMismatch', 'the received snapshot does not match its sha256', 0);
    }
    await rename(part, this.pathOf(ref));
    await fsyncPath(this.dir);
    this.complete.add(snapshotFileName(ref));
  }

  /**
   * Removes the complete files older than `kept` (the snapshot just recorded in the Raft log) and
   * the incoming ones not newer: nothing newer goes, since it may be about to be recorded.
   */
  async removeOlderThan(kept: SnapshotFileRef): Promise<void> {
    const keptName = snapshotFileName(kept);
    for (const name of await readdir(this.dir)) {
      const m = NAME.exec(name);
      if (m === null || name === keptName || m[4] === 'tmp') continue;
      const index = Number.parseInt(m[1]!, 16);
      if (index < kept.index || (m[4] === 'part' && index <= kept.index)) {
        this.complete.delete(name);
        await rm(join(this.dir, name), { force: true });
      }
    }
  }
}
