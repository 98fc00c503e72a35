// The placement planner: pure functions from what was observed about one object (its record, the
// copies seen on workers, the nodes, the read-backs done so far) to the next action it needs. No
// I/O, no clock, no timers: the caller observes, calls a planner, executes what it returns, and
// calls again with what it learnt (a `readBack` answers with copy checks). This is openraft's
// engine/runtime split (engine_impl.rs emits commands, the runtime runs them) applied to repair and
// rejoin, so every decision is one table-driven test (tests/manager/placementPlan.test.ts).
//
// Two rules hold in every planner:
// - nothing gives up a copy (forgets it in the record or deletes its bytes) unless REPLICATION_FACTOR
//   copies that stay were read back whole by their workers; a claim from an index proves nothing;
// - which copy goes when there is one too many is decided in one place, `rankExcess`.

import type { NodeState, NodeView, ObjectView } from '../../metadata/commands.ts';
import { REPLICATION_FACTOR } from '../../metadata/metadataStateMachine.ts';

/** A copy's bytes as its worker hashed them: see checkCopy in execute.ts. */
export type CopyCheck = 'good' | 'bad' | 'unknown';
export type Checks = ReadonlyMap<string, CopyCheck>;
export type Nodes = ReadonlyMap<string, NodeView>;

/** Nodes whose copies must move elsewhere. */
export const LEAVING: ReadonlySet<NodeState> = new Set<NodeState>(['down', 'draining', 'drained']);

/** An object's recorded copies sorted by what their nodes are doing. */
export interface Replicas {
  /** On nodes in state `up`. */
  healthy: string[];
  /** On nodes being left (down, draining, drained, or not in the table). */
  leaving: string[];
  /** On nodes a copy can be read from right now (serving and recently heard). */
  sources: NodeView[];
}

export function classify(object: ObjectView, nodes: Nodes, isServing: (n: NodeView) => boolean): Replicas {
  const out: Replicas = { healthy: [], leaving: [], sources: [] };
  for (const nodeId of object.replicas) {
    const node = nodes.get(nodeId);
    if (!node || LEAVING.has(node.state)) out.leaving.push(nodeId);
    else if (node.state === 'up') out.healthy.push(nodeId);
    if (node && isServing(node)) out.sources.push(node);
  }
  return out;
}

/** The object is off its goal: not exactly REPLICATION_FACTOR healthy copies, or one on a leaving node. */
export function needsRepair(r: Replicas): boolean {
  return r.healthy.length !== REPLICATION_FACTOR || r.leaving.length > 0;
}

/**
 * The one ranking of which copy to give up, least wanted first: a copy sharing its zone with
 * another of `copies` (so the zones that stay are distinct), then the fuller worker, then node id.
 */
export function rankExcess(copies: readonly string[], candidates: readonly string[], nodes: Nodes): string[] {
  const zoneOf = (n: string) => nodes.get(n)?.zone ?? '';
  const shared = (n: string) => (copies.some((o) => o !== n && zoneOf(o) === zoneOf(n)) ? 1 : 0);
  const count = (n: string) => nodes.get(n)?.objectCount ?? 0;
  return [...candidates].sort(
    (a, b) => shared(b) - shared(a) || count(b) - count(a) || (a < b ? -1 : a > b ? 1 : 0),
  );
}

/** The first of `nodeIds` not yet read back, as the action to take; null once all are. */
function readBackFirst(nodeIds: readonly string[], checks: Checks): ReadBack | null {
  const missing = nodeIds.filter((n) => !checks.has(n));
  return missing.length > 0 ? { kind: 'readBack', nodeIds: missing } : null;
}

function goodAmong(nodeIds: readonly string[], checks: Checks): string[] {
  return nodeIds.filter((n) => checks.get(n) === 'good');
}

type ReadBack = { kind: 'readBack'; nodeIds: string[] };

/**
 * The copy of `candidates` to give up, once all are read back: one found wrong, else one unread,
 * else the least wanted (rankExcess among `copies`). `proven`: `keep` of the others were read
 * back whole.
 */
function victimAmong(
  copies: readonly string[],
  candidates: readonly string[],
  nodes: Nodes,
  checks: Checks,
  keep: number,
): ReadBack | { victim: string; proven: boolean } {
  const ranked = rankExcess(copies, candidates, nodes);
  const ask = readBackFirst(ranked, checks);
  if (ask) return ask;
  const victim =
    ranked.find((n) => checks.get(n) === 'bad') ??
    ranked.find((n) => checks.get(n) === 'unknown') ??
    ranked[0]!;
  const others = ranked.filter((n) => n !== victim);
  return { victim, proven: goodAmong(others, checks).length >= keep };
}

export type RepairAction =
  | { kind: 'healthy' }
  /** No serving worker holds a copy: wait for one to return. */
  | { kind: 'unavailable' }
  /** Copy to a new target; the record then replaces `replaces` if its node is still leaving. */
  | { kind: 'copy'; replaces?: string }
  | { kind: 'readBack'; nodeIds: string[] }
  /** The record forgets `nodeIds`; the bytes on `deleteFrom` (nodes still serving) are deleted. */
  | { kind: 'remove'; nodeIds: string[]; deleteFrom: string[]; reason: 'leaving' | 'badCopy' }
  /** One copy too many: the record forgets the copy on `nodeId` and its bytes are deleted. */
  | { kind: 'trim'; nodeId: string }
  | { kind: 'wait'; reason: 'unproven' };

/**
 * One recorded object, one step closer to the goal (REPLICATION_FACTOR copies on `up` nodes,
 * none on a leaving one). `deleting`: the leaving nodes still serving (draining), decided once by
 * the caller, whose copies go for good.
 */
export function planRepair(
  r: Replicas,
  nodes: Nodes,
  deleting: readonly string[],
  checks: Checks,
): RepairAction {
  if (r.healthy.length < REPLICATION_FACTOR) {
    if (r.sources.length === 0) return { kind: 'unavailable' };
    return r.leaving[0] === undefined ? { kind: 'copy' } : { kind: 'copy', replaces: r.leaving[0] };
  }
  if (r.leaving.length > 0) return planDropLeaving(r, deleting, checks);
  if (r.healthy.length > REPLICATION_FACTOR) return planTrim(r, nodes, checks);
  return { kind: 'healthy' };
}

export type SourcelessVerdict = ReadBack | { kind: 'lost' | 'unavailable' | 'retry' };

/**
 * An object whose every serving holder answered it has no copy to send (none, or other bytes):
 * each is read back first, since a claim proves nothing. Lost only when every worker the record
 * names is serving and its copy reads back missing or wrong. A worker down or silent may hold the
 * last copy (unavailable: it may come back); a copy that reads back whole, or a worker that could
 * not be asked, leaves the object to the next pass.
 */
export function judgeSourceless(object: ObjectView, r: Replicas, checks: Checks): SourcelessVerdict {
  const serving = new Set(r.sources.map((n) => n.nodeId));
  const ask = readBackFirst(
    object.replicas.filter((n) => serving.has(n)),
    checks,
  );
  if (ask) return ask;
  if (object.replicas.some((n) => serving.has(n) && checks.get(n) !== 'bad')) return { kind: 'retry' };
  return object.replicas.every((n) => serving.has(n)) ? { kind: 'lost' } : { kind: 'unavailable' };
}

/**
 * Two healthy copies exist beside copies on leaving nodes: the record forgets those. A leaving
 * copy still serving is deleted for good, so the copies that stay are read back first; any found
 * wrong is dropped instead, and the next pass copies anew.
 */
function planDropLeaving(r: Replicas, deleting: readonly string[], checks: Checks): RepairAction {
  if (deleting.length > 0) {
    const ask = readBackFirst(r.healthy, checks);
    if (ask) return ask;
    if (goodAmong(r.healthy, checks).length < REPLICATION_FACTOR) {
      const bad = r.healthy.filter((n) => checks.get(n) === 'bad');
      if (bad.length === 0) return { kind: 'wait', reason: 'unproven' };
      return { kind: 'remove', nodeIds: bad, deleteFrom: bad, reason: 'badCopy' };
    }
  }
  return { kind: 'remove', nodeIds: r.leaving, deleteFrom: [...deleting], reason: 'leaving' };
}

/** One copy too many: a copy found wrong goes first, then one unread, then the least wanted. */
function planTrim(r: Replicas, nodes: Nodes, checks: Checks): RepairAction {
  const v = victimAmong(r.healthy, r.healthy, nodes, checks, REPLICATION_FACTOR);
  if ('kind' in v) return v;
  return v.proven ? { kind: 'trim', nodeId: v.victim } : { kind: 'wait', reason: 'unproven' };
}

/** A blob a worker reported holding (an inventory line). */
export interface HeldCopy {
  id: string;
  size: number;
  sha256: string;
}

export type HeldCopyAction =
  /** No record knows the id: deleted after the orphan grace (see planOrphan). */
  | { kind: 'orphan' }
  | { kind: 'kept' }
  | { kind: 'readBack'; nodeIds: string[] }
  | { kind: 'skip'; reason: 'unproven' | 'notBad' }
  /** Other bytes than the record's: the record forgets the copy if it lists it, then it is deleted. */
  | { kind: 'deleteCorrupt'; listed: boolean }
  /** An unlisted copy on a worker being emptied while two proven copies exist: deleted. */
  | { kind: 'deleteExcess' }
  | { kind: 'readopt' }
  /** The returning copy is recorded and the copy on `remove` (which replaced it) forgotten and deleted. */
  | { kind: 'replace'; remove: string }
  /** Re-adopted, but the copy too many stays: the copies beside it could not be proved. */
  | { kind: 'readoptOnly' };

/**
 * The copy of `line.id` a worker `self` reported holding, against the record: the rejoin decision
 * table. `checks` are the read-backs done so far (of `self` and of the record's healthy copies).
 */
export function planHeldCopy(
  self: NodeView,
  line: HeldCopy,
  object: ObjectView | null,
  nodes: Nodes,
  checks: Checks,
): HeldCopyAction {
  if (!object) return { kind: 'orphan' };
  const listed = object.replicas.includes(self.nodeId);
  if (object.sha256 !== line.sha256 || object.size !== line.size) {
    // The mismatch is the index's word; the bytes decide (a wrong index entry over right bytes
    // must not cost a copy).
    const ask = readBackFirst([self.nodeId], checks);
    if (ask) return ask;
    return checks.get(self.nodeId) === 'bad'
      ? { kind: 'deleteCorrupt', listed }
      : { kind: 'skip', reason: 'notBad' };
  }
  if (listed) return { kind: 'kept' };
  const healthy = object.replicas.filter((n) => nodes.get(n)?.state === 'up');
  if (healthy.length < REPLICATION_FACTOR) return { kind: 'readopt' };
  if (self.state !== 'up') {
    // Re-adopting a copy on a worker being emptied would only move it again.
    const ask = readBackFirst(healthy, checks);
    if (ask) return ask;
    const proven = goodAmong(healthy, checks).length >= REPLICATION_FACTOR;
    return proven ? { kind: 'deleteExcess' } : { kind: 'skip', reason: 'unproven' };
  }
  // Re-adopting gives up a copy known good (repair's copy was hash-checked on arrival) for one
  // that only claims its checksum from its index: its bytes are read back first.
  const askSelf = readBackFirst([self.nodeId], checks);
  if (askSelf) return askSelf;
  const own = checks.get(self.nodeId);
  if (own === 'bad') return { kind: 'deleteCorrupt', listed: false };
  if (own !== 'good') return { kind: 'skip', reason: 'unproven' };
  return planTrade(self.nodeId, healthy, nodes, checks);
}

/** A proven returning copy beside two healthy ones: one of those replaced it while it was away. */
function planTrade(self: string, healthy: string[], nodes: Nodes, checks: Checks): HeldCopyAction {
  const v = victimAmong([...healthy, self], healthy, nodes, checks, REPLICATION_FACTOR - 1);
  if ('kind' in v) return v;
  return v.proven ? { kind: 'replace', remove: v.victim } : { kind: 'readoptOnly' };
}

export type StrayAction =
  /** Nothing to do here any more (the copy is recorded, or its node is gone). */
  | { kind: 'forget' }
  | { kind: 'readBack'; nodeIds: string[] }
  | { kind: 'delete' }
  | { kind: 'readopt' }
  /** Neither re-adopted nor deleted: the copy could not be read back. */
  | { kind: 'unproven' };

/**
 * A blob on `node` past its orphan grace, against the record read as of everything committed.
 * Unknown to the record: deleted. A copy the record does not list (a stray) goes only once two
 * recorded copies were read back whole; otherwise the object needs it more than the disk needs
 * the space, if it holds this object's bytes (the id may have been uploaded again since).
 */
export function planStray(
  node: NodeView | null,
  object: ObjectView | null,
  nodes: Nodes,
  checks: Checks,
): StrayAction {
  if (!node || object?.replicas.includes(node.nodeId)) return { kind: 'forget' };
  if (!object) return { kind: 'delete' };
  const healthy = object.replicas.filter((n) => nodes.get(n)?.state === 'up');
  if (healthy.length >= REPLICATION_FACTOR) {
    const ask = readBackFirst(healthy, checks);
    if (ask) return ask;
    if (goodAmong(healthy, checks).length >= REPLICATION_FACTOR) return { kind: 'delete' };
  }
  if (node.state !== 'up') return { kind: 'forget' };
  const ask = readBackFirst([node.nodeId], checks);
  if (ask) return ask;
  const own = checks.get(node.nodeId);
  if (own === 'good') return { kind: 'readopt' };
  return own === 'bad' ? { kind: 'delete' } : { kind: 'unproven' };
}

/** An orphan's grace: an upload writes blobs before it commits their record. */
export function orphanDue(firstSeen: number, now: number, graceMs: number): boolean {
  return now - firstSeen >= graceMs;
}

export type MissingAction =
  | { kind: 'skip' }
  /** Ask the worker itself: the copy may have landed after its inventory was listed. */
  | { kind: 'ask' }
  | { kind: 'kept' }
  | { kind: 'drop' };

/**
 * A copy the record lists on a worker whose inventory lacks it. `held`: the worker's own answer
 * (absent until asked; `unknown` when it could not say).
 */
export function planMissing(
  object: ObjectView | null,
  listedOn: string,
  inventoryStartedAt: number,
  held?: 'yes' | 'no' | 'unknown',
): MissingAction {
  // Recorded after the inventory was read: its copy may have landed after the listing.
  if (!object?.replicas.includes(listedOn) || object.createdAt >= inventoryStartedAt) return { kind: 'skip' };
  if (held === undefined) return { kind: 'ask' };
  if (held === 'yes') return { kind: 'kept' };
  return held === 'no' ? { kind: 'drop' } : { kind: 'skip' };
}
