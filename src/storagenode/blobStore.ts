import { createHash, randomBytes } from 'node:crypto';
import { closeSync, createReadStream, fdatasync, fsync, openSync, renameSync } from 'node:fs';
import fs from 'node:fs/promises';
import path from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { DiskReserve } from '../diskReserve.ts';
import { fsyncPath, makePrivateDir, writeBatched } from '../fileWrites.ts';
import type { ReadBuffers } from '../http/readBuffers.ts';
import type { Logger } from '../logging.ts';
import { createLogger } from '../logging.ts';
import { markCleanStop, takeCleanStopMarker } from '../metadata/cleanStop.ts';
import { CRC32C_HEX_PATTERN, Crc32c } from '../protocol/checksums.ts';
import { isDiskFull } from '../storageFailure.ts';
import { blobRelativePath, isValidBlobId, SHA256_HEX_PATTERN } from './blobId.ts';
import { type BlobEntry, BlobIndex, type BlobRecord } from './blobIndex.ts';
import { prepareBlobLayout } from './blobLayout.ts';
import { encodeTrailer, fitsRecord, hashBlobBytes, readTrailer, TRAILER_BYTES } from './blobTrailer.ts';
import { AlignedSlabs, createExclusive, directWritesWork, writeDirect } from './directWrites.ts';
import { errnoCode, failure, StorageError, type StoreResult, success } from './errors.ts';
import { adoptUnindexedBlobs } from './unindexedBlobs.ts';

export type { BlobEntry, BlobRecord } from './blobIndex.ts';

/**
 * The worker process's disk reserve (src/diskReserve.ts): what an index open may need on a full
 * disk. The table made from the last run's log, which holds at most LevelDB's write buffer (4 MiB,
 * classic-level's default) of index entries, a new MANIFEST and log, and the first synced writes
 * after (the clean-stop flag, the start-up check's corrections). Twice the write buffer: nothing
 * next to a worker's disk.
 */
export const RESERVE_BYTES = 8 * 1024 * 1024;

export interface BlobStoreOptions {
  /** Upper bound on the bytes of all stored blobs together; a write that would cross it gets 507. */
  quotaBytes?: number;
  logger?: Logger;
  /**
   * Write blob files with O_DIRECT where the filesystem takes it (directWrites.ts); default true.
   * false writes through the page cache, as a filesystem without O_DIRECT is written anyway.
   */
  directWrites?: boolean;
  /**
   * Bytes kept in a reserve file, released when the store cannot open on a full disk
   * (src/diskReserve.ts). 0, the default, keeps none; the worker process keeps RESERVE_BYTES.
   */
  diskReserveBytes?: number;
}

export interface WriteOptions {
  /** The request's content-length, when it has one: lets size and quota be refused before reading. */
  declaredLength?: number;
  /** Called with the length of every body chunk as it is received (bytes-in metrics). */
  onBytes?: (bytes: number) => void;
  /**
   * The sender's CRC32C of the body: when given, the transfer is checked with it alone and the
   * expected sha256 is recorded as the sender names it; without it, the body is hashed with sha256
   * (a sender that predates CRC32C). Either way the blob's CRC32C is computed and indexed.
   */
  expectedCrc32c?: string;
  /**
   * The sender's checksums, known only once the body is read (a PUT with a checksum trailer,
   * src/protocol/checksumTrailer.ts): called then, it takes the place of the expected sha256 and
   * CRC32C. A blob the store already holds under the id is verified against them as a retry is
   * (read and checked, nothing written, no quota asked); a blob stored meanwhile, at commit.
   */
  sumsAfterBody?: () => { sha256: string; crc32c: string };
}

export interface WriteOutcome {
  /** `created`: new blob (HTTP 201). `unchanged`: the same bytes were already stored (HTTP 200). */
  status: 'created' | 'unchanged';
  id: string;
  size: number;
  sha256: string;
  /** Absent only for a retry of a blob stored before CRC32C was indexed, sent without one. */
  crc32c?: string;
}

/** Inclusive byte range, already resolved against the blob's size. */
export interface ByteRange {
  start: number;
  end: number;
}

export interface BlobRead {
  id: string;
  record: BlobRecord;
  /** The bytes actually streamed: `range` if one was asked, otherwise the whole blob. */
  start: number;
  end: number;
  /** Owns the file descriptor: closes it on end, error or destroy. The caller must consume or destroy it. */
  stream: Readable;
}

export interface StoreStats {
  blobCount: number;
  blobBytes: number;
  quotaBytes: number | null;
  /** Of the filesystem holding the data folder (fs.statfs). */
  diskTotalBytes: number;
  diskUsedBytes: number;
  /** Available to this (unprivileged) process. */
  diskFreeBytes: number;
}

export interface StartupReport {
  /** Blobs moved from the earlier two-level folder layout (blobLayout.ts). */
  migratedBlobs: number;
  /** The store was closed cleanly last time; if not, the folders were walked (unindexedBlobs.ts). */
  cleanStop: boolean;
  /** Blob files the index lacked, checked against their trailer and indexed again. */
  unindexedAdopted: number;
  /** Blob files the index lacked whose trailer or bytes did not check out: removed. */
  unindexedRemoved: number;
  tempFilesRemoved: number;
  /** Blob files are written with O_DIRECT (directWrites.ts). */
  directWrites: boolean;
  pendingAdopted: number;
  pendingDropped: number;
  missingDropped: number;
  corruptDropped: number;
  blobCount: number;
  blobBytes: number;
  durationMs: number;
}

export type FsyncTarget = 'file' | 'dir';
export type FsyncListener = (target: FsyncTarget, seconds: number) => void;

const STARTUP_STAT_BATCH = 256;
/**
 * Body bytes are written as they arrive, gathered up to this size (a socket read gives up to
 * 64 KiB), with one write in the threadpool while the next batch arrives. The size is bench:worker's
 * (docs/measurements.md).
 */
const WRITE_BATCH_BYTES = 256 * 1024;
/** Bytes one read of `openForCopy` takes at most: bounds what one blob holds in memory. */
const COPY_READ_BYTES = 1024 * 1024;

/**
 * Blob bytes on local disk, one file per blob under `blobs/ab/<id>` (256 folders made when the data
 * folder is set up: blobLayout.ts), each file the blob's bytes followed by a trailer naming its size,
 * CRC32C and sha256 (blobTrailer.ts), plus a LevelDB index of `{ id -> size, sha256, crc32c }` under
 * `index/`. Durability protocol of a new blob, two fsyncs as a bare durable write has:
 *
 *   1. stream into `tmp/<id>.<unique>.tmp` (same filesystem as `blobs/`, so rename is atomic),
 *      checksumming and counting, writing each batch of WRITE_BATCH_BYTES as it arrives, with
 *      O_DIRECT where the filesystem takes it (directWrites.ts: no copy into the page cache); once
 *      the body checks out, its trailer goes into the last batch;
 *   2. fsync the file (started as soon as its last byte was written; a blob written through the
 *      page cache and received alone has its earlier batches fdatasynced while the rest arrives, so
 *      this one has less to write);
 *   3. under the per-id lock: rename into place, fsync the blob's folder;
 *   4. beside that folder fsync, the index put WITHOUT sync; answer once both are done.
 *
 * `writeAtomically` is steps 1-4 for one blob. `receive` (1-2) and `commitReceived` (3-4) split them
 * for a group of blobs (a copy batch): each blob's step 1 and file fsync run while the next one
 * arrives, and the group takes all its ids' locks and shares the folder fsyncs (side by side, one
 * per folder) and one index batch. Each blob's own order of steps is unchanged, so everything below
 * holds for every blob of a group.
 *
 * Why an acknowledged blob survives kill -9 or power loss: before the answer, the bytes and their
 * trailer are durable (2), and so is the name (3; the folder itself was made durable at open). The
 * unsynced index batch of 4 reaches the OS at once, so kill -9 cannot lose it; a power cut can, but
 * only after the open that preceded it durably removed the clean-stop marker (a file a clean close
 * writes into `index/` once the closed index's files are fsynced: metadata/cleanStop.ts). The next
 * start then finds no marker and walks the blob folders: a file the
 * index lacks whose trailer is intact and whose bytes match it is indexed again (unindexedBlobs.ts).
 * (A later synced LevelDB write makes the batch durable anyway: the log is one file, synced whole.)
 * An entry put beside a folder fsync a power cut interrupted may name a file whose rename was lost:
 * the start-up check drops it (the blob was never answered). One whose folder fsync fails is
 * deleted again, synced, after its file.
 * Why a blob is whole or absent after a crash at any moment: the final name only ever points at a
 * file fsynced, trailer included, before the rename; a temp file is removed; a file whose trailer or
 * bytes do not check out is removed, never indexed.
 *
 * Delete: unlink, fsync the folder, THEN index delete (sync).
 *
 * The start-up check (in `open`) repairs every crash window: it empties `tmp/` (a crash in 1 or 2);
 * after an unclean stop it indexes the blob files a lost index batch left unnamed (a power cut after
 * 3); it finishes the pending-write markers a worker of the previous version left (that version
 * synced a marker beside the file instead of a trailer); and it drops index entries whose file is
 * missing (a crash between unlink and index delete, or a file lost under us) or has a size that fits
 * neither layout. Files written before trailers are read as they are: a file of exactly the indexed
 * size has no trailer.
 */
export class BlobStore {
  private readonly locks = new Map<string, Promise<void>>();
  private readonly fsyncListeners = new Set<FsyncListener>();
  private readonly lostListeners = new Set<(id: string) => void>();
  private blobCount = 0;
  private blobBytes = 0;
  /** Bytes received by writes still in flight, counted against the quota before they commit. */
  private reservedBytes = 0;
  private closed = false;
  /** A failed commit left a file at its final name: the next start must walk (see commitLocked). */
  private leftFiles = false;
  /** Kept so the store opens on a full disk (diskReserve.ts); none unless the options ask. */
  private diskReserve: DiskReserve | undefined;
  private readonly tempPrefix = randomBytes(4).toString('hex');
  private tempCount = 0;
  /**
   * Writes from the start of their body to the end of their file's fsync: one alone syncs its first
   * batches early (syncWhileReceiving).
   */
  private writing = 0;

  private constructor(
    readonly dataDir: string,
    readonly index: BlobIndex,
    readonly quotaBytes: number | undefined,
    private readonly log: Logger,
    readonly startupReport: StartupReport,
    /** Where the blob files' bytes are gathered for O_DIRECT; none when the store writes buffered. */
    private readonly slabs: AlignedSlabs | undefined,
  ) {}

  static async open(dataDir: string, options: BlobStoreOptions = {}): Promise<BlobStore> {
    const { quotaBytes } = options;
    if (quotaBytes !== undefined && !(Number.isSafeInteger(quotaBytes) && quotaBytes >= 0)) {
      throw new Error(`quotaBytes must be a non-negative integer, got ${quotaBytes}`);
    }
    const log = options.logger ?? createLogger('blob-store');
    const root = path.resolve(dataDir);
    const reserveBytes = options.diskReserveBytes ?? 0;
    const reserve =
      reserveBytes > 0
        ? new DiskReserve(root, reserveBytes, log, { name: 'worker', refusing: 'takes no new blob (507)' })
        : undefined;
    const openFolder = () => BlobStore.openFolder(root, options, log);
    // LevelDB writes as it opens, and so does the start-up check: what the reserve is kept for.
    const store = reserve ? await reserve.openReleasing('the blob store', openFolder) : await openFolder();
    if (reserve) {
      store.diskReserve = reserve;
      await reserve.makeAtStart();
    }
    return store;
  }

  /** Sets up or opens the folder and runs the start-up check; the index is closed again on failure. */
  private static async openFolder(root: string, options: BlobStoreOptions, log: Logger): Promise<BlobStore> {
    await makePrivateDir(root);
    await makePrivateDir(path.join(root, 'blobs'));
    await makePrivateDir(path.join(root, 'tmp'));
    // Opening the index first takes LevelDB's LOCK: no other process works in this folder from here on.
    const index = await BlobIndex.open(path.join(root, 'index'));
    try {
      const layout = await prepareBlobLayout(path.join(root, 'blobs'));
      // `blobs/`, `tmp/` and `index/` durable in the data folder before any blob is; and a new data
      // folder's own name in its parent, as far as that parent can be opened to be synced.
      await fsyncPath(root);
      await fsyncPath(path.dirname(root)).catch(() => {});
      // The marker file first, then the flag a worker of the previous version kept in the index:
      // both consumed durably before the first unsynced entry can be written.
      const marked = await takeCleanStopMarker(path.join(root, 'index'));
      const cleanStop = (await index.takeCleanStop()) || marked;
      const checked = await startupCheck(root, index, cleanStop, log);
      const slabs = options.directWrites === false ? undefined : await directSlabs(path.join(root, 'tmp'));
      const report = { ...checked, ...layout, directWrites: slabs !== undefined };
      const store = new BlobStore(root, index, options.quotaBytes, log, report, slabs);
      store.blobCount = report.blobCount;
      store.blobBytes = report.blobBytes;
      log.info({ event: 'storage.startup_check', dataDir: root, ...report }, 'blob store opened');
      return store;
    } catch (err) {
      await index.close();
      throw err;
    }
  }

  /** Absolute path a valid id's file lives at. */
  blobPath(id: string): string {
    return path.join(this.dataDir, blobRelativePath(id));
  }

  get tmpDir(): string {
    return path.join(this.dataDir, 'tmp');
  }

  /**
   * A name in `tmp/` no other write of this process uses: a count after a prefix drawn when the
   * store opened (`tmp/` is emptied at open, and files are created exclusively, so a clash fails).
   */
  private newTempPath(id: string): string {
    this.tempCount += 1;
    return `${this.tmpDir}${path.sep}${id}.${this.tempPrefix}${this.tempCount}.tmp`;
  }

  /** Observes every fsync with its duration (the app feeds a histogram). Returns the unsubscribe. */
  onFsync(listener: FsyncListener): () => void {
    this.fsyncListeners.add(listener);
    return () => this.fsyncListeners.delete(listener);
  }

  /**
   * Told of every blob removed because it failed a read-back (the scrubber, or a whole-blob read
   * whose bytes did not hash to the index): the worker reports them to the leader.
   */
  onLost(listener: (id: string) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  async stat(id: string): Promise<StoreResult<BlobRecord>> {
    if (!isValidBlobId(id)) return invalidId(id);
    const record = await this.index.get(id);
    return record === undefined ? failure('BlobNotFound', `no blob ${id}`) : success(record);
  }

  /**
   * Streams a new blob into place, all or nothing. Failures leave no temp file, no index entry and
   * no change to the counters. Writes of the same id are serialised at commit; the bytes of each are
   * streamed concurrently into their own temp file.
   */
  async writeAtomically(
    id: string,
    body: AsyncIterable<Uint8Array> | Readable,
    expectedSha256: string,
    maxBytes: number,
    options: WriteOptions = {},
  ): Promise<StoreResult<WriteOutcome>> {
    const receipt = await this.receive(id, body, expectedSha256, maxBytes, options);
    if (!receipt.ok) return receipt;
    if (receipt.value.kind === 'stored') return success(receipt.value.outcome);
    const [outcome] = await this.commitReceived([receipt.value.blob]);
    return outcome!;
  }

  /**
   * The first half of a write: streams the body into its own temp file, hashing and counting, checks
   * it against `expectedSha256` and starts the file's fsync, but makes nothing visible. A `received`
   * blob must be handed to `commitReceived` (which also cleans up whatever it does not keep), or to
   * `discardReceived`. A retry of a blob already stored is verified without writing: `stored`.
   * Failures leave no temp file.
   */
  async receive(
    id: string,
    body: AsyncIterable<Uint8Array> | Readable,
    expectedSha256: string,
    maxBytes: number,
    options: WriteOptions = {},
  ): Promise<StoreResult<Receipt>> {
    this.assertOpen();
    if (!isValidBlobId(id)) return invalidId(id);
    const deferred = options.sumsAfterBody;
    const expected = expectedSha256.toLowerCase();
    if (deferred === undefined && !SHA256_HEX_PATTERN.test(expected)) {
      return failure('InvalidRequest', 'the expected sha256 must be 64 hexadecimal characters');
    }
    const expectedCrc = options.expectedCrc32c?.toLowerCase();
    if (expectedCrc !== undefined && !CRC32C_HEX_PATTERN.test(expectedCrc)) {
      return failure('InvalidRequest', 'the expected crc32c must be 8 hexadecimal characters');
    }
    const { declaredLength } = options;
    if (declaredLength !== undefined && declaredLength > maxBytes) {
      return { ok: false, error: tooLarge(maxBytes) };
    }

    const tmpPath = this.newTempPath(id);
    // Opened while the first bytes arrive: one round trip less before the body is read. Only a
    // retry of a stored id pays for a temp file it does not use. Not on this thread: on ext4
    // without a journal a create first passes over every inode of its group deleted in the last
    // minutes (docs/measurements.md), which can take long enough to stall every other request.
    const { slabs } = this;
    const opened = createExclusive(tmpPath, slabs !== undefined);
    const temp: TempFile = { path: tmpPath, opened, closed: false, renamed: false };
    temp.opened.catch(() => {});
    // A direct write's batches are on the disk when written: nothing for an early sync to write.
    const early = syncWhileReceiving(() => slabs === undefined && this.writing === 1);
    let received = 0;
    let handedOver = false;
    this.writing += 1;
    try {
      const existing = this.index.getSync(id);
      const claimed = () =>
        deferred ? claimedAfterBody(deferred) : { sha256: expected, crc32c: expectedCrc };
      if (existing !== undefined && deferred === undefined && !sameContent(existing, claimed())) {
        return conflict(id, existing);
      }
      if (existing !== undefined) {
        const retried = await this.verifyRetry(id, body, existing, claimed, maxBytes, options);
        return retried.ok ? success({ kind: 'stored', outcome: retried.value }) : retried;
      }
      if (this.diskReserve?.inPlace === false) return { ok: false, error: reserveMissing(this.diskReserve) };
      if (
        this.quotaBytes !== undefined &&
        declaredLength !== undefined &&
        this.blobBytes + this.reservedBytes + declaredLength > this.quotaBytes
      ) {
        return { ok: false, error: overQuota(this.quotaBytes) };
      }
      const withSha256 = deferred === undefined && expectedCrc === undefined;
      const meter = this.meter(maxBytes, options, withSha256, (n) => {
        received += n;
        this.reservedBytes += n;
      });
      let crc32c = '';
      let sha256 = expected;
      // The trailer rides in the last write batch, once the body has checked out: no extra write.
      const seal = (): Uint8Array => {
        const sums = meter.digest();
        const sent = claimed();
        const mismatch = checksumMismatch(sums, sent.sha256, sent.crc32c);
        if (mismatch) throw mismatch;
        crc32c = sums.crc32c;
        sha256 = sent.sha256;
        return encodeTrailer({ size: received, sha256, crc32c });
      };
      const bytes = meter.transform(body, seal);
      if (slabs) await writeDirect(temp.opened, tmpPath, bytes, slabs);
      else await writeBatched(temp.opened, bytes, WRITE_BATCH_BYTES, early.afterBatch);
      const fd = await temp.opened;
      // Started now rather than at commit: in a group, it runs while the next blob arrives.
      const finalSync = this.timedFsync('file', () => fsyncFd(fd));
      const synced = Promise.all([early.settled(), finalSync]).then(() => {});
      synced
        .catch(() => {})
        .finally(() => {
          this.writing -= 1;
        });
      handedOver = true;
      const record = { size: received, sha256, crc32c };
      return success({ kind: 'received', blob: { id, record, temp, synced } });
    } catch (err) {
      const known = asStorageError(err, this.quotaBytes);
      if (known) return { ok: false, error: known };
      throw err;
    } finally {
      if (!handedOver) {
        this.writing -= 1;
        this.reservedBytes -= received;
        await early.settled().catch(() => {});
        await releaseTemp(temp);
      }
    }
  }

  /**
   * The second half: makes received blobs durable and visible together, each exactly as a write of
   * its own would (see the class comment), but with the folder fsyncs side
   * by side and one index batch for the whole group. One outcome per blob, in order; every temp file
   * is gone afterwards. The ids must be distinct.
   */
  async commitReceived(blobs: readonly ReceivedBlob[]): Promise<StoreResult<WriteOutcome>[]> {
    // Nothing is indexed once close began: its clean stop vouches for the entries it waited for.
    if (this.closed || new Set(blobs.map((b) => b.id)).size !== blobs.length) {
      await this.discardReceived(blobs);
      throw new Error(this.closed ? 'blob store is closed' : 'a group commit takes each id at most once');
    }
    // Synchronously from the check above to the first lock taken, which close() waits for.
    try {
      return await this.withLocks(
        blobs.map((b) => b.id),
        () => this.commitLocked(blobs),
      );
    } finally {
      await this.discardReceived(blobs);
    }
  }

  /**
   * Forgets received blobs not (or no longer) wanted: their reservations and temp files. Each is
   * released whatever happens to the others; a temp file that cannot be removed now is removed by
   * the next start-up check, and is logged.
   */
  async discardReceived(blobs: readonly ReceivedBlob[]): Promise<void> {
    for (const blob of blobs) {
      if (blob.released) continue;
      blob.released = true;
      this.reservedBytes -= blob.record.size;
      await blob.synced.catch(() => {});
      await releaseTemp(blob.temp).catch((err: unknown) =>
        this.log.error(
          { event: 'storage.temp_left', objectId: blob.id, file: blob.temp.path, err },
          'temp file could not be released; the next start-up removes it',
        ),
      );
    }
  }

  /**
   * Opens a blob for reading; the file descriptor is taken now, so a later delete does not cut it.
   * A whole-blob read is checked against the sha256 as it goes (see `verified`); a copy batch reads
   * through `openForCopy` instead, unchecked, so one rotten blob does not cut off the blobs after it.
   */
  async openForRead(id: string, range?: ByteRange): Promise<StoreResult<BlobRead>> {
    this.assertOpen();
    if (!isValidBlobId(id)) return invalidId(id);
    const record = await this.index.get(id);
    if (record === undefined) return failure('BlobNotFound', `no blob ${id}`);
    const start = range?.start ?? 0;
    const end = range?.end ?? record.size - 1;
    if (start < 0 || start > end + 1 || end >= record.size) {
      return failure('RangeNotSatisfiable', `range ${start}-${end} is outside 0-${record.size - 1}`, {
        size: record.size,
      });
    }
    const opened = await this.openChecked(id, record);
    if (!opened.ok) return opened;
    const file = opened.value;
    if (end < start) {
      // Empty blob: createReadStream cannot express a zero-length range.
      await file.close();
      return success({ id, record, start, end, stream: Readable.from([]) });
    }
    const stream = createReadStream('', { fd: file, start, end, highWaterMark: 256 * 1024 });
    if (start !== 0 || end !== record.size - 1) {
      return success({ id, record, start, end, stream });
    }
    return success({ id, record, start, end, stream: this.verified(id, record, stream) });
  }

  /**
   * A whole small blob in one buffer, checked against its index entry before it is handed out: one
   * positional read instead of a stream, so a GET can answer with the buffer and a bad copy fails
   * before its first byte is sent (and is read back under its lock and removed if really bad). For
   * blobs up to `maxBytes`; a larger one is `tooLarge`, for the caller to stream (`openForRead`).
   *
   * With `buffers`, the read goes into a leased buffer where it fits, and the answer carries the
   * lease's `release` for the caller to call once nothing reads `bytes` any more; on every other
   * outcome the lease is already back.
   *
   * Each file call is a trip through libuv's threadpool, which a GET at concurrency 1 waits for, so
   * there are as few as can be: no fstat (the read asks for one byte more than the file can hold, and
   * what it got is the file's size), and the close runs while the bytes are checked.
   */
  async readWhole(
    id: string,
    maxBytes: number,
    buffers?: ReadBuffers,
  ): Promise<StoreResult<WholeBlob | 'tooLarge'>> {
    this.assertOpen();
    if (!isValidBlobId(id)) return invalidId(id);
    const record = this.index.getSync(id);
    if (record === undefined) return failure('BlobNotFound', `no blob ${id}`);
    if (record.size > maxBytes) return success('tooLarge');
    const opened = await this.openBlob(id, record);
    if (!opened.ok) return opened;
    const file = opened.value;
    const room = record.size + TRAILER_BYTES + 1;
    const lease = buffers && room <= buffers.size ? buffers.lease() : undefined;
    const buffer = lease ? lease.buffer.subarray(0, room) : Buffer.allocUnsafe(room);
    let handedOut = false;
    try {
      let fileSize: number;
      try {
        fileSize = await readUpTo(file, buffer, (size) => fitsRecord(size, record));
      } catch (err) {
        await file.close().catch(() => {});
        throw err;
      }
      const closed = file.close();
      if (!fitsRecord(fileSize, record)) {
        await closed;
        return this.sizeMismatch(id, record, fileSize === room ? `more than ${fileSize - 1}` : fileSize);
      }
      const bytes = buffer.subarray(0, record.size);
      const hash = contentHasher(record);
      hash.update(bytes);
      const actual = hash.digest();
      await closed;
      if (actual === hash.expected) {
        handedOut = true;
        return success(lease ? { record, bytes, release: lease.release } : { record, bytes });
      }
      this.log.error(
        { event: 'storage.read_mismatch', objectId: id, expected: hash.expected, actual },
        'blob read back with other bytes than its checksum; not sent',
      );
      void this.scrub({ id, ...record }).catch(() => {});
      return failure('Internal', `blob ${id} does not match its checksum on disk`);
    } finally {
      if (!handedOut) lease?.release();
    }
  }

  /**
   * A whole blob as stored, unchecked, for a copy batch: its target hashes every blob against the
   * header, and the holder scrubs what the target found wrong. Positional reads into fresh buffers
   * of up to COPY_READ_BYTES, without `openForRead`'s stream machinery, which cost twice the CPU
   * per 256 KiB blob, the size repair moves most. The descriptor is taken now, so a later delete does
   * not cut the read; `release` must be called whether or not `chunks` was read to its end.
   */
  async openForCopy(id: string): Promise<StoreResult<BlobCopyRead>> {
    this.assertOpen();
    if (!isValidBlobId(id)) return invalidId(id);
    const record = this.index.getSync(id);
    if (record === undefined) return failure('BlobNotFound', `no blob ${id}`);
    const opened = await this.openChecked(id, record);
    if (!opened.ok) return opened;
    const file = opened.value;
    let released: Promise<void> | undefined;
    const release = () => {
      released ??= file.close();
      return released;
    };
    const total = record.size;
    async function* chunks(): AsyncGenerator<Buffer> {
      try {
        for (let position = 0; position < total; ) {
          const length = Math.min(COPY_READ_BYTES, total - position);
          const buffer = Buffer.allocUnsafe(length);
          const { bytesRead } = await file.read(buffer, 0, length, position);
          if (bytesRead === 0) {
            throw new StorageError('Internal', `blob ${id} ended at byte ${position} of ${total}`);
          }
          position += bytesRead;
          yield buffer.subarray(0, bytesRead);
        }
      } finally {
        await release();
      }
    }
    return success({ record, chunks: chunks(), release });
  }

  /** The blob's file, opened and checked against its index entry's size; closed again if not. */
  private async openChecked(id: string, record: BlobRecord): Promise<StoreResult<fs.FileHandle>> {
    const opened = await this.openBlob(id, record);
    if (!opened.ok) return opened;
    const file = opened.value;
    try {
      const { size } = await file.stat();
      if (fitsRecord(size, record)) return success(file);
      await file.close();
      return this.sizeMismatch(id, record, size);
    } catch (err) {
      await file.close().catch(() => {});
      throw err;
    }
  }

  /**
   * The blob's file, open for reading; BlobNotFound when the index names a file that is gone, which
   * is then read back under its lock (as a cut or rotten one is), so the entry is removed and the
   * copy reported lost now, not at the scrubber's next pass.
   */
  private async openBlob(id: string, record: BlobRecord): Promise<StoreResult<fs.FileHandle>> {
    try {
      return success(await fs.open(this.blobPath(id), 'r'));
    } catch (err) {
      if (errnoCode(err) !== 'ENOENT') throw err;
      void this.scrub({ id, ...record }).catch(() => {});
      return failure('BlobNotFound', `no blob ${id}`);
    }
  }

  /**
   * A blob file whose size does not fit its index record: logged, never served, and read back
   * under its lock (as a read with other bytes is), so a cut or grown copy is removed and reported
   * now rather than at the scrubber's next pass, an hour or more away, with every read until then
   * trying it first.
   */
  private sizeMismatch<T>(id: string, record: BlobRecord, onDisk: number | string): StoreResult<T> {
    this.log.error({ event: 'storage.size_mismatch', objectId: id, indexed: record.size, onDisk });
    void this.scrub({ id, ...record }).catch(() => {});
    return failure('Internal', `blob ${id} has ${onDisk} bytes on disk but ${record.size} in the index`);
  }

  /**
   * A whole-blob read that checks the bytes as they go: the last chunk is held back until the
   * sha256 of everything before it is known, and a mismatch ends the stream with an error instead,
   * so a reader (a GET's client) sees a cut-off body, never a complete wrong one. The
   * blob is then read back once more under its lock and removed if it really is bad.
   */
  private verified(id: string, record: BlobRecord, source: Readable): Readable {
    const hash = contentHasher(record);
    let held: Buffer | undefined;
    const check = new CheckedRead({
      transform(chunk: Buffer, _encoding, done) {
        check.bytesRead += chunk.byteLength;
        hash.update(chunk);
        const previous = held;
        held = chunk;
        done(null, previous);
      },
      flush: (done) => {
        const actual = hash.digest();
        if (actual === hash.expected) return done(null, held);
        this.log.error(
          { event: 'storage.read_mismatch', objectId: id, expected: hash.expected, actual },
          'blob read back with other bytes than its checksum; read cut off',
        );
        void this.scrub({ id, ...record }).catch(() => {});
        done(new StorageError('Internal', `blob ${id} does not match its checksum on disk`));
      },
    });
    source.once('error', (err) => check.destroy(err));
    check.once('close', () => source.destroy());
    return source.pipe(check);
  }

  async delete(id: string): Promise<StoreResult<BlobRecord>> {
    this.assertOpen();
    if (!isValidBlobId(id)) return invalidId(id);
    return this.withLock(id, async () => {
      const record = await this.index.get(id);
      if (record === undefined) return failure('BlobNotFound', `no blob ${id}`);
      const file = this.blobPath(id);
      await removeQuietly(file);
      await this.timedFsync('dir', () => fsyncPath(path.dirname(file)));
      await this.index.delete(id);
      this.blobCount -= 1;
      this.blobBytes -= record.size;
      return success(record);
    });
  }

  /**
   * Reads one blob back and checks it against its index entry (the scrubber). A blob whose file
   * is missing, has another size or does not hash to its sha256 is removed, file and entry, so
   * that it is neither served nor reported again: `lost` says so. Runs under the id's lock; an
   * entry that changed since `expected` was listed (deleted, or written anew) is left alone.
   */
  async scrub(expected: BlobEntry): Promise<'intact' | 'lost' | 'gone'> {
    this.assertOpen();
    if (!isValidBlobId(expected.id)) return 'gone';
    return this.withLock(expected.id, async () => {
      const record = await this.index.get(expected.id);
      if (record === undefined || record.sha256 !== expected.sha256) return 'gone';
      const file = this.blobPath(expected.id);
      const onDisk = await hashFile(file, record);
      if (onDisk !== undefined && onDisk.size === record.size && onDisk.matches) {
        await this.resealIfDamaged(expected.id, file, record);
        return 'intact';
      }
      this.log.error(
        {
          event: 'storage.scrub_lost',
          objectId: expected.id,
          expected: record,
          found: onDisk ?? 'no file',
        },
        'blob failed its read-back check; removed',
      );
      if (onDisk !== undefined) {
        await removeQuietly(file);
        await this.timedFsync('dir', () => fsyncPath(path.dirname(file)));
      }
      await this.index.delete(expected.id);
      this.blobCount -= 1;
      this.blobBytes -= record.size;
      for (const listener of this.lostListeners) listener(expected.id);
      return 'lost';
    });
  }

  /**
   * A file whose bytes checked out but whose trailer no longer names them gets a new trailer: the
   * unclean-start walk would otherwise leave it unindexed if its entry were ever lost. Rewritten as
   * a new file (temp, fsync, rename, folder fsync) so a crash leaves the old file or the new one.
   */
  private async resealIfDamaged(id: string, file: string, record: BlobRecord): Promise<void> {
    if (record.crc32c === undefined) return;
    const sealed = { size: record.size, sha256: record.sha256, crc32c: record.crc32c };
    const { fileSize, record: found } = readTrailer(file);
    if (fileSize !== record.size + TRAILER_BYTES) return;
    if (found && sameTrailer(found, sealed)) return;
    this.log.warn(
      { event: 'storage.scrub_trailer_resealed', objectId: id, found: found ?? 'no intact trailer' },
      'blob bytes intact but its trailer damaged; trailer rewritten',
    );
    const temp = path.join(this.tmpDir, `${id}.${randomBytes(8).toString('hex')}.tmp`);
    try {
      await fs.copyFile(file, temp);
      const handle = await fs.open(temp, 'r+');
      try {
        await handle.write(encodeTrailer(sealed), 0, TRAILER_BYTES, record.size);
        await handle.sync();
      } finally {
        await handle.close();
      }
      await fs.rename(temp, file);
    } finally {
      await fs.rm(temp, { force: true });
    }
    await this.timedFsync('dir', () => fsyncPath(path.dirname(file)));
  }

  /** Every blob in id order, from a LevelDB snapshot, in bounded memory. */
  inventory(options: { after?: string } = {}): AsyncGenerator<BlobEntry> {
    this.assertOpen();
    return this.index.entries(options);
  }

  /** The running counters, without touching the disk (for gauges). */
  counters(): { blobCount: number; blobBytes: number; reservedBytes: number } {
    return { blobCount: this.blobCount, blobBytes: this.blobBytes, reservedBytes: this.reservedBytes };
  }

  async stats(): Promise<StoreStats> {
    const fsStats = await fs.statfs(this.dataDir);
    const free = fsStats.bavail * fsStats.bsize;
    // Looked at every heartbeat: a reserve released on a full disk is made again once there is room.
    if (!this.closed) this.diskReserve?.restoreIfRoom(free);
    return {
      blobCount: this.blobCount,
      blobBytes: this.blobBytes,
      quotaBytes: this.quotaBytes ?? null,
      diskTotalBytes: fsStats.blocks * fsStats.bsize,
      diskUsedBytes: (fsStats.blocks - fsStats.bfree) * fsStats.bsize,
      // Without its reserve the store takes no blob: none is placed on it.
      diskFreeBytes: this.diskReserve?.inPlace === false ? 0 : free,
    };
  }

  /**
   * Waits for writes and deletes holding a lock (a group commit not yet begun is refused from now
   * on), closes the index, then records the clean stop: a marker file in the index folder, written
   * after every file of the closed index is fsynced. A synced LevelDB write would not do: a log
   * LevelDB switched away from was closed without fsync, its entries durable only once a flush
   * that close does not wait for has run.
   */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.allSettled([...this.locks.values()]);
    await this.diskReserve?.settled();
    await this.index.close();
    if (!this.leftFiles) await markCleanStop(path.join(this.dataDir, 'index'));
  }

  private assertOpen(): void {
    if (this.closed) throw new Error('blob store is closed');
  }

  /** A retry of a stored blob: hash the body without writing it (no disk, no quota) and compare. */
  private async verifyRetry(
    id: string,
    body: AsyncIterable<Uint8Array> | Readable,
    existing: BlobRecord,
    claimed: () => { sha256: string; crc32c: string | undefined },
    maxBytes: number,
    options: WriteOptions,
  ): Promise<StoreResult<WriteOutcome>> {
    // Checked against the CRC32C when one is sent (before or after the body), else the sha256.
    const withSha256 = options.sumsAfterBody === undefined && options.expectedCrc32c === undefined;
    const meter = this.meter(maxBytes, options, withSha256, () => {}, false);
    let sent: { sha256: string; crc32c: string | undefined };
    try {
      await pipeline(meter.transform(body), async (source: AsyncIterable<Uint8Array>) => {
        for await (const _ of source);
      });
      sent = claimed();
    } catch (err) {
      const known = asStorageError(err, this.quotaBytes);
      if (known) return { ok: false, error: known };
      throw err;
    }
    const sums = meter.digest();
    const mismatch = checksumMismatch(sums, sent.sha256, sent.crc32c);
    if (mismatch) return { ok: false, error: mismatch };
    if (!sameContent(existing, sent)) return conflict(id, existing);
    const expected = sent.sha256;
    return this.withLock(id, async () => {
      const current = await this.index.get(id);
      if (current === undefined || !sameContent(current, { sha256: expected, crc32c: sums.crc32c })) {
        return failure<WriteOutcome>(
          'BlobConflict',
          `blob ${id} changed while its retry was verified; retry`,
        );
      }
      // A blob stored before CRC32C was indexed holds the bytes of its sha256, as this body does.
      const crc32c = current.crc32c ?? sums.crc32c;
      return success({
        status: 'unchanged' as const,
        id,
        size: current.size,
        sha256: current.sha256,
        crc32c,
      });
    });
  }

  /**
   * Under the ids' locks: the index is the truth about whether an id exists. A refusal here (the id
   * was stored meanwhile by a concurrent PUT, the quota filled) costs no rename. Everything the
   * renames need runs side by side, so the answer waits for the slowest step, not for their sum.
   */
  private async commitLocked(blobs: readonly ReceivedBlob[]): Promise<StoreResult<WriteOutcome>[]> {
    const outcomes: StoreResult<WriteOutcome>[] = [];
    const going: { blob: ReceivedBlob; slot: number; folder: string; finalPath: string }[] = [];
    for (const [slot, blob] of blobs.entries()) {
      const { id, record } = blob;
      const existing = this.index.getSync(id);
      if (existing !== undefined) {
        outcomes[slot] = sameContent(existing, record)
          ? success({ status: 'unchanged', id, ...existing, crc32c: existing.crc32c ?? record.crc32c })
          : failure('BlobConflict', `blob ${id} already exists with other bytes`, {
              sha256: existing.sha256,
            });
      } else if (this.quotaBytes !== undefined && this.blobBytes + this.reservedBytes > this.quotaBytes) {
        outcomes[slot] = { ok: false, error: overQuota(this.quotaBytes) };
      } else {
        const finalPath = this.blobPath(id);
        going.push({ blob, slot, finalPath, folder: path.dirname(finalPath) });
      }
    }
    if (going.length === 0) return outcomes;

    const ready = await Promise.allSettled(going.map(({ blob }) => blob.synced));
    const fail = (slot: number, err: unknown) => {
      outcomes[slot] = { ok: false, error: this.asWriteError(blobs[slot]!.id, err) };
    };
    const renamed: typeof going = [];
    for (const [k, entry] of going.entries()) {
      const step = ready[k]!;
      if (step.status === 'rejected') {
        fail(entry.slot, step.reason);
        continue;
      }
      // Metadata-only calls (close, rename, and those in fsyncDirFast) run on this thread: they do
      // not wait for the disk, and a threadpool round trip costs two thread wake-ups, which on a
      // busy machine cost more than the calls themselves. The fsyncs go to the pool.
      try {
        const fd = await entry.blob.temp.opened;
        // Marked first: close(2) frees the descriptor even when it reports an error, and a second
        // close could hit a descriptor reused meanwhile by another file.
        entry.blob.temp.closed = true;
        closeSync(fd);
        renameSync(entry.blob.temp.path, entry.finalPath);
        entry.blob.temp.renamed = true;
        renamed.push(entry);
      } catch (err) {
        fail(entry.slot, err);
      }
    }
    const folderSyncs = new Map<string, Promise<void>>();
    const syncFolder = (folder: string): Promise<void> => {
      let once = folderSyncs.get(folder);
      if (once === undefined) {
        once = this.timedFsync('dir', () => fsyncDirFast(folder));
        folderSyncs.set(folder, once);
      }
      return once;
    };
    // The index batch runs beside the folder fsyncs rather than after them: the answer waits for
    // both, so an answered blob is durable and indexed as before. No sync: each file's trailer makes
    // its entry recoverable (see the class comment). An entry whose folder fsync fails is deleted
    // again below, with its file.
    const indexed = this.index.record(
      renamed.map(({ blob }) => ({ id: blob.id, ...blob.record })),
      { sync: false },
    );
    const [folderSynced, recorded] = await Promise.all([
      Promise.allSettled(renamed.map(({ folder }) => syncFolder(folder))),
      indexed.then(
        () => ({ ok: true as const }),
        (err: unknown) => ({ ok: false as const, err }),
      ),
    ]);
    for (const [k, { blob, slot }] of renamed.entries()) {
      const step = folderSynced[k]!;
      if (step.status === 'rejected') fail(slot, step.reason);
      else if (!recorded.ok) fail(slot, recorded.err);
      else {
        this.blobCount += 1;
        this.blobBytes += blob.record.size;
        outcomes[slot] = success({ status: 'created', id: blob.id, ...blob.record });
      }
    }
    // Leave nothing behind of what failed. A file that cannot be removed keeps the next start from
    // counting as clean, so its walk indexes it (an orphan to reconciliation) instead of leaving it
    // unnamed on disk.
    for (const { blob, finalPath, folder, slot } of going) {
      if (outcomes[slot]!.ok || !blob.temp.renamed) continue;
      try {
        await removeQuietly(finalPath);
        await fsyncPath(folder);
        if (recorded.ok) await this.index.delete(blob.id);
      } catch (err) {
        this.leftFiles = true;
        this.log.error(
          { event: 'storage.commit_leftover', objectId: blob.id, err },
          'failed blob left in place',
        );
      }
    }
    return outcomes;
  }

  /** A commit step's failure as one blob's outcome: a full disk is 507, anything else is logged. */
  private asWriteError(id: string, err: unknown): StorageError {
    const known = asStorageError(err, this.quotaBytes);
    if (known) return known;
    this.log.error({ event: 'storage.commit_failed', objectId: id, err }, 'blob commit failed');
    return new StorageError('Internal', `storing blob ${id} failed: ${(err as Error).message}`);
  }

  /**
   * Reads the body, hashing and counting it, refusing it as soon as it crosses `maxBytes` or (when
   * `countsAgainstQuota`) the quota, so an over-limit body is never read whole. It is the pipeline's
   * source rather than a stage after the body, so a body that fails (client gone) surfaces here, as
   * BodyAborted, and not as a raw socket error.
   */
  private meter(
    maxBytes: number,
    options: WriteOptions,
    withSha256: boolean,
    onReceived: (n: number) => void,
    countsAgainstQuota = true,
  ): {
    /** The body's chunks, then, once it ended whole, what `after` gives (a blob's trailer). */
    transform: (source: AsyncIterable<Uint8Array>, after?: () => Uint8Array) => AsyncGenerator<Uint8Array>;
    digest: () => BodySums;
  } {
    const sha = withSha256 ? createHash('sha256') : null;
    const crc = new Crc32c();
    let total = 0;
    const store = this;
    async function* transform(
      source: AsyncIterable<Uint8Array>,
      after?: () => Uint8Array,
    ): AsyncGenerator<Uint8Array> {
      const iterator = source[Symbol.asyncIterator]();
      try {
        while (true) {
          let next: IteratorResult<Uint8Array>;
          try {
            next = await iterator.next();
          } catch (err) {
            throw new StorageError('BodyAborted', `request body ended abnormally: ${(err as Error).message}`);
          }
          if (next.done) {
            if (after) yield after();
            return;
          }
          const chunk = next.value;
          total += chunk.byteLength;
          options.onBytes?.(chunk.byteLength);
          if (total > maxBytes) throw tooLarge(maxBytes);
          onReceived(chunk.byteLength);
          if (
            countsAgainstQuota &&
            store.quotaBytes !== undefined &&
            store.blobBytes + store.reservedBytes > store.quotaBytes
          ) {
            throw overQuota(store.quotaBytes);
          }
          sha?.update(chunk);
          crc.update(chunk);
          yield chunk;
        }
      } finally {
        // Stop the body wherever we stopped reading it (a Readable is destroyed by its iterator's return).
        await iterator.return?.().catch(() => {});
      }
    }
    return { transform, digest: () => ({ sha256: sha?.digest('hex'), crc32c: crc.hex() }) };
  }

  private async timedFsync(target: FsyncTarget, run: () => Promise<void>): Promise<void> {
    const started = process.hrtime.bigint();
    await run();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    for (const listener of this.fsyncListeners) listener(target, seconds);
  }

  /**
   * `withLock` over several ids, taken in sorted order: two group commits that share ids cannot each
   * hold one the other waits for, and single-id holders never wait for a second lock.
   */
  private withLocks<T>(ids: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...ids].sort();
    const take = (i: number): Promise<T> =>
      i === sorted.length ? fn() : this.withLock(sorted[i]!, () => take(i + 1));
    return take(0);
  }

  /** Runs `fn` after every earlier holder of `id`'s lock; the map only holds ids in use. */
  private async withLock<T>(id: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.locks.get(id) ?? Promise.resolve();
    let release!: () => void;
    const tail = previous.then(() => new Promise<void>((resolve) => (release = resolve)));
    this.locks.set(id, tail);
    await previous;
    try {
      return await fn();
    } finally {
      release();
      if (this.locks.get(id) === tail) this.locks.delete(id);
    }
  }
}

function sameTrailer(a: Required<BlobRecord>, b: Required<BlobRecord>): boolean {
  return a.size === b.size && a.sha256 === b.sha256 && a.crc32c === b.crc32c;
}

async function startupCheck(
  root: string,
  index: BlobIndex,
  cleanStop: boolean,
  log: Logger,
): Promise<Omit<StartupReport, 'migratedBlobs' | 'directWrites'>> {
  const started = Date.now();
  const report: Omit<StartupReport, 'migratedBlobs' | 'directWrites'> = {
    cleanStop,
    unindexedAdopted: 0,
    unindexedRemoved: 0,
    tempFilesRemoved: 0,
    pendingAdopted: 0,
    pendingDropped: 0,
    missingDropped: 0,
    corruptDropped: 0,
    blobCount: 0,
    blobBytes: 0,
    durationMs: 0,
  };
  const tmpDir = path.join(root, 'tmp');
  for (const name of await fs.readdir(tmpDir)) {
    await fs.rm(path.join(tmpDir, name), { force: true, recursive: true });
    report.tempFilesRemoved += 1;
  }
  if (report.tempFilesRemoved > 0) await fsyncPath(tmpDir);
  await finishPendingMarkers(root, index, log, report);
  if (!cleanStop) Object.assign(report, await adoptUnindexedBlobs(path.join(root, 'blobs'), index, log));

  // The iterator reads a snapshot, so dropping entries while it runs is safe.
  let batch: BlobEntry[] = [];
  const checkBatch = async (): Promise<void> => {
    const verdicts = await Promise.all(
      batch.map(async (entry) => {
        const file = path.join(root, blobRelativePath(entry.id));
        try {
          const { size } = await fs.stat(file);
          return fitsRecord(size, entry) ? 'ok' : 'corrupt';
        } catch (err) {
          if (errnoCode(err) === 'ENOENT') return 'missing';
          throw err;
        }
      }),
    );
    const dropped: string[] = [];
    for (const [i, entry] of batch.entries()) {
      const verdict = verdicts[i];
      if (verdict === 'ok') {
        report.blobCount += 1;
        report.blobBytes += entry.size;
        continue;
      }
      dropped.push(entry.id);
      if (verdict === 'missing') {
        report.missingDropped += 1;
        log.warn(
          { event: 'storage.missing_dropped', objectId: entry.id },
          'index entry without a file dropped',
        );
      } else {
        report.corruptDropped += 1;
        log.error(
          { event: 'storage.corrupt_dropped', objectId: entry.id },
          'blob with the wrong size dropped',
        );
        // Durably gone before its entry is: a removal lost to a power cut would otherwise leave
        // a file that nothing names.
        const file = path.join(root, blobRelativePath(entry.id));
        await removeQuietly(file);
        await fsyncPath(path.dirname(file));
      }
    }
    await index.deleteMany(dropped);
    batch = [];
  };
  for await (const entry of index.entries()) {
    batch.push(entry);
    if (batch.length >= STARTUP_STAT_BATCH) await checkBatch();
  }
  await checkBatch();
  report.durationMs = Date.now() - started;
  return report;
}

/**
 * Pending-write markers a worker of the previous version left (it synced one before each rename):
 * a renamed file that hashes to its marker is indexed, anything else is dropped with its file.
 */
async function finishPendingMarkers(
  root: string,
  index: BlobIndex,
  log: Logger,
  report: { pendingAdopted: number; pendingDropped: number },
): Promise<void> {
  const pending = [];
  for await (const write of index.pendingWrites()) pending.push(write);
  for (const write of pending) {
    const file = path.join(root, blobRelativePath(write.id));
    if ((await index.get(write.id)) !== undefined) {
      await index.clearPending(write.id);
      continue;
    }
    const onDisk = await hashFile(file, write);
    if (onDisk !== undefined && onDisk.size === write.size && onDisk.matches) {
      // The crash may have come before the folder fsync that makes the name durable: done here,
      // before the index vouches for the blob.
      await fsyncPath(path.dirname(file));
      await index.put(write.id, write);
      report.pendingAdopted += 1;
      log.warn(
        { event: 'storage.pending_adopted', objectId: write.id },
        'adopted a blob renamed before a crash',
      );
    } else {
      if (onDisk !== undefined) {
        await removeQuietly(file);
        await fsyncPath(path.dirname(file));
      }
      await index.clearPending(write.id);
      report.pendingDropped += 1;
    }
  }
}

/** A verified whole-blob read; `bytesRead` like the file stream it wraps (bytes-out metrics). */
class CheckedRead extends Transform {
  bytesRead = 0;
}

/** A write's temp file: who closes it, and whether it still exists under its temp name. */
interface TempFile {
  path: string;
  opened: Promise<number>;
  closed: boolean;
  renamed: boolean;
}

/**
 * Reads `file` from its start into `buffer` until its end or until `buffer` is full; returns the
 * bytes read. A read that returns fewer bytes than asked for a size `complete` accepts ends there:
 * a regular file's read is short only at its end, so no further read is made to hear that.
 */
async function readUpTo(
  file: fs.FileHandle,
  buffer: Buffer,
  complete: (size: number) => boolean,
): Promise<number> {
  let total = 0;
  while (total < buffer.length) {
    const asked = buffer.length - total;
    const { bytesRead } = await file.read(buffer, total, asked, total);
    if (bytesRead === 0) break;
    total += bytesRead;
    if (bytesRead < asked && complete(total)) break;
  }
  return total;
}

/** A whole blob read and checked (see `readWhole`). */
export interface WholeBlob {
  record: BlobRecord;
  bytes: Buffer;
  /** Present when `bytes` is a leased buffer's: hands it back, once nothing reads `bytes`. */
  release?: () => void;
}

/** A blob being read for a copy batch (see `openForCopy`). */
export interface BlobCopyRead {
  record: BlobRecord;
  chunks: AsyncGenerator<Buffer>;
  /** Closes the descriptor; safe to call more than once, and after `chunks` closed it. */
  release: () => Promise<void>;
}

/** A blob received into its temp file and checked, its fsync under way, not yet visible. */
export interface ReceivedBlob {
  id: string;
  record: BlobRecord;
  temp: TempFile;
  /** The temp file's fsync, started when its last byte was written. */
  synced: Promise<void>;
  /** Set once its reservation and temp file are let go. */
  released?: boolean;
}

/** What `receive` did: a blob waiting for its commit, or a retry of one already stored. */
export type Receipt = { kind: 'received'; blob: ReceivedBlob } | { kind: 'stored'; outcome: WriteOutcome };

/** Closes the temp file if still open and removes it unless it was renamed into place. */
async function releaseTemp(temp: TempFile): Promise<void> {
  if (!temp.closed) {
    const fd = await temp.opened.catch(() => undefined);
    // Marked first, as in commitLocked: never two closes of one descriptor.
    temp.closed = true;
    if (fd !== undefined) closeSync(fd);
  }
  if (!temp.renamed) await removeQuietly(temp.path);
}

/** The slabs direct writes take, when files in `tmpDir` take direct writes at all. */
async function directSlabs(tmpDir: string): Promise<AlignedSlabs | undefined> {
  const slabs = new AlignedSlabs();
  const probe = path.join(tmpDir, '.direct-probe');
  try {
    return (await directWritesWork(probe, slabs)) ? slabs : undefined;
  } finally {
    await removeQuietly(probe);
  }
}

/**
 * Syncs a temp file's bytes while the rest of its body still arrives, one fdatasync at a time, when
 * `enabled` (no other write is in flight): the fsync after the body's end then writes
 * only the last batches, and an fsync's time grows with the bytes it writes (docs/measurements.md).
 * With other writes in flight the disk is busy anyway, and the extra syncs would take threadpool
 * threads from them. `settled` rejects with the first failure: it fails the blob, since a failed
 * sync may have consumed the file's error before the final fsync could report it.
 */
function syncWhileReceiving(enabled: () => boolean): {
  afterBatch: (fd: number) => void;
  settled: () => Promise<void>;
} {
  let running = false;
  let all: Promise<void> = Promise.resolve();
  return {
    afterBatch(fd) {
      if (running || !enabled()) return;
      running = true;
      const run = fdatasyncFd(fd).finally(() => {
        running = false;
      });
      all = Promise.all([all, run]).then(() => {});
      all.catch(() => {});
    },
    settled: () => all,
  };
}

function fdatasyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fdatasync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

function fsyncFd(fd: number): Promise<void> {
  return new Promise((resolve, reject) => {
    fsync(fd, (err) => (err ? reject(err) : resolve()));
  });
}

/** What a body hashed to: its CRC32C always, its sha256 only when the sender gave no CRC32C. */
interface BodySums {
  sha256: string | undefined;
  crc32c: string;
}

/** ChecksumMismatch unless the body matches the sender's CRC32C (when sent), else its sha256. */
function checksumMismatch(sums: BodySums, sha256: string, crc32c: string | undefined): StorageError | null {
  if (crc32c !== undefined) {
    if (sums.crc32c === crc32c) return null;
    return new StorageError('ChecksumMismatch', `body has crc32c ${sums.crc32c}, expected ${crc32c}`, {
      actualCrc32c: sums.crc32c,
    });
  }
  if (sums.sha256 === sha256) return null;
  return new StorageError('ChecksumMismatch', `body hashes to ${sums.sha256}, expected ${sha256}`, {
    actualSha256: sums.sha256,
  });
}

/** A write of other bytes under an id the store holds. */
function conflict<T>(id: string, existing: BlobRecord): StoreResult<T> {
  return failure('BlobConflict', `blob ${id} already exists with other bytes`, { sha256: existing.sha256 });
}

/** The checksums a sender gave after its body, or InvalidRequest naming why there are none. */
function claimedAfterBody(sums: () => { sha256: string; crc32c: string }): {
  sha256: string;
  crc32c: string;
} {
  try {
    return sums();
  } catch (err) {
    throw new StorageError(
      'InvalidRequest',
      `the body's checksum trailer is unreadable: ${(err as Error).message}`,
    );
  }
}

/** Two records name the same bytes: the same sha256, and the same CRC32C where both have one. */
function sameContent(
  a: { sha256: string; crc32c?: string },
  b: { sha256: string; crc32c?: string },
): boolean {
  return a.sha256 === b.sha256 && (a.crc32c === undefined || b.crc32c === undefined || a.crc32c === b.crc32c);
}

/**
 * The check a stored blob's bytes are read back with: its CRC32C, or its sha256 for a blob
 * indexed before CRC32C was.
 */
function contentHasher(record: BlobRecord): {
  update(chunk: Uint8Array): void;
  digest(): string;
  expected: string;
} {
  if (record.crc32c !== undefined) {
    const crc = new Crc32c();
    return { update: (chunk) => crc.update(chunk), digest: () => crc.hex(), expected: record.crc32c };
  }
  const sha = createHash('sha256');
  return { update: (chunk) => sha.update(chunk), digest: () => sha.digest('hex'), expected: record.sha256 };
}

/**
 * The size of the blob's bytes in `file` and whether they pass `record`'s check (a trailer after them
 * is not hashed); undefined when there is no file. A file that fits neither layout reports its size.
 */
async function hashFile(
  file: string,
  record: BlobRecord,
): Promise<{ size: number; matches: boolean } | undefined> {
  const hash = contentHasher(record);
  let size: number;
  try {
    const fileSize = (await fs.stat(file)).size;
    if (!fitsRecord(fileSize, record)) return { size: fileSize, matches: false };
    size = await hashBlobBytes(file, record.size, hash);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  return { size, matches: hash.digest() === hash.expected };
}

/** fsyncDir for the PUT path: open and close on this thread, only the fsync in the pool (see commit). */
function fsyncDirFast(dir: string): Promise<void> {
  const fd = openSync(dir, 'r');
  return new Promise<void>((resolve, reject) => {
    fsync(fd, (err) => {
      try {
        closeSync(fd);
      } catch {
        // The fsync's outcome is what matters; a failed close of a read-only folder fd loses nothing.
      }
      if (err) reject(err);
      else resolve();
    });
  });
}

async function removeQuietly(file: string): Promise<void> {
  await fs.rm(file, { force: true });
}

/** A full disk (ENOSPC from the filesystem, or LevelDB's words for it) means 507. */
function asStorageError(err: unknown, quotaBytes: number | undefined): StorageError | undefined {
  if (err instanceof StorageError) return err;
  if (isDiskFull(err)) {
    return new StorageError('InsufficientStorage', 'the disk is full', { quotaBytes: quotaBytes ?? null });
  }
  return undefined;
}

function reserveMissing(reserve: DiskReserve): StorageError {
  return new StorageError(
    'InsufficientStorage',
    `the disk is full: the worker keeps its last ${reserve.bytes} bytes for its index (a disk reserve), ` +
      `and takes no new blob until ${2 * reserve.bytes} bytes are free there`,
    { quotaBytes: null },
  );
}

function invalidId<T>(id: string): StoreResult<T> {
  return failure(
    'InvalidBlobId',
    `blob id ${JSON.stringify(id.slice(0, 200))} does not match the id pattern`,
  );
}

function tooLarge(maxBytes: number): StorageError {
  return new StorageError('PayloadTooLarge', `blob bodies are limited to ${maxBytes} bytes`, { maxBytes });
}

function overQuota(quotaBytes: number): StorageError {
  return new StorageError(
    'InsufficientStorage',
    `storing this blob would exceed the quota of ${quotaBytes} bytes`,
    {
      quotaBytes,
    },
  );
}
