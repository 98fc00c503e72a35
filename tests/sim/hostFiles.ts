// The snapshot folder of a simulated manager, in memory: what the driver does with a SnapshotFolder
// (src/consensus/snapshotFiles.ts: write its own snapshot, hold and read a received one, remove the
// older ones). Writing a file is a synced write on the node's simulated disk (hostStore.ts): the file
// is complete only once that write completes, a crash before then loses it (as a power cut loses a
// `.tmp`), and a drawn share of writes fail (a full disk), which the driver must back off from.
// Bytes are content-addressed world-wide (FileBytes): a transfer to a follower is the file's name
// arriving in the follower's folder with the MsgSnap, as the real sender streams the bytes before it
// delivers the message. Nothing here awaits real I/O, so a seed replays exactly.

import { createHash } from 'node:crypto';
import {
  type SnapshotFileRef,
  type SnapshotFolder,
  snapshotFileName,
} from '../../src/consensus/snapshotFiles.ts';
import { isTablesSnapshot, snapshotFileOf } from '../../src/consensus/snapshots.ts';
import { parseImage } from './stateMachine.ts';

/** Every snapshot file any node wrote, by sha256: the bytes a transfer carries. */
export class FileBytes {
  private readonly bytes = new Map<string, Buffer>();

  put(sha256: string, bytes: Buffer): void {
    this.bytes.set(sha256, bytes);
  }

  get(ref: SnapshotFileRef): Buffer | undefined {
    const b = this.bytes.get(ref.sha256);
    return b?.length === ref.size ? b : undefined;
  }

  /** The state digest a snapshot's data holds: inline, or in the file it names. */
  digestOf(data: string): number {
    if (isTablesSnapshot(data)) throw new Error('a snapshot of the tables form holds no state');
    const ref = snapshotFileOf(data);
    if (ref === null) return parseImage(data).digest;
    const b = this.get(ref);
    if (b === undefined) throw new Error(`no node wrote the snapshot file ${snapshotFileName(ref)}`);
    return parseImage(b.toString('utf8')).digest;
  }
}

/** The node's disk, as the folder sees it. */
export interface FolderDisk {
  /** A synced write, done by `perform` when it completes. */
  synced(perform: () => void): Promise<void>;
  /** Whether the next file write fails (drawn). */
  fails(): boolean;
}

/** The members of SnapshotFolder the driver uses (raftNode.ts, snapshots.ts). */
type DriverFolder = Pick<
  SnapshotFolder,
  'dir' | 'holds' | 'write' | 'read' | 'discard' | 'removeOlderThan' | 'removeBefore'
>;

export class SimSnapshotFolder implements DriverFolder {
  readonly dir: string;
  /** Names of the complete files, in the order they became complete. */
  private readonly complete = new Set<string>();
  built = 0;
  failed = 0;

  constructor(
    id: string,
    private readonly bytes: FileBytes,
    private readonly disk: () => FolderDisk,
  ) {
    this.dir = `${id}:snapshots`;
  }

  /** What RaftNode.start takes: the driver touches only the members of DriverFolder. */
  asFolder(): SnapshotFolder {
    return this as unknown as SnapshotFolder;
  }

  holds(ref: SnapshotFileRef): boolean {
    return this.complete.has(snapshotFileName(ref)) && this.bytes.get(ref) !== undefined;
  }

  async write(index: number, term: number, chunks: AsyncIterable<Uint8Array>): Promise<SnapshotFileRef> {
    const parts: Buffer[] = [];
    for await (const chunk of chunks) parts.push(Buffer.from(chunk));
    const body = Buffer.concat(parts);
    const ref = { index, term, size: body.length, sha256: createHash('sha256').update(body).digest('hex') };
    const disk = this.disk();
    const fails = disk.fails();
    await disk.synced(() => {
      if (fails) {
        this.failed++;
        throw new Error(`simulated: no space left in ${this.dir} for a snapshot at ${index}`);
      }
      this.bytes.put(ref.sha256, body);
      this.complete.add(snapshotFileName(ref));
      this.built++;
    });
    return ref;
  }

  async *read(ref: SnapshotFileRef, from = 0, to = ref.size): AsyncGenerator<Buffer> {
    const body = this.holds(ref) ? this.bytes.get(ref) : undefined;
    if (body === undefined) throw new Error(`snapshot file ${snapshotFileName(ref)} is not in ${this.dir}`);
    yield body.subarray(from, to);
  }

  /** A follower's side of a transfer: the whole file, checked and durable, before the MsgSnap. */
  receive(ref: SnapshotFileRef): void {
    if (this.bytes.get(ref) === undefined) throw new Error(`no node wrote ${snapshotFileName(ref)}`);
    this.complete.add(snapshotFileName(ref));
  }

  async discard(ref: SnapshotFileRef): Promise<void> {
    this.complete.delete(snapshotFileName(ref));
  }

  async removeOlderThan(kept: SnapshotFileRef): Promise<void> {
    await this.removeBefore(kept.index, snapshotFileName(kept));
  }

  async removeBefore(index: number, keptName: string | null = null): Promise<void> {
    for (const name of [...this.complete]) {
      if (name !== keptName && Number.parseInt(name.slice(0, 16), 16) < index) this.complete.delete(name);
    }
  }

  get files(): number {
    return this.complete.size;
  }
}
