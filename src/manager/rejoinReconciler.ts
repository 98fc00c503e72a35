// Rejoin reconciliation (seed approach 2): a worker that registers brings its inventory, and the
// leader reconciles it with the tables, one object at a time, logging every decision with the
// object id (`event: 'reconcile.*'`):
// - a copy the record lists: kept;
// - a copy the record does not list, with the right checksum: re-adopted (addReplica) when the
//   object lacks two healthy copies; otherwise re-adopted too and the copy that replaced it while
//   the worker was away is removed (removeReplica, then its blob deleted), so exactly two remain;
// - a copy whose checksum differs from the record: dropped from the record (unless it is the last
//   one) and deleted;
// - a blob no record knows: deleted once it has been known to this leader for the orphan grace
//   (an upload writes blobs before it commits the record; the inventory carries no mtime, so the
//   leader keeps first-seen times), after a fresh look at the table;
// - a copy the record lists but the worker does not hold (e.g. `--rejoin wipe`): dropped from the
//   record, after asking the worker directly, so repair makes a new copy.
//
// Between rejoins, a periodic sweep reads every serving worker's inventory and treats two kinds
// of blob like orphans (deleted after the grace, after a fresh look at the table): blobs no record
// knows, and strays, copies of a recorded object on a worker the record does not list while two
// healthy copies exist elsewhere (e.g. a repair copy made by a leader that died before recording
// it). A stray of an object short of copies is re-adopted instead.

import { Readable } from 'node:stream';
import type { ReadableStream as NodeWebStream } from 'node:stream/web';
import { ndjsonLines } from '../http/ndjson.ts';
import type { Logger } from '../logging.ts';
import { expectedOf, type NodeView, type ObjectView } from '../metadata/commands.ts';
import { type MetadataStateMachine, REPLICATION_FACTOR } from '../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import { type CopyLocks, deleteUnlistedCopy } from './copyLocks.ts';
import { type CopyCheck, checkCopy } from './copyVerifier.ts';
import type { RaftAccess } from './imageService.ts';
import type { RepairMetrics } from './repairMetrics.ts';
import type { WorkerClient } from './workerClient.ts';
import type { InventoryLine } from './workerRegistry.ts';

export interface RejoinReconcilerDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  workers: WorkerClient;
  log: Logger;
  /** Shared with repair and the upload path: see copyLocks.ts. */
  copies: CopyLocks;
  metrics?: RepairMetrics;
  orphanGraceMs: number;
  /** How often pending orphans are looked at again; default grace/4 within 100 ms..60 s. */
  sweepIntervalMs?: number;
  /** Whether the periodic inventory sweep runs (it reads with the worker client's credentials). */
  inventorySweep?: boolean;
  /** The older switch: a cluster secret given = inventorySweep when that is not given. */
  secret?: string;
  /** How often every serving worker's inventory is swept; default the grace, within 1 s..10 min. */
  inventorySweepMs?: number;
  /**
   * True while this manager's own upload of the id runs: its copies are on workers before its
   * record commits, however long that takes, so the grace alone does not cover it.
   */
  uploading?: (id: string) => boolean;
  now?: () => number;
}

/** A worker's inventory lines in ascending id order, read anew at each call. */
export type InventorySource = () => AsyncIterable<InventoryLine> | Iterable<InventoryLine>;

/**
 * Inventory lines reconciled at once. Each waits on read-backs and a commit, not on this process:
 * bench:repair's rejoin of 1,000 copies took 6.7 s at 8, 4.9 s at 32 and 4.9 s at 64 (process
 * start included). The same bound as --repair-concurrency's default.
 */
const RECONCILE_CONCURRENCY = 32;

export type ReconcileDecision =
  | 'kept'
  | 'readopted'
  | 'excessRemoved'
  | 'corruptDeleted'
  | 'orphanPending'
  | 'orphanDeleted'
  | 'missingDropped'
  | 'skipped';

export type ReconcileSummary = Record<ReconcileDecision, number>;

interface PendingOrphan {
  nodeId: string;
  id: string;
  firstSeen: number;
}

function emptySummary(): ReconcileSummary {
  return {
    kept: 0,
    readopted: 0,
    excessRemoved: 0,
    corruptDeleted: 0,
    orphanPending: 0,
    orphanDeleted: 0,
    missingDropped: 0,
    skipped: 0,
  };
}

export class RejoinReconciler {
  private readonly orphans = new Map<string, PendingOrphan>();
  /** One reconciliation per node at a time; a second registration waits for the first. */
  private readonly perNode = new Map<string, Promise<unknown>>();
  private timer: NodeJS.Timeout | null = null;
  private inventoryTimer: NodeJS.Timeout | null = null;
  private sweepingInventories = false;
  /** Sweeps dropping copies their workers lack: busy, like a rejoin, for the repair loop's trims. */
  private droppingMissing = 0;
  private readonly now: () => number;

  constructor(private readonly deps: RejoinReconcilerDeps) {
    this.now = deps.now ?? Date.now;
  }

  start(): void {
    const every =
      this.deps.sweepIntervalMs ?? Math.min(60_000, Math.max(100, Math.floor(this.deps.orphanGraceMs / 4)));
    this.timer = setInterval(() => void this.sweepOrphans().catch(() => {}), every);
    this.timer.unref();
    if (this.deps.inventorySweep ?? this.deps.secret !== undefined) {
      const sweep = this.deps.inventorySweepMs ?? Math.min(600_000, Math.max(1_000, this.deps.orphanGraceMs));
      this.inventoryTimer = setInterval(() => void this.sweepInventories().catch(() => {}), sweep);
      this.inventoryTimer.unref();
    }
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    if (this.inventoryTimer) clearInterval(this.inventoryTimer);
    this.timer = null;
    this.inventoryTimer = null;
  }

  /**
   * Reads the inventory of every serving `up` worker (not one being reconciled) and notes its
   * orphans and strays; the orphan sweep deletes them once their grace has passed.
   */
  async sweepInventories(): Promise<number> {
    const { raft, metadata, log } = this.deps;
    if (
      this.sweepingInventories ||
      !raft.isLeader() ||
      !(this.deps.inventorySweep ?? this.deps.secret !== undefined)
    )
      return 0;
    this.sweepingInventories = true;
    let noted = 0;
    try {
      for (const node of await metadata.listNodes()) {
        if (node.state !== 'up' || this.perNode.has(node.nodeId) || !raft.isLeader()) continue;
        try {
          noted += await this.sweepOne(node);
        } catch (err) {
          log.debug(
            { event: 'reconcile.sweep_failed', nodeId: node.nodeId, err: (err as Error).message },
            'inventory not read; next sweep retries',
          );
        }
      }
    } finally {
      this.sweepingInventories = false;
    }
    return noted;
  }

  /**
   * One worker's inventory against the table, both ways: blobs the table does not list there are
   * noted as orphans or strays (deleted after their grace), and copies the table lists there that
   * the inventory lacks are dropped once the worker confirms they are gone, as at a rejoin. That
   * second half is what catches a rejoin's reconciliation cut short (a leader change, a failure):
   * the worker does not register again for it.
   */
  private async sweepOne(node: NodeView): Promise<number> {
    const startedAt = this.now();
    let noted = 0;
    // This node's pending orphans not listed again: gone from the worker, so moot. Tracked this
    // way round so memory follows the few orphans, not the inventory.
    const unseen = new Set<string>();
    for (const [key, o] of this.orphans) if (o.nodeId === node.nodeId) unseen.add(key);
    for await (const line of this.inventoryOf(node)) {
      const key = `${node.nodeId}/${line.id}`;
      unseen.delete(key);
      const object = await this.deps.metadata.getObject(line.id);
      if (object?.replicas.includes(node.nodeId)) {
        this.orphans.delete(key);
        continue;
      }
      if (!this.orphans.has(key)) {
        this.orphans.set(key, {
          nodeId: node.nodeId,
          id: line.id,
          firstSeen: this.now(),
        });
        noted += 1;
      }
    }
    for (const key of unseen) this.orphans.delete(key);
    const summary = emptySummary();
    this.droppingMissing += 1;
    try {
      await this.reconcileLacking(node.nodeId, () => this.inventoryOf(node), startedAt, summary);
    } finally {
      this.droppingMissing -= 1;
    }
    if (summary.missingDropped > 0) {
      this.deps.log.warn(
        { event: 'reconcile.sweep_missing', nodeId: node.nodeId, ...summary },
        'recorded copies missing from their worker dropped; repair makes new ones',
      );
    }
    return noted;
  }

  /** A worker's inventory, streamed (GET /inventory, NDJSON in id order). */
  private async *inventoryOf(node: NodeView): AsyncGenerator<InventoryLine> {
    const res = await fetch(new URL('/inventory', node.url), {
      headers: await this.deps.workers.authHeaders(node.url),
      signal: AbortSignal.timeout(60_000),
    });
    if (!res.ok || !res.body) throw new Error(`inventory answered ${res.status}`);
    for await (const text of ndjsonLines(Readable.fromWeb(res.body as NodeWebStream), 4096)) {
      const line = JSON.parse(text) as InventoryLine;
      if (typeof line.id === 'string') yield line;
    }
  }

  /** A reconciliation is running or queued (the repair loop then leaves copies too many alone). */
  busy(): boolean {
    return this.perNode.size > 0 || this.droppingMissing > 0;
  }

  pendingOrphans(): number {
    return this.orphans.size;
  }

  /**
   * Queues a reconciliation behind any other one for the same node; resolves with its summary.
   * `inventory` gives the worker's lines in ascending id order, anew at each call (it is read
   * twice: once to decide each copy, once to find recorded copies the worker lacks).
   */
  reconcile(
    nodeId: string,
    inventory: InventorySource,
    inventoryStartedAt: number,
  ): Promise<ReconcileSummary> {
    const previous = this.perNode.get(nodeId) ?? Promise.resolve();
    const run = previous.catch(() => {}).then(() => this.reconcileNow(nodeId, inventory, inventoryStartedAt));
    this.perNode.set(nodeId, run);
    void run
      .catch((err: unknown) =>
        this.deps.log.warn(
          { event: 'reconcile.failed', nodeId, err },
          'reconciliation stopped; the next registration retries',
        ),
      )
      .finally(() => {
        if (this.perNode.get(nodeId) === run) this.perNode.delete(nodeId);
      });
    return run;
  }

  private decided(summary: ReconcileSummary, d: ReconcileDecision): void {
    summary[d] += 1;
    this.deps.metrics?.reconcileDecisions.inc({ decision: d });
  }

  private async reconcileNow(
    nodeId: string,
    inventory: InventorySource,
    inventoryStartedAt: number,
  ): Promise<ReconcileSummary> {
    const { metadata, log } = this.deps;
    const summary = emptySummary();
    let nodes = new Map((await metadata.listNodes()).map((n) => [n.nodeId, n]));
    let refreshedAt = 0;
    let taken = 0;
    // One reader shared by the lanes: an async generator hands out its lines in order.
    const lines = (async function* () {
      yield* inventory();
    })();
    // Blobs are distinct objects, so a few at once: each decision waits on Raft commits.
    const lane = async (): Promise<void> => {
      while (this.deps.raft.isLeader()) {
        const next = await lines.next();
        if (next.done) return;
        const i = taken++;
        // Node states steer decisions; re-read now and then, not for every blob.
        if (i - refreshedAt >= 256) {
          refreshedAt = i;
          nodes = new Map((await metadata.listNodes()).map((n) => [n.nodeId, n]));
        }
        const self = nodes.get(nodeId);
        if (!self) return;
        const line = next.value;
        try {
          this.decided(summary, await this.reconcileBlob(self, line, nodes));
        } catch (err) {
          // One unreachable worker or lost commit must not stop the rest; the next rejoin retries.
          this.deps.log.warn(
            { event: 'reconcile.blob_failed', objectId: line.id, nodeId, err: (err as Error).message },
            'no decision for this copy',
          );
          this.decided(summary, 'skipped');
        }
      }
    };
    try {
      await Promise.all(Array.from({ length: RECONCILE_CONCURRENCY }, lane));
    } finally {
      await lines.return(undefined);
    }
    if (!this.deps.raft.isLeader() || !(await metadata.getNode(nodeId))) return summary;
    await this.reconcileLacking(nodeId, inventory, inventoryStartedAt, summary);
    log.info({ event: 'reconcile.done', nodeId, ...summary }, `reconciled the inventory of ${nodeId}`);
    return summary;
  }

  /**
   * Decides on the returning worker's copy of one inventory line, holding that copy throughout:
   * another path acting on it (repair copying onto this worker, the sweep deleting it as a stray)
   * leaves the line to the next rejoin or sweep.
   */
  private async reconcileBlob(
    self: NodeView,
    line: InventoryLine,
    nodes: Map<string, NodeView>,
  ): Promise<ReconcileDecision> {
    const release = this.deps.copies.tryHold(self.nodeId, line.id);
    if (release === null) return 'skipped';
    try {
      return await this.reconcileHeldBlob(self, line, nodes);
    } finally {
      release();
    }
  }

  private async reconcileHeldBlob(
    self: NodeView,
    line: InventoryLine,
    nodes: Map<string, NodeView>,
  ): Promise<ReconcileDecision> {
    const { raft, metadata, workers, log } = this.deps;
    const nodeId = self.nodeId;
    const object = await metadata.getObject(line.id);
    if (!object) return this.orphan(self, line.id);
    this.orphans.delete(`${nodeId}/${line.id}`);
    const listed = object.replicas.includes(nodeId);

    if (object.sha256 !== line.sha256 || object.size !== line.size) {
      // The mismatch is the index's word; the bytes decide (a wrong index entry over right bytes
      // must not cost a copy).
      if ((await checkCopy(workers, self.url, line.id, object)) !== 'bad') return 'skipped';
      if (listed) {
        const removed = await proposeCommand(raft, {
          type: 'removeReplica',
          id: line.id,
          nodeId,
          expected: expectedOf(object),
        });
        if (!removed.ok) {
          if (removed.code === 'LastReplica') {
            log.error(
              { event: 'reconcile.corrupt_last_copy', objectId: line.id, nodeId, code: removed.code },
              'the only recorded copy has the wrong checksum; kept for an operator',
            );
          }
          return 'skipped';
        }
      } else {
        // No commit vouches for this delete: re-read the record as of everything committed (a
        // deposed leader's table may predate the record these bytes belong to).
        const now = await this.freshObject(line.id);
        if (!now || now.replicas.includes(nodeId) || (now.sha256 === line.sha256 && now.size === line.size)) {
          return 'skipped';
        }
      }
      await workers.deleteBlob(self.url, line.id);
      log.warn(
        {
          event: 'reconcile.corrupt_deleted',
          objectId: line.id,
          nodeId,
          expected: object.sha256,
          found: line.sha256,
        },
        'copy with a wrong checksum deleted',
      );
      return 'corruptDeleted';
    }
    if (listed) return 'kept';

    const healthy = object.replicas.filter((n) => nodes.get(n)?.state === 'up');
    if (self.state !== 'up' && healthy.length >= REPLICATION_FACTOR) {
      // A draining worker's unlisted copy is not wanted: re-adopting it would only move it again.
      // It goes only if the two recorded copies are proved by their bytes.
      if ((await this.provenCopies(line.id, healthy, nodes)).good.length < REPLICATION_FACTOR)
        return 'skipped';
      await workers.deleteBlob(self.url, line.id);
      log.info(
        { event: 'reconcile.excess_deleted', objectId: line.id, nodeId, state: self.state },
        'unlisted copy on a worker being emptied deleted',
      );
      return 'excessRemoved';
    }
    if (healthy.length >= REPLICATION_FACTOR) {
      // Re-adopting here means giving up a copy that is known good (it was written by repair,
      // hash-checked by its worker on arrival) for this one, which only claims its checksum from
      // its index: its bytes are read back first.
      const check = await checkCopy(workers, self.url, line.id, object);
      if (check !== 'good') {
        log.warn(
          { event: 'reconcile.returning_copy_unproven', objectId: line.id, nodeId, check },
          'returning copy not re-adopted: its bytes do not match the record (or could not be read)',
        );
        if (check === 'bad') {
          const now = await this.freshObject(line.id);
          if (!now || now.replicas.includes(nodeId) || now.sha256 !== object.sha256) return 'skipped';
          await workers.deleteBlob(self.url, line.id);
          return 'corruptDeleted';
        }
        return 'skipped';
      }
    }
    if (healthy.length < REPLICATION_FACTOR) {
      const added = await this.readopt(object, nodeId);
      if (!added) return 'skipped';
      log.info(
        { event: 'reconcile.readopted', objectId: line.id, nodeId, replicas: added.replicas },
        'copy re-adopted instead of a new transfer',
      );
      return 'readopted';
    }
    // Two healthy copies exist without this one: one of them replaced it while it was away. The copy
    // that stays beside the returning one must be proved too; a copy found bad goes first. Both are
    // proved before anything commits, so the trade is one entry (replaceReplica), not two.
    const proof = await this.provenCopies(line.id, healthy, nodes);
    const victim = proof.bad[0] ?? proof.unknown[0] ?? this.pickExcess(object, nodeId, healthy, nodes);
    if (proof.good.filter((n) => n !== victim).length < REPLICATION_FACTOR - 1) {
      if (!(await this.readopt(object, nodeId))) return 'skipped';
      log.warn(
        { event: 'reconcile.excess_unproven', objectId: line.id, nodeId, proof },
        'returning copy re-adopted; the copy too many stays until the others are proved',
      );
      return 'readopted';
    }
    const replaced = await proposeCommand(raft, {
      type: 'replaceReplica',
      id: line.id,
      add: nodeId,
      remove: victim,
      expected: expectedOf(object),
    });
    if (!replaced.ok) {
      // The record changed since it was read (the copy was listed, or the victim dropped,
      // meanwhile): nothing was traded; the next rejoin decides again.
      log.warn(
        { event: 'reconcile.readopt_refused', objectId: line.id, nodeId, victim, code: replaced.code },
        replaced.message,
      );
      return 'skipped';
    }
    const victimNode = nodes.get(victim);
    if (victimNode) {
      await deleteUnlistedCopy(this.deps, victimNode, line.id).catch((err: unknown) =>
        log.warn(
          { event: 'reconcile.excess_delete_failed', objectId: line.id, nodeId: victim, err },
          'excess copy left on disk; its next rejoin removes it',
        ),
      );
    }
    log.info(
      {
        event: 'reconcile.excess_removed',
        objectId: line.id,
        nodeId,
        removed: victim,
        replicas: replaced.object.replicas,
      },
      'returning copy kept; the copy that replaced it removed',
    );
    return 'excessRemoved';
  }

  /** Records the returning copy on `nodeId` (addReplica); null, logged, when the record refuses it. */
  private async readopt(object: ObjectView, nodeId: string): Promise<ObjectView | null> {
    const added = await proposeCommand(this.deps.raft, {
      type: 'addReplica',
      id: object.id,
      nodeId,
      expected: expectedOf(object),
    });
    if (added.ok) return added.object;
    this.deps.log.warn(
      { event: 'reconcile.readopt_refused', objectId: object.id, nodeId, code: added.code },
      added.message,
    );
    return null;
  }

  private async freshObject(id: string): Promise<ObjectView | null> {
    await this.deps.raft.readIndex();
    return this.deps.metadata.getObject(id);
  }

  /** Reads back the copies on `nodeIds` and sorts them by what their bytes show. */
  private async provenCopies(
    id: string,
    nodeIds: string[],
    nodes: Map<string, NodeView>,
  ): Promise<{ good: string[]; bad: string[]; unknown: string[] }> {
    const object = await this.deps.metadata.getObject(id);
    const out = { good: [] as string[], bad: [] as string[], unknown: [] as string[] };
    for (const n of nodeIds) {
      const url = nodes.get(n)?.url;
      const check: CopyCheck =
        object && url ? await checkCopy(this.deps.workers, url, id, object) : 'unknown';
      out[check === 'good' ? 'good' : check === 'bad' ? 'bad' : 'unknown'].push(n);
    }
    return out;
  }

  /** Which healthy copy goes: keep the zones distinct when possible, then free the fullest worker. */
  private pickExcess(
    object: ObjectView,
    keep: string,
    healthy: string[],
    nodes: Map<string, NodeView>,
  ): string {
    const keepZone = nodes.get(keep)?.zone;
    const score = (n: string) => {
      const node = nodes.get(n);
      const sameZone = node?.zone === keepZone ? 1 : 0;
      return [sameZone, node?.objectCount ?? 0] as const;
    };
    const candidates = healthy.filter((n) => n !== keep && object.replicas.includes(n));
    candidates.sort((a, b) => {
      const [za, ca] = score(a);
      const [zb, cb] = score(b);
      return zb - za || cb - ca || (a < b ? -1 : 1);
    });
    return candidates[0]!;
  }

  private async orphan(self: NodeView, id: string): Promise<ReconcileDecision> {
    const key = `${self.nodeId}/${id}`;
    const known = this.orphans.get(key);
    const firstSeen = known?.firstSeen ?? this.now();
    if (!known) this.orphans.set(key, { nodeId: self.nodeId, id, firstSeen });
    if (this.now() - firstSeen >= this.deps.orphanGraceMs && (await this.deleteHeldOrphan(key)))
      return 'orphanDeleted';
    this.deps.log.info(
      { event: 'reconcile.orphan_pending', objectId: id, nodeId: self.nodeId, firstSeen },
      'blob unknown to the table; deleted after the grace period unless a record appears',
    );
    return 'orphanPending';
  }

  /** Holds the copy, then `deleteHeldOrphan`; a copy another path is acting on waits for a later sweep. */
  private async deleteOrphan(key: string): Promise<boolean> {
    const pending = this.orphans.get(key);
    if (!pending) return false;
    const release = this.deps.copies.tryHold(pending.nodeId, pending.id);
    if (release === null) return false;
    try {
      return await this.deleteHeldOrphan(key);
    } finally {
      release();
    }
  }

  /** Re-checks the table right before deleting: an upload may have committed its record since. */
  private async deleteHeldOrphan(key: string): Promise<boolean> {
    const pending = this.orphans.get(key);
    if (!pending || !this.deps.raft.isLeader() || this.deps.uploading?.(pending.id)) return false;
    const { metadata, workers, log } = this.deps;
    // The table as of everything committed, so neither a record committed under another leader
    // and not applied here yet, nor a deposed leader's stale table, makes a recorded copy look
    // orphaned. An upload this leader is running right now has not committed: `uploading` covers it.
    const object = await this.freshObject(pending.id);
    const node = await metadata.getNode(pending.nodeId);
    if (!node || object?.replicas.includes(pending.nodeId)) {
      this.orphans.delete(key);
      return false;
    }
    if (object) {
      const nodes = new Map((await metadata.listNodes()).map((n) => [n.nodeId, n]));
      const healthy = object.replicas.filter((n) => nodes.get(n)?.state === 'up');
      // An unrecorded copy may be the good one while a recorded one rotted: it goes only once
      // two recorded copies are read back whole.
      const proven =
        healthy.length >= REPLICATION_FACTOR
          ? (await this.provenCopies(pending.id, healthy, nodes)).good
          : [];
      if (proven.length < REPLICATION_FACTOR) {
        // The object needs this copy more than the disk needs the space, if it is a copy of this
        // object: the id may have been deleted and uploaded again with other bytes since it was
        // written. Its bytes are read back first; a copy of other bytes is of no use to anyone.
        this.orphans.delete(key);
        if (node.state !== 'up') return false;
        const check = await checkCopy(workers, node.url, pending.id, object);
        if (check === 'unknown') {
          log.warn(
            { event: 'reconcile.stray_unproven', objectId: pending.id, nodeId: pending.nodeId },
            'unrecorded copy could not be read back; neither re-adopted nor deleted',
          );
          return false;
        }
        if (check === 'good') {
          if (await this.readopt(object, pending.nodeId)) {
            log.info(
              { event: 'reconcile.stray_readopted', objectId: pending.id, nodeId: pending.nodeId },
              'unrecorded copy re-adopted',
            );
          }
          return false;
        }
      }
    }
    await workers.deleteBlob(node.url, pending.id);
    this.orphans.delete(key);
    log.info(
      {
        event: object ? 'reconcile.stray_deleted' : 'reconcile.orphan_deleted',
        objectId: pending.id,
        nodeId: pending.nodeId,
        firstSeen: pending.firstSeen,
      },
      object
        ? 'unrecorded copy deleted after the grace period'
        : 'orphan blob deleted after the grace period',
    );
    return true;
  }

  /**
   * Copies the record lists on `nodeId` that the inventory lacks: the node index and the inventory
   * are both in ascending id order, so one pass over each finds them (a merge, in bounded memory).
   * An inventory out of order stops the search; the next rejoin or repair pass looks again.
   */
  private async reconcileLacking(
    nodeId: string,
    inventory: InventorySource,
    inventoryStartedAt: number,
    summary: ReconcileSummary,
  ): Promise<void> {
    const held = (async function* () {
      yield* inventory();
    })();
    try {
      let current = await held.next();
      let previous: string | undefined;
      const advanceTo = async (id: string): Promise<boolean> => {
        while (!current.done && current.value.id < id) {
          previous = current.value.id;
          current = await held.next();
          if (!current.done && current.value.id <= previous) return false;
        }
        return true;
      };
      let after: string | undefined;
      do {
        const page = await this.deps.metadata.objectsOnNode(nodeId, {
          limit: 1000,
          ...(after ? { after } : {}),
        });
        for (const id of page.items) {
          if (!this.deps.raft.isLeader()) return;
          if (!(await advanceTo(id))) {
            this.deps.log.warn(
              { event: 'reconcile.inventory_unordered', nodeId },
              'inventory not in id order: copies it lacks are left to the next rejoin',
            );
            return;
          }
          if (!current.done && current.value.id === id) continue;
          try {
            this.decided(summary, await this.reconcileMissing(nodeId, id, inventoryStartedAt));
          } catch (err) {
            this.deps.log.warn(
              { event: 'reconcile.missing_check_failed', objectId: id, nodeId, err: (err as Error).message },
              'no decision for this copy',
            );
            this.decided(summary, 'skipped');
          }
        }
        after = page.next ?? undefined;
      } while (after !== undefined);
    } finally {
      await held.return(undefined);
    }
  }

  /** Deletes the pending orphans whose grace has elapsed (timer; exposed for tests). */
  async sweepOrphans(): Promise<number> {
    if (!this.deps.raft.isLeader()) return 0;
    let deleted = 0;
    const now = this.now();
    for (const [key, o] of [...this.orphans]) {
      if (now - o.firstSeen < this.deps.orphanGraceMs) continue;
      try {
        if (await this.deleteOrphan(key)) {
          deleted += 1;
          this.deps.metrics?.reconcileDecisions.inc({ decision: 'orphanDeleted' });
        }
      } catch (err) {
        this.deps.log.warn(
          { event: 'reconcile.orphan_delete_failed', objectId: o.id, nodeId: o.nodeId, err },
          'retried later',
        );
      }
    }
    return deleted;
  }

  /**
   * A copy its worker reports lost (removed by its scrubber): dropped from the record once the
   * worker confirms it does not hold it, like a copy a registration's inventory lacks.
   */
  async dropMissingCopy(nodeId: string, id: string): Promise<ReconcileDecision> {
    const object = await this.deps.metadata.getObject(id);
    if (!object?.replicas.includes(nodeId)) return 'skipped';
    const decision = await this.reconcileMissing(nodeId, id, Number.POSITIVE_INFINITY);
    this.decided(emptySummary(), decision);
    return decision;
  }

  private async reconcileMissing(
    nodeId: string,
    id: string,
    inventoryStartedAt: number,
  ): Promise<ReconcileDecision> {
    const { raft, metadata, workers, log } = this.deps;
    const object = await metadata.getObject(id);
    // Recorded after the inventory was read: its copy may have landed after the listing.
    if (!object || object.createdAt >= inventoryStartedAt) return 'skipped';
    const node = await metadata.getNode(nodeId);
    if (!node) return 'skipped';
    // The copy may have arrived after the listing (a repair to this node): ask the worker itself.
    try {
      const res = await workers.getBlob(node.url, id, { method: 'HEAD' });
      await res.body.dump();
      return 'kept';
    } catch (err) {
      if ((err as { code?: string }).code !== 'NotFound') return 'skipped';
    }
    const removed = await proposeCommand(raft, {
      type: 'removeReplica',
      id,
      nodeId,
      expected: expectedOf(object),
    });
    if (!removed.ok) {
      if (removed.code === 'LastReplica') {
        log.error(
          { event: 'reconcile.last_copy_missing', objectId: id, nodeId, code: removed.code },
          'the only recorded copy is missing from its worker',
        );
      }
      return 'skipped';
    }
    log.warn(
      { event: 'reconcile.missing_dropped', objectId: id, nodeId },
      'recorded copy missing from the worker; dropped so repair makes a new one',
    );
    return 'missingDropped';
  }
}
