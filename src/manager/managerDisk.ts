// The manager's disk reserve (src/diskReserve.ts): what lets it start on a full disk. Its Raft log
// and its tables (or the kv map) are LevelDB stores, and every one writes as it opens; in the
// embedded cluster all managers and workers share one disk, and a manager that restarted on it
// once the workers had filled it stayed down, with it the reads and the deletes that free the disk.
//
// While the reserve is not in place, or the disk has less free than the reserve beside it, the disk
// is full for the manager: it serves reads and commits deletes (small log writes), and while it
// leads takes no upload (507). The second condition matters on a disk shared with other managers: a
// manager that released its reserve there shows its room as free space to everyone else, and a
// leader whose own reserve is in place would otherwise fill that room with uploads.

import { DiskReserve, freeBytesAt } from '../diskReserve.ts';
import type { Logger } from '../logging.ts';
import type { ManagerDiskView } from '../protocol/raftView.ts';

/**
 * Two LevelDB stores open at a start (the Raft log, and the tables or the kv map), each of which
 * may turn a log of up to its write buffer (4 MiB, classic-level's default) into a table and write a
 * new MANIFEST and log; as much again for what the manager writes after, with the reserve released:
 * the deletes an operator makes room with, the usage summaries, the tables' flush and compaction
 * of what they write. Nothing next to the disk of a manager.
 */
export const MANAGER_RESERVE_BYTES = 16 * 1024 * 1024;

/**
 * How often a manager looks at its disk: its free space (what decides whether it takes uploads),
 * and the reserve made again once there is room. As often as a worker's heartbeat, which does the
 * same for the worker: a statfs is cheap, and uploads may fill a disk fast.
 */
export const DISK_LOOK_MS = 1_000;

export class ManagerDisk {
  readonly reserve: DiskReserve;
  /** At the last look; none before the first (a start looks before it serves). */
  private freeBytes = Number.POSITIVE_INFINITY;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    dataDir: string,
    private readonly log: Logger,
  ) {
    this.reserve = new DiskReserve(dataDir, MANAGER_RESERVE_BYTES, log, {
      name: 'manager',
      refusing: 'takes no upload while it leads (507)',
    });
  }

  /** Makes the reserve if there is room (the stores are open), then looks every DISK_LOOK_MS. */
  async start(): Promise<void> {
    await this.reserve.makeAtStart();
    await this.look();
    this.timer = setInterval(() => {
      this.look().catch((err: unknown) =>
        this.log.warn({ event: 'storage.disk_look_failed', err }, 'could not look at the disk'),
      );
    }, DISK_LOOK_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.reserve.settled();
  }

  private async look(): Promise<void> {
    this.freeBytes = await freeBytesAt(this.reserve.dataDir);
    this.reserve.restoreIfRoom(this.freeBytes);
  }

  /** Why this manager takes no upload now (its disk is full), or null when it may. */
  uploadRefusal(): string | null {
    const { bytes, inPlace } = this.reserve;
    if (!inPlace) {
      return (
        `the leader's disk is full: it keeps its last ${bytes} bytes for its Raft log and tables (a disk ` +
        `reserve, not in place) and takes no upload until ${2 * bytes} bytes are free there; reads and ` +
        'deletes are served'
      );
    }
    if (this.freeBytes < bytes) {
      return (
        `the leader's disk is full: ${this.freeBytes} bytes free, less than the ${bytes} it keeps for its ` +
        'Raft log and tables beside its disk reserve; reads and deletes are served'
      );
    }
    return null;
  }

  /** What GET /v1/cluster/raft says of the disk (imgvault status warns of a full one). */
  view(): ManagerDiskView {
    return {
      reserveInPlace: this.reserve.inPlace,
      reserveBytes: this.reserve.bytes,
      freeBytes: Number.isFinite(this.freeBytes) ? this.freeBytes : null,
    };
  }
}
