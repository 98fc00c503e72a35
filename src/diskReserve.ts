// Room kept back in a data folder so that its process can still start on a full disk. LevelDB
// writes when it opens: it turns the log of its last run into a table and writes a new MANIFEST and
// log, and on a full disk the open fails ("Database failed to open: IO error: ... No space left on
// device"). A worker that cannot open its index cannot serve the copies it holds, and a manager that
// cannot open its Raft log or tables cannot serve reads nor commit the deletes that would free the
// disk. So each keeps a file of zeros in its data folder, made (and fsynced) when there is room for
// it and as much again, and deletes it when an open fails on a full disk, then opens again: the
// process comes up, serves reads and refuses what would fill the disk (507). It takes nothing new
// until the reserve is back in place, made again once the disk has that room: the space the release
// freed stays its stores', for the next start too. Used by the worker's blob store and by the manager.

import { open, rename, rm, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { fsyncPath } from './fileWrites.ts';
import type { Logger } from './logging.ts';
import { isDiskFull } from './storageFailure.ts';

/** The reserve's name in the data folder. */
export const RESERVE_FILE = 'disk-reserve';

const WRITE_CHUNK = 1024 * 1024;

/** What the log lines say of the process that keeps the reserve. */
export interface ReserveHolder {
  /** `worker`, `manager`. */
  name: string;
  /** What it refuses while the reserve is not in place, e.g. `takes no new blob (507)`. */
  refusing: string;
}

/** Bytes free for an unprivileged writer on the disk holding `dir`. */
export async function freeBytesAt(dir: string): Promise<number> {
  const fs = await statfs(dir);
  return fs.bavail * fs.bsize;
}

/**
 * The wait before the reserve is tried again after it failed for another reason than a full disk
 * (permissions, EIO: nothing the next heartbeat changes), doubled per failure up to the cap.
 */
const RETRY_FIRST_MS = 1_000;
const RETRY_CAP_MS = 60_000;

export class DiskReserve {
  private present = false;
  private restoring: Promise<void> | null = null;
  /** Failures in a row of another kind than a full disk, and when the next try may run. */
  private failures = 0;
  private retryAt = 0;
  /** What the last failure was (its code), so each change of state is logged once. */
  private failedWith: string | null = null;

  constructor(
    readonly dataDir: string,
    readonly bytes: number,
    private readonly log: Logger,
    private readonly holder: ReserveHolder,
    private readonly now: () => number = Date.now,
  ) {}

  get file(): string {
    return path.join(this.dataDir, RESERVE_FILE);
  }

  /**
   * The reserve is in place. While it is not (released on a full disk, or never with room to be
   * made), its holder takes nothing new: what is left of the disk is its stores', or the next start
   * on a full disk would find nothing to release.
   */
  get inPlace(): boolean {
    return this.present;
  }

  /**
   * Deletes the reserve, durably; the bytes that frees (0 without one). Called when the disk is
   * full: the open that failed for want of space is tried again.
   */
  async release(): Promise<number> {
    const size = (await stat(this.file).catch(() => null))?.size ?? 0;
    this.present = false;
    if (size === 0) return 0;
    await rm(this.file, { force: true });
    await fsyncPath(this.dataDir);
    return size;
  }

  /**
   * `open()`, and when it fails on a full disk, the reserve released and `open()` once more. `what`
   * names what it opens, for the log line. Fails as `open` did when there was no reserve to release
   * (none kept, or released by an open before this one: what it freed is all there is).
   */
  async openReleasing<T>(what: string, openStore: () => Promise<T>): Promise<T> {
    try {
      return await openStore();
    } catch (err) {
      const freed = isDiskFull(err) ? await this.release() : 0;
      if (freed === 0) throw err;
      this.log.warn(
        { event: 'storage.reserve_released', dataDir: this.dataDir, bytes: freed, opening: what },
        `the disk is full: released the disk reserve (${freed} bytes) to open ${what}; the ` +
          `${this.holder.name} serves reads and ${this.holder.refusing} until ${2 * freed} bytes are free there`,
      );
      return openStore();
    }
  }

  /**
   * At the end of a start: makes the reserve if the disk has room for it and as much again, and
   * says so when it is not in place (the holder refuses new data until it is).
   */
  async makeAtStart(): Promise<void> {
    await this.makeIfRoom(await freeBytesAt(this.dataDir));
    if (this.present) return;
    this.log.warn(
      { event: 'storage.reserve_missing', dataDir: this.dataDir, bytes: this.bytes },
      `no room for the disk reserve (${this.bytes} bytes): the ${this.holder.name} ${this.holder.refusing} ` +
        `until ${2 * this.bytes} bytes are free on the disk`,
    );
  }

  /**
   * Makes the reserve unless it is in place, when `freeBytes` (what the disk has free now) leaves
   * as much again after it. Never throws: a reserve that cannot be made is logged, and its holder
   * goes on refusing new data.
   */
  async makeIfRoom(freeBytes: number): Promise<void> {
    const was = this.present;
    this.present = (await stat(this.file).catch(() => null))?.size === this.bytes;
    if (this.present) return;
    if (was) {
      // Deleted (or cut) while the worker ran, most likely by hand to free space.
      this.log.warn(
        { event: 'storage.reserve_gone', file: this.file, bytes: this.bytes },
        `the disk reserve is gone: the ${this.holder.name} ${this.holder.refusing} until it is made again, once ${2 * this.bytes} bytes are free`,
      );
    }
    // What a crash while the reserve was made left: it holds space and is no reserve.
    await rm(`${this.file}.tmp`, { force: true }).catch(() => {});
    if (freeBytes < 2 * this.bytes || this.now() < this.retryAt) return;
    try {
      await this.write();
      this.present = true;
      this.failures = 0;
      this.retryAt = 0;
      this.failedWith = null;
      this.log.info(
        { event: 'storage.reserve_made', file: this.file, bytes: this.bytes },
        `made the disk reserve (${this.bytes} bytes) that lets the ${this.holder.name} start on a full disk`,
      );
    } catch (err) {
      this.failed(err);
    }
  }

  /**
   * A failed make: logged when its kind changed. A full disk is retried once the disk has room
   * again (the free space is looked at first); anything else after a doubling wait.
   */
  private failed(err: unknown): void {
    const diskFull = isDiskFull(err);
    const code = diskFull ? 'ENOSPC' : ((err as { code?: unknown }).code?.toString() ?? 'unknown');
    if (!diskFull) {
      this.failures += 1;
      this.retryAt = this.now() + Math.min(RETRY_FIRST_MS * 2 ** (this.failures - 1), RETRY_CAP_MS);
    }
    if (code === this.failedWith) return;
    this.failedWith = code;
    this.log.warn(
      { event: 'storage.reserve_failed', file: this.file, diskFull, err },
      diskFull
        ? 'could not make the disk reserve: the disk is full'
        : `could not make the disk reserve; tried again with a growing wait (up to ${RETRY_CAP_MS / 1000} s), logged again only if the cause changes`,
    );
  }

  /**
   * makeIfRoom in the background, one at a time: what a periodic look at the disk calls. It looks
   * at the file even when the reserve is in place: one deleted by hand is noticed here, not at the
   * next start.
   */
  restoreIfRoom(freeBytes: number): void {
    if (this.restoring) return;
    this.restoring = this.makeIfRoom(freeBytes).finally(() => {
      this.restoring = null;
    });
  }

  /** Waits for a reserve being made in the background (its holder closes). */
  async settled(): Promise<void> {
    await this.restoring;
  }

  /**
   * Zeros written out (not a sparse file: its blocks must be taken now) under a temporary name,
   * fsynced, then renamed: a reserve under its own name is always whole and durable.
   */
  private async write(): Promise<void> {
    const temp = `${this.file}.tmp`;
    const fh = await open(temp, 'w', 0o600);
    try {
      const zeros = Buffer.alloc(Math.min(WRITE_CHUNK, this.bytes));
      for (let at = 0; at < this.bytes; ) {
        const { bytesWritten } = await fh.write(zeros, 0, Math.min(zeros.length, this.bytes - at), at);
        at += bytesWritten;
      }
      await fh.sync();
    } catch (err) {
      await fh.close();
      await rm(temp, { force: true });
      throw err;
    }
    await fh.close();
    await rename(temp, this.file);
    await fsyncPath(this.dataDir);
  }
}
