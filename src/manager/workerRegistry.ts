// The managers' side of the worker protocol (docs/worker-protocol.md): registrations (leader only)
// put a worker in the replicated node table; heartbeats, which every manager receives, feed its
// WorkerLiveness and, coalesced by the leader, the table's usage figures (one heartbeatSummary
// entry per period, not one per heartbeat).

import type { Logger } from '../logging.ts';
import { MAX_HEARTBEAT_NODES } from '../metadata/commands.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import {
  type BlobList,
  type Heartbeat,
  heartbeatSchema,
  type InventoryLine,
  type RegistrationHeader,
} from '../protocol/workerSchemas.ts';
import { ImageError, type RaftAccess, raftFailure } from './imageService.ts';
import { InventorySpool } from './inventorySpool.ts';
import type { WorkerLiveness } from './workerLiveness.ts';

export {
  type BlobList,
  blobListSchema,
  type InventoryLine,
  inventoryLineSchema,
  MAX_BLOB_LIST_IDS,
  type RegistrationHeader,
  registrationHeaderSchema,
} from '../protocol/workerSchemas.ts';

/** The heartbeat body, under the name the manager's code knows it by. */
export const workerUsageSchema = heartbeatSchema;
export type WorkerUsage = Heartbeat;

/**
 * What registration asks of the placement reconciler (placement/reconciler.ts). Named here, by shape, so the
 * reconciler, which reads InventoryLine from this module, is not imported back.
 */
export interface InventoryReconciler {
  reconcile(
    nodeId: string,
    inventory: () => AsyncIterable<InventoryLine>,
    inventoryStartedAt: number,
  ): Promise<unknown>;
  dropMissingCopy(nodeId: string, id: string): Promise<string>;
}

export class UnknownWorker extends Error {
  readonly code = 'UnknownWorker';
}

export class InventoryTooLarge extends Error {
  readonly code = 'InventoryTooLarge';
}

/**
 * A registration names a worker id already recorded at another URL. The cluster secret does not
 * prove which worker speaks, so a URL never moves on a worker's word: the records' copies would
 * follow it to whoever answers there (docs/worker-protocol.md, "Moving a worker").
 */
export class WorkerUrlConflict extends Error {
  readonly code = 'WorkerUrlConflict';
}

/**
 * A worker removed for good (`imgvault worker remove`) speaks again: its id never registers again,
 * whatever credential it holds (one worker's credential cannot be revoked alone: docs/security.md).
 */
export class WorkerRemoved extends Error {
  readonly code = 'WorkerRemoved';
  constructor(nodeId: string) {
    super(
      `worker ${nodeId} was removed from the cluster (imgvault worker remove) and cannot register again; ` +
        'start the machine under a new worker id, with an empty data folder',
    );
  }
}

export interface WorkerRegistryDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  liveness: WorkerLiveness;
  log: Logger;
  heartbeatIntervalMs: number;
  /** How often the leader commits the usage heard since the last summary. */
  summaryIntervalMs: number;
  /** Compares a registering worker's inventory with the tables; absent = inventory only counted. */
  reconciler?: InventoryReconciler;
  /** Folder where registration inventories are spooled until reconciled (InventorySpool). */
  spoolDir: string;
  /** True while this manager's own upload of the id runs (its copies precede its record). */
  uploading?: (id: string) => boolean;
}

/**
 * Bound on the inventory one registration may carry. It is spooled to the leader's disk, not held
 * in memory (about 100 bytes a line), so this only stops a runaway sender.
 */
export const MAX_INVENTORY_LINES = 200_000_000;

async function* bounded(inventory: AsyncIterable<InventoryLine>): AsyncGenerator<InventoryLine> {
  let n = 0;
  for await (const line of inventory) {
    if (++n > MAX_INVENTORY_LINES)
      throw new InventoryTooLarge(`inventory exceeds ${MAX_INVENTORY_LINES} blobs`);
    yield line;
  }
}

export class WorkerRegistry {
  private summaryTimer: NodeJS.Timeout | null = null;
  private summarizing = false;

  constructor(private readonly deps: WorkerRegistryDeps) {}

  private requireLeader(): void {
    if (this.deps.raft.isLeader()) return;
    const leader = this.deps.raft.leaderInfo();
    if (leader?.url) throw new ImageError('NotLeader', 'this manager is not the leader', leader.url);
    throw new ImageError('NoLeader', 'no leader is known right now; retry shortly');
  }

  private heard(u: WorkerUsage): void {
    this.deps.liveness.heard({
      nodeId: u.id,
      diskUsed: u.diskUsed,
      diskFree: u.diskFree,
      objectCount: u.blobCount,
      lastSeen: Date.now(),
    });
  }

  private async refuseMovedUrl(header: RegistrationHeader): Promise<void> {
    // Every committed registration applied: a stale table could miss the URL recorded last.
    await this.deps.raft.readIndex().catch(raftFailure);
    await this.refuseRemoved(header.id);
    const known = await this.deps.metadata.getNode(header.id);
    if (known === null || known.url === header.url) return;
    this.deps.log.warn(
      { event: 'worker.url_conflict', nodeId: header.id, recorded: known.url, offered: header.url },
      'refused a registration that would move a worker to another URL',
    );
    throw new WorkerUrlConflict(
      `worker ${header.id} is registered at another URL; a worker's URL does not change by registering: ` +
        `restart it at its recorded URL, or have an operator drain it (imgvault worker drain ${header.id}) ` +
        'and start the new one under a new id',
    );
  }

  private async refuseRemoved(nodeId: string): Promise<void> {
    if ((await this.deps.metadata.getRemovedNode(nodeId)) === null) return;
    this.deps.log.warn(
      { event: 'worker.removed_refused', nodeId },
      'refused a worker that was removed from the cluster',
    );
    throw new WorkerRemoved(nodeId);
  }

  /**
   * A URL names one worker: managers find a worker's access credential by its URL, so a new id at a
   * URL another id still holds would be sent the other's credential and refused for ever. Only a
   * drained worker, or a down one that holds no copy, gives its URL up.
   */
  private async refuseTakenUrl(header: RegistrationHeader): Promise<void> {
    for (const other of await this.deps.metadata.listNodes()) {
      if (other.nodeId === header.id || other.url !== header.url || other.state === 'drained') continue;
      if (other.state === 'down') {
        const held = await this.deps.metadata.objectsOnNode(other.nodeId, { limit: 1 });
        if (held.items.length === 0) continue;
      }
      this.deps.log.warn(
        { event: 'worker.url_conflict', nodeId: header.id, holder: other.nodeId, url: header.url },
        'refused a registration at a URL another worker holds',
      );
      throw new WorkerUrlConflict(
        `${header.url} is registered to worker ${other.nodeId} (${other.state}); a new id cannot take it ` +
          `until ${other.nodeId} is drained (imgvault worker drain ${other.nodeId}) or down with no copies: ` +
          `restart ${other.nodeId} there, or start worker ${header.id} at another URL`,
      );
    }
  }

  /**
   * `--rejoin wipe` asks before it deletes: of the blobs a worker wants to wipe, those it must
   * keep because no other copy can be read right now (every other replica of the record is on a
   * worker this leader has not heard from lately), and those of uploads this leader is running.
   * Everything else may go: objects no record knows, and objects with another copy on a serving
   * worker, which repair copies again if the wipe left them short. The kept blobs then rejoin like
   * `--rejoin keep` and are re-adopted.
   */
  async wipeCheck(check: BlobList): Promise<{ keep: string[] }> {
    this.requireLeader();
    // Every committed entry applied: a stale table must not say "another copy exists".
    await this.deps.raft.readIndex().catch(raftFailure);
    const byId = new Map((await this.deps.metadata.listNodes()).map((n) => [n.nodeId, n]));
    const keep: string[] = [];
    for (const id of new Set(check.blobs)) {
      const object = await this.deps.metadata.getObject(id);
      if (!object) {
        // Unknown but being uploaded here: this copy exists before its record commits.
        if (this.deps.uploading?.(id)) keep.push(id);
        continue;
      }
      const elsewhere = object.replicas.some((r) => {
        const node = byId.get(r);
        return r !== check.id && node !== undefined && this.deps.liveness.isHeardServing(node);
      });
      if (!elsewhere) keep.push(id);
    }
    this.deps.log.info(
      { event: 'worker.wipe_checked', nodeId: check.id, asked: check.blobs.length, keep: keep.length },
      'wipe check answered',
    );
    return { keep };
  }

  /**
   * A worker's scrubber removed these copies (they failed their read-back): each record stops
   * counting that copy, after the worker itself confirms it no longer holds it, so repair makes a
   * new one. A last copy stays recorded (and logged) rather than leave the object without any.
   * A drop that failed (a commit timed out) fails the report: the worker reports it again, since
   * until then the record counts a copy that no longer exists.
   */
  async lostCopies(list: BlobList): Promise<{ dropped: number }> {
    this.requireLeader();
    const reconciler = this.deps.reconciler;
    if (!reconciler) return { dropped: 0 };
    let dropped = 0;
    let failed = 0;
    for (const id of new Set(list.blobs)) {
      const decision = await reconciler.dropMissingCopy(list.id, id);
      if (decision === 'missingDropped') dropped += 1;
      if (decision === 'failed') failed += 1;
    }
    this.deps.log.warn(
      { event: 'worker.copies_lost', nodeId: list.id, reported: list.blobs.length, dropped, failed },
      'a worker reported copies that failed their read-back',
    );
    if (failed > 0)
      throw new ImageError('CommitFailed', `${failed} lost copies not dropped; report them again`);
    return { dropped };
  }

  /**
   * Spools the inventory to disk as it arrives (ids ascending), records the worker in the node
   * table (committed: a `down` worker is `up` again from here), then hands the spooled inventory
   * to rejoin reconciliation, which runs after the answer so a large inventory never holds the
   * worker's registration open, and removes the spool when it ends.
   */
  async register(
    header: RegistrationHeader,
    inventory: AsyncIterable<InventoryLine>,
  ): Promise<{ blobs: number }> {
    this.requireLeader();
    await this.refuseMovedUrl(header);
    await this.refuseTakenUrl(header);
    const inventoryStartedAt = Date.now();
    const spool = await InventorySpool.write(this.deps.spoolDir, header.id, bounded(inventory));
    let handedOver = false;
    try {
      const result = await proposeCommand(this.deps.raft, {
        type: 'registerWorker',
        nodeId: header.id,
        url: header.url,
        zone: header.zone,
        at: Date.now(),
      });
      // A removal committed between the check above and this registration: apply refused it.
      if (!result.ok) throw new WorkerRemoved(header.id);
      this.heard(header);
      this.deps.log.info(
        {
          event: 'worker.registered',
          nodeId: header.id,
          url: header.url,
          zone: header.zone,
          blobs: spool.count,
          created: result.created,
          state: result.node.state,
        },
        'worker registered',
      );
      if (this.deps.reconciler && (spool.count > 0 || !result.created)) {
        handedOver = true;
        void this.deps.reconciler
          .reconcile(header.id, () => spool.lines(), inventoryStartedAt)
          .catch((err: unknown) => {
            // Level-triggered: the periodic inventory sweep and the repair loop find what this missed.
            this.deps.log.warn(
              { event: 'reconcile.failed', nodeId: header.id, err },
              'rejoin reconciliation failed',
            );
          })
          .finally(() => spool.remove().catch(() => {}));
      }
      return { blobs: spool.count };
    } finally {
      if (!handedOver) await spool.remove();
    }
  }

  /**
   * Every manager records heartbeats (a new leader starts warm); only the leader acts on them.
   * Only the leader answers UnknownWorker, which makes the worker register again: a follower's
   * table may lag a registration just committed, and re-registering on its word would resend the
   * whole inventory for nothing. A follower records a worker its table knows and is not down, and
   * ignores the rest (that worker learns the truth from the leader).
   */
  async heartbeat(usage: WorkerUsage): Promise<{ leader: boolean; leaderUrl?: string; managers?: string[] }> {
    // Every member, so a worker beats a manager added after it started before that one leads: a
    // new leader that never heard a worker refused every upload (503 NoLiveWorker) until the
    // workers found it (a user's try: manager remove of the leader, right after manager add).
    const members = this.deps.raft.memberUrls?.();
    const managers = members && members.length > 0 ? { managers: members } : {};
    const leading = this.deps.raft.isLeader();
    const node = await this.deps.metadata.getNode(usage.id);
    // Any manager: a removal is a committed verdict, and registering again would only be refused.
    if (node === null) await this.refuseRemoved(usage.id);
    const known = node !== null && node.state !== 'down';
    if (known) this.heard(usage);
    if (!leading) {
      // `down` is a committed verdict, not a follower's lag: the worker must register again, and a
      // worker that beats only followers would never hear it from the leader.
      if (node?.state === 'down')
        throw new UnknownWorker(`worker ${usage.id} is marked down; register again`);
      const leaderUrl = this.deps.raft.leaderInfo()?.url;
      return leaderUrl ? { leader: false, leaderUrl, ...managers } : { leader: false, ...managers };
    }
    if (!node) throw new UnknownWorker(`worker ${usage.id} is not registered`);
    // A worker condemned while it was only cut off must register again: its inventory is reconciled.
    if (!known) throw new UnknownWorker(`worker ${usage.id} is marked down; register again`);
    return { leader: true, ...managers };
  }

  /** Starts committing coalesced usage; harmless on a follower (it has nothing to summarise). */
  start(): void {
    this.summaryTimer = setInterval(() => void this.summarize(), this.deps.summaryIntervalMs);
    this.summaryTimer.unref();
  }

  stop(): void {
    if (this.summaryTimer) clearInterval(this.summaryTimer);
    this.summaryTimer = null;
  }

  private async summarize(): Promise<void> {
    if (this.summarizing || !this.deps.raft.isLeader()) return;
    const nodes = this.deps.liveness.takeSummary();
    if (nodes.length === 0) return;
    this.summarizing = true;
    try {
      for (let i = 0; i < nodes.length; i += MAX_HEARTBEAT_NODES) {
        await proposeCommand(this.deps.raft, {
          type: 'heartbeatSummary',
          nodes: nodes.slice(i, i + MAX_HEARTBEAT_NODES),
        });
      }
    } catch (err) {
      this.deps.log.warn({ event: 'worker.summary_failed', err }, 'heartbeat summary not committed');
    } finally {
      this.summarizing = false;
    }
  }
}
