// The transition function of the metadata state machine: (current tables, command) -> (rows to
// write, result). Deterministic: it reads only the tables and the command (no clock, no
// randomness, no iteration over unordered collections), so every replica writes the same bytes.
// A command that does not fit the state plans no write and returns a rejection code.

import {
  type BucketTableReader,
  createBucket,
  deleteBucket,
  deleteS3Key,
  putS3Key,
} from './applyBucketCommands.ts';
import {
  BATCHABLE_TYPES,
  type BatchableType,
  type Command,
  type CommandBatchResult,
  type CommandOf,
  type CommandResults,
  type ExpectedObject,
  MAX_REPLICAS,
  type NameRecord,
  type NameView,
  type NodeRecord,
  type ObjectRecord,
  type ObjectView,
  parseCommand,
  type Rejection,
  type ReplicaChange,
  type ReplicaChangeResult,
  reject,
} from './commands.ts';
import {
  bucketPrefix,
  CONTENT_COUNTER,
  type Counter,
  decodeCounter,
  decodeName,
  decodeNode,
  decodeObject,
  decodeRefs,
  encodeCounter,
  encodeName,
  encodeNode,
  encodeObject,
  encodeRefs,
  encodeRemovedNode,
  type MetadataTables,
  NAMES_COUNTER,
  NODE_INDEX_VALUE,
  nameKey,
  nodeCounterKey,
  nodeIndexKey,
  nodeIndexPrefix,
  type Table,
  type TableOp,
  TOTAL_COUNTER,
} from './tables.ts';

/** What planning reads: point lookups only, so a plan can also be made against planned rows. */
export type TableReader = Pick<MetadataTables, 'get' | 'getMany' | 'hasKeyWithPrefix'>;

export interface Plan<R> {
  ops: TableOp[];
  result: R;
}

function addCounter(key: string, was: Counter, d: Counter): Counter {
  const now = { objects: was.objects + d.objects, bytes: was.bytes + d.bytes };
  if (now.objects < 0 || now.bytes < 0) {
    // The planner only subtracts what it added for rows it found: a negative counter means
    // the tables were corrupted, and writing on would spread the damage.
    throw new Error(`metadata counter ${key} would go negative (${JSON.stringify(now)})`);
  }
  return now;
}

/** Counter changes of one command, turned into absolute rows once all are known. */
class CounterDeltas {
  private readonly deltas = new Map<string, Counter>();

  add(key: string, objects: number, bytes: number): void {
    const d = this.deltas.get(key) ?? { objects: 0, bytes: 0 };
    d.objects += objects;
    d.bytes += bytes;
    this.deltas.set(key, d);
  }

  /** Adds one object (sign 1) or removes it (sign -1) on each of `nodes`. */
  replicas(nodes: readonly string[], size: number, sign: 1 | -1): void {
    for (const nodeId of nodes) this.add(nodeCounterKey(nodeId), sign, sign * size);
  }

  async ops(tables: TableReader): Promise<TableOp[]> {
    const keys = [...this.deltas.keys()].sort();
    if (tables instanceof PlannedTables)
      return tables.counterOps(keys.map((key) => [key, this.deltas.get(key)!]));
    const current = await tables.getMany('counters', keys);
    return keys.map((key, i) => {
      const stored = current[i];
      const was = stored === undefined ? { objects: 0, bytes: 0 } : decodeCounter(stored);
      return counterOp(key, addCounter(key, was, this.deltas.get(key)!));
    });
  }
}

/** A zero counter is no row at all, so counters never depend on history, only on the state. */
function counterOp(key: string, now: Counter): TableOp {
  if (now.objects === 0 && now.bytes === 0) return { type: 'del', table: 'counters', key };
  return { type: 'put', table: 'counters', key, value: encodeCounter(now) };
}

function objectView(id: string, record: ObjectRecord): ObjectView {
  return { id, ...record };
}

async function readObject(tables: TableReader, id: string): Promise<ObjectRecord | null> {
  const raw = await tables.get('objects', id);
  return raw === undefined ? null : decodeObject(raw);
}

async function readNode(tables: TableReader, nodeId: string): Promise<NodeRecord | null> {
  const raw = await tables.get('nodes', nodeId);
  return raw === undefined ? null : decodeNode(raw);
}

/**
 * The rejection for a replica change whose object is no longer the one its proposer decided on
 * (see `expected` in commands.ts), or null when the change may go ahead.
 */
function changedSince(
  id: string,
  existing: ObjectRecord,
  expected: ExpectedObject | undefined,
): Rejection<'ObjectChanged'> | null {
  if (!expected) return null;
  if (existing.sha256 !== expected.sha256 || existing.createdAt !== expected.createdAt) {
    return reject(
      'ObjectChanged',
      `object ${id} was deleted and uploaded again since this change was decided`,
    );
  }
  const planned = expected.replicas;
  if (planned && !sameNodes(planned, existing.replicas)) {
    return reject(
      'ObjectChanged',
      `object ${id} is on ${existing.replicas.join(', ')}, not on ${planned.join(', ')} as planned`,
    );
  }
  return null;
}

/** The same nodes, in any order (a replica list holds each node once). */
function sameNodes(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((n) => b.includes(n));
}

/**
 * A copy can only be gained on a registered node, and (for changes that carry `expected`, the
 * ones proposed since this check exists: older entries must apply as they did when logged) not on
 * one that is down or drained. A draining node may still gain one: the drain moves it on.
 */
function unfitTarget(
  nodeId: string,
  node: NodeRecord | null,
  checkState: boolean,
): Rejection<'NodeUnknown' | 'NodeLeaving'> | null {
  if (node === null) return reject('NodeUnknown', `node ${nodeId} is not registered`);
  if (checkState && (node.state === 'down' || node.state === 'drained')) {
    return reject('NodeLeaving', `node ${nodeId} is ${node.state} and cannot take a replica`);
  }
  return null;
}

/** Nodes of `nodeIds` that are not in the node table, in the given order. */
async function unknownNodes(tables: TableReader, nodeIds: readonly string[]): Promise<string[]> {
  const rows = await tables.getMany('nodes', [...nodeIds]);
  return nodeIds.filter((_, i) => rows[i] === undefined);
}

function putObject(id: string, record: ObjectRecord): TableOp {
  return { type: 'put', table: 'objects', key: id, value: encodeObject(record) };
}

function putNode(nodeId: string, record: NodeRecord): TableOp {
  return { type: 'put', table: 'nodes', key: nodeId, value: encodeNode(record) };
}

function putIndex(nodeId: string, objectId: string): TableOp {
  return { type: 'put', table: 'nodeIndex', key: nodeIndexKey(nodeId, objectId), value: NODE_INDEX_VALUE };
}

function delIndex(nodeId: string, objectId: string): TableOp {
  return { type: 'del', table: 'nodeIndex', key: nodeIndexKey(nodeId, objectId) };
}

async function registerWorker(
  tables: TableReader,
  c: CommandOf<'registerWorker'>,
): Promise<Plan<CommandResults['registerWorker']>> {
  if ((await tables.get('removedNodes', c.nodeId)) !== undefined) {
    // Checked here, not only by the registry: a registration proposed before the removal committed
    // must not bring the row back once it applies after it.
    return {
      ops: [],
      result: reject(
        'NodeRemoved',
        `worker ${c.nodeId} was removed from the cluster; start it under a new id`,
      ),
    };
  }
  const existing = await readNode(tables, c.nodeId);
  let node: NodeRecord;
  if (existing === null) {
    node = {
      url: c.url,
      zone: c.zone,
      state: 'up',
      stateSince: c.at,
      lastSeen: c.at,
      diskUsed: 0,
      diskFree: 0,
      objectCount: 0,
    };
  } else {
    // A worker that registers again has come back: it is up, unless an operator is draining it,
    // which only an operator (markNodeState) undoes.
    const revived = existing.state === 'suspect' || existing.state === 'down';
    node = {
      ...existing,
      url: c.url,
      zone: c.zone,
      state: revived ? 'up' : existing.state,
      stateSince: revived ? c.at : existing.stateSince,
      lastSeen: Math.max(existing.lastSeen, c.at),
    };
  }
  return {
    ops: [putNode(c.nodeId, node)],
    result: { ok: true, created: existing === null, node: { nodeId: c.nodeId, ...node } },
  };
}

async function updateWorker(
  tables: TableReader,
  c: CommandOf<'updateWorker'>,
): Promise<Plan<CommandResults['updateWorker']>> {
  const existing = await readNode(tables, c.nodeId);
  if (existing === null)
    return { ops: [], result: reject('NodeUnknown', `node ${c.nodeId} is not registered`) };
  const node: NodeRecord = { ...existing, url: c.url ?? existing.url, zone: c.zone ?? existing.zone };
  return { ops: [putNode(c.nodeId, node)], result: { ok: true, node: { nodeId: c.nodeId, ...node } } };
}

async function heartbeatSummary(
  tables: TableReader,
  c: CommandOf<'heartbeatSummary'>,
): Promise<Plan<CommandResults['heartbeatSummary']>> {
  const rows = await tables.getMany(
    'nodes',
    c.nodes.map((n) => n.nodeId),
  );
  const ops: TableOp[] = [];
  const unknown: string[] = [];
  c.nodes.forEach((usage, i) => {
    const raw = rows[i];
    if (raw === undefined) {
      unknown.push(usage.nodeId);
      return;
    }
    const node = decodeNode(raw);
    // A summary older than what the table holds (e.g. from a deposed leader) carries stale usage.
    if (usage.lastSeen < node.lastSeen) return;
    ops.push(
      putNode(usage.nodeId, {
        ...node,
        lastSeen: usage.lastSeen,
        diskUsed: usage.diskUsed,
        diskFree: usage.diskFree,
        objectCount: usage.objectCount,
      }),
    );
  });
  return { ops, result: { ok: true, updated: ops.length, unknown } };
}

async function recordObject(
  tables: TableReader,
  c: CommandOf<'recordObject'>,
): Promise<Plan<CommandResults['recordObject']>> {
  const existing = await readObject(tables, c.id);
  if (existing !== null) {
    // Same id and same bytes: a retried upload (e.g. after a leader change) that already landed.
    if (existing.sha256 === c.sha256 && existing.size === c.size) {
      return { ops: [], result: { ok: true, created: false, object: objectView(c.id, existing) } };
    }
    return { ops: [], result: reject('ObjectExists', `object ${c.id} exists with other content`) };
  }
  const unknown = await unknownNodes(tables, c.replicas);
  if (unknown.length > 0) {
    return { ops: [], result: reject('NodeUnknown', `replica nodes not registered: ${unknown.join(', ')}`) };
  }
  const record: ObjectRecord = {
    size: c.size,
    sha256: c.sha256,
    ...(c.crc32c === undefined ? {} : { crc32c: c.crc32c }),
    contentType: c.contentType,
    createdAt: c.createdAt,
    replicas: [...c.replicas],
  };
  const counters = new CounterDeltas();
  counters.add(TOTAL_COUNTER, 1, c.size);
  counters.replicas(c.replicas, c.size, 1);
  const ops = [
    putObject(c.id, record),
    ...c.replicas.map((n) => putIndex(n, c.id)),
    ...(await counters.ops(tables)),
  ];
  return { ops, result: { ok: true, created: true, object: objectView(c.id, record) } };
}

async function deleteObject(
  tables: TableReader,
  c: CommandOf<'deleteObject'>,
): Promise<Plan<CommandResults['deleteObject']>> {
  const existing = await readObject(tables, c.id);
  if (existing === null) return { ops: [], result: reject('ObjectNotFound', `object ${c.id} not found`) };
  // A name never points at a missing object: content goes when its last name does (deleteName).
  if ((await tables.get('refs', c.id)) !== undefined) {
    return { ops: [], result: reject('ObjectReferenced', `object ${c.id} is the content of a name`) };
  }
  const counters = new CounterDeltas();
  counters.add(TOTAL_COUNTER, -1, -existing.size);
  counters.replicas(existing.replicas, existing.size, -1);
  const ops: TableOp[] = [
    { type: 'del', table: 'objects', key: c.id },
    ...existing.replicas.map((n) => delIndex(n, c.id)),
    ...(await counters.ops(tables)),
  ];
  return { ops, result: { ok: true, object: objectView(c.id, existing) } };
}

async function addReplica(
  tables: TableReader,
  c: CommandOf<'addReplica'>,
): Promise<Plan<CommandResults['addReplica']>> {
  const existing = await readObject(tables, c.id);
  if (existing === null) return { ops: [], result: reject('ObjectNotFound', `object ${c.id} not found`) };
  const changed = changedSince(c.id, existing, c.expected);
  if (changed !== null) return { ops: [], result: changed };
  if (existing.replicas.includes(c.nodeId)) {
    return {
      ops: [],
      result: reject('ReplicaExists', `object ${c.id} already has a replica on ${c.nodeId}`),
    };
  }
  const unfit = unfitTarget(c.nodeId, await readNode(tables, c.nodeId), c.expected !== undefined);
  if (unfit !== null) return { ops: [], result: unfit };
  if (existing.replicas.length >= MAX_REPLICAS) {
    return { ops: [], result: reject('TooManyReplicas', `object ${c.id} has ${MAX_REPLICAS} replicas`) };
  }
  const record: ObjectRecord = { ...existing, replicas: [...existing.replicas, c.nodeId] };
  const counters = new CounterDeltas();
  counters.replicas([c.nodeId], existing.size, 1);
  const ops = [putObject(c.id, record), putIndex(c.nodeId, c.id), ...(await counters.ops(tables))];
  return { ops, result: { ok: true, object: objectView(c.id, record) } };
}

async function removeReplica(
  tables: TableReader,
  c: CommandOf<'removeReplica'>,
): Promise<Plan<CommandResults['removeReplica']>> {
  const existing = await readObject(tables, c.id);
  if (existing === null) return { ops: [], result: reject('ObjectNotFound', `object ${c.id} not found`) };
  const changed = changedSince(c.id, existing, c.expected);
  if (changed !== null) return { ops: [], result: changed };
  if (!existing.replicas.includes(c.nodeId)) {
    return { ops: [], result: reject('ReplicaNotFound', `object ${c.id} has no replica on ${c.nodeId}`) };
  }
  if (existing.replicas.length === 1) {
    // An object record with no replica would claim bytes nobody holds: delete the object instead.
    return { ops: [], result: reject('LastReplica', `${c.nodeId} holds the last replica of ${c.id}`) };
  }
  const record: ObjectRecord = { ...existing, replicas: existing.replicas.filter((n) => n !== c.nodeId) };
  const counters = new CounterDeltas();
  counters.replicas([c.nodeId], existing.size, -1);
  const ops = [putObject(c.id, record), delIndex(c.nodeId, c.id), ...(await counters.ops(tables))];
  return { ops, result: { ok: true, object: objectView(c.id, record) } };
}

async function replaceReplica(
  tables: TableReader,
  c: CommandOf<'replaceReplica'>,
): Promise<Plan<CommandResults['replaceReplica']>> {
  const existing = await readObject(tables, c.id);
  if (existing === null) return { ops: [], result: reject('ObjectNotFound', `object ${c.id} not found`) };
  const changed = changedSince(c.id, existing, c.expected);
  if (changed !== null) return { ops: [], result: changed };
  if (!existing.replicas.includes(c.remove)) {
    return { ops: [], result: reject('ReplicaNotFound', `object ${c.id} has no replica on ${c.remove}`) };
  }
  if (existing.replicas.includes(c.add)) {
    return { ops: [], result: reject('ReplicaExists', `object ${c.id} already has a replica on ${c.add}`) };
  }
  const unfit = unfitTarget(c.add, await readNode(tables, c.add), c.expected !== undefined);
  if (unfit !== null) return { ops: [], result: unfit };
  // In place, so a repaired primary's slot keeps its position in the placement order.
  const record: ObjectRecord = {
    ...existing,
    replicas: existing.replicas.map((n) => (n === c.remove ? c.add : n)),
  };
  const counters = new CounterDeltas();
  counters.replicas([c.remove], existing.size, -1);
  counters.replicas([c.add], existing.size, 1);
  const ops = [
    putObject(c.id, record),
    delIndex(c.remove, c.id),
    putIndex(c.add, c.id),
    ...(await counters.ops(tables)),
  ];
  return { ops, result: { ok: true, object: objectView(c.id, record) } };
}

async function markNodeState(
  tables: TableReader,
  c: CommandOf<'markNodeState'>,
): Promise<Plan<CommandResults['markNodeState']>> {
  const existing = await readNode(tables, c.nodeId);
  if (existing === null)
    return { ops: [], result: reject('NodeUnknown', `node ${c.nodeId} is not registered`) };
  if (c.expected !== undefined && existing.state !== c.expected) {
    return {
      ops: [],
      result: reject('StateChanged', `node ${c.nodeId} is ${existing.state}, not ${c.expected}`),
    };
  }
  const changed = existing.state !== c.state;
  const node: NodeRecord = { ...existing, state: c.state, stateSince: changed ? c.at : existing.stateSince };
  return {
    ops: changed ? [putNode(c.nodeId, node)] : [],
    result: { ok: true, node: { nodeId: c.nodeId, ...node }, previous: existing.state },
  };
}

/**
 * Only a drained node whose index is empty goes: a copy a record still names there would point at
 * a node nobody can find. Its per-node counter is then absent too (counters are zero-free and
 * follow the index), so no counter changes. Never grouped in a batch (PlannedTables does not see
 * planned index rows through `hasKeyWithPrefix`); PendingWrites, across the entries of one apply,
 * does.
 */
async function removeWorker(
  tables: TableReader,
  c: CommandOf<'removeWorker'>,
): Promise<Plan<CommandResults['removeWorker']>> {
  const existing = await readNode(tables, c.nodeId);
  if (existing === null)
    return { ops: [], result: reject('NodeUnknown', `node ${c.nodeId} is not registered`) };
  if (existing.state !== 'drained') {
    return {
      ops: [],
      result: reject(
        'NodeNotDrained',
        `node ${c.nodeId} is ${existing.state}; only a drained worker can be removed (imgvault worker drain ${c.nodeId})`,
      ),
    };
  }
  const counter = await tables.get('counters', nodeCounterKey(c.nodeId));
  if (counter !== undefined || (await tables.hasKeyWithPrefix('nodeIndex', nodeIndexPrefix(c.nodeId)))) {
    return {
      ops: [],
      result: reject('NodeHoldsCopies', `object records still name copies on node ${c.nodeId}`),
    };
  }
  const removed = encodeRemovedNode({ url: existing.url, zone: existing.zone, removedAt: c.at });
  return {
    ops: [
      { type: 'del', table: 'nodes', key: c.nodeId },
      { type: 'put', table: 'removedNodes', key: c.nodeId, value: removed },
    ],
    result: { ok: true, node: { nodeId: c.nodeId, ...existing } },
  };
}

function nameView(bucket: string, key: string, record: NameRecord): NameView {
  return { bucket, key, ...record };
}

/**
 * Reference counts of objects by names, changed by one command. An object whose count reaches 0
 * leaves the refs and content tables and is reported released, for its proposer to delete.
 */
class RefDeltas {
  private readonly deltas = new Map<string, { delta: number; sha256: string; size: number }>();

  add(objectId: string, content: { sha256: string; size: number }, delta: number): void {
    const d = this.deltas.get(objectId) ?? { delta: 0, sha256: content.sha256, size: content.size };
    d.delta += delta;
    this.deltas.set(objectId, d);
  }

  /** Also counts named content (distinct objects) in `counters`: what names save is the difference. */
  async plan(tables: TableReader, counters: CounterDeltas): Promise<{ ops: TableOp[]; released: string[] }> {
    const ids = [...this.deltas.keys()].sort();
    const current = await tables.getMany('refs', ids);
    const ops: TableOp[] = [];
    const released: string[] = [];
    for (const [i, objectId] of ids.entries()) {
      const { delta, sha256, size } = this.deltas.get(objectId)!;
      if (delta === 0) continue;
      const stored = current[i];
      const was = stored === undefined ? 0 : decodeRefs(stored);
      const now = was + delta;
      if (now < 0) throw new Error(`metadata refs of ${objectId} would go negative (${now})`);
      const indexed = await tables.get('content', sha256);
      if (was === 0) counters.add(CONTENT_COUNTER, 1, size);
      if (now === 0) {
        counters.add(CONTENT_COUNTER, -1, -size);
        ops.push({ type: 'del', table: 'refs', key: objectId });
        if (indexed === objectId) ops.push({ type: 'del', table: 'content', key: sha256 });
        released.push(objectId);
        continue;
      }
      ops.push({ type: 'put', table: 'refs', key: objectId, value: encodeRefs(now) });
      if (indexed === undefined) ops.push({ type: 'put', table: 'content', key: sha256, value: objectId });
    }
    return { ops, released };
  }
}

async function putName(
  tables: TableReader,
  c: CommandOf<'putName'>,
): Promise<Plan<CommandResults['putName']>> {
  // The content index wins over the proposed object: the same bytes are stored once.
  const indexed = await tables.get('content', c.sha256);
  const targetId = indexed ?? c.objectId;
  const target = targetId === undefined ? null : await readObject(tables, targetId);
  if (targetId === undefined || target === null) {
    return { ops: [], result: reject('ContentNotFound', `no stored content has sha256 ${c.sha256}`) };
  }
  if (target.sha256 !== c.sha256) {
    return {
      ops: [],
      result: reject('ObjectChanged', `object ${targetId} does not hold sha256 ${c.sha256}`),
    };
  }
  const key = nameKey(c.bucket, c.key);
  const rawPrevious = await tables.get('names', key);
  const previous = rawPrevious === undefined ? null : decodeName(rawPrevious);
  const record: NameRecord = {
    objectId: targetId,
    size: target.size,
    sha256: target.sha256,
    contentType: target.contentType,
    mtime: c.mtime,
    updatedAt: c.at,
    ...(c.etag !== undefined ? { etag: c.etag } : {}),
  };
  const refs = new RefDeltas();
  refs.add(targetId, target, 1);
  if (previous !== null) refs.add(previous.objectId, previous, -1);
  const counters = new CounterDeltas();
  counters.add(NAMES_COUNTER, previous === null ? 1 : 0, target.size - (previous?.size ?? 0));
  const planned = await refs.plan(tables, counters);
  const unused =
    c.objectId !== undefined &&
    c.objectId !== targetId &&
    (await tables.get('refs', c.objectId)) === undefined
      ? c.objectId
      : null;
  const ops: TableOp[] = [
    { type: 'put', table: 'names', key, value: encodeName(record) },
    ...planned.ops,
    ...(await counters.ops(tables)),
  ];
  const result = {
    ok: true as const,
    created: previous === null,
    deduplicated: indexed !== undefined,
    name: nameView(c.bucket, c.key, record),
    released: planned.released[0] ?? null,
    unused,
  };
  return { ops, result };
}

async function deleteName(
  tables: TableReader,
  c: CommandOf<'deleteName'>,
): Promise<Plan<CommandResults['deleteName']>> {
  const key = nameKey(c.bucket, c.key);
  const raw = await tables.get('names', key);
  if (raw === undefined) {
    return { ops: [], result: reject('NameNotFound', `no key ${c.key} in bucket ${c.bucket}`) };
  }
  const existing = decodeName(raw);
  const refs = new RefDeltas();
  refs.add(existing.objectId, existing, -1);
  const counters = new CounterDeltas();
  counters.add(NAMES_COUNTER, -1, -existing.size);
  const planned = await refs.plan(tables, counters);
  const ops: TableOp[] = [
    { type: 'del', table: 'names', key },
    ...planned.ops,
    ...(await counters.ops(tables)),
  ];
  const name = nameView(c.bucket, c.key, existing);
  return { ops, result: { ok: true, name, released: planned.released[0] ?? null } };
}

/**
 * The tables as the ops planned so far would leave them, so the changes of one `replicaChanges` or
 * `commandBatch` entry each see the ones before it (several may touch the same counter row).
 * Rows read from the base are kept for the rest of the entry: nothing writes the tables while an
 * entry is planned, so a second read would return the same value (a batch of uploads reads the
 * same node rows once, not once per upload). Counter rows are kept decoded (add() takes a counter
 * op's value as counterOps() computed it) and written once, by `ops()`: every upload of a batch
 * changes the same few.
 */
export class PlannedTables implements TableReader {
  /** Per table, key -> the last op planned on that row (counters excepted). */
  private readonly planned = new Map<Table, Map<string, TableOp>>();
  /** Per table, key -> the base's value, for rows read and not planned since. */
  private readonly read = new Map<Table, Map<string, string | undefined>>();
  /** Counter rows planned, key -> value (zero: no row). */
  private readonly counters = new Map<string, Counter>();
  /** The value of each counter op counterOps() handed out, so that add() need not decode it. */
  private readonly staged = new WeakMap<TableOp, Counter>();

  constructor(private readonly base: TableReader) {}

  private static rows<V>(maps: Map<Table, Map<string, V>>, table: Table): Map<string, V> {
    let rows = maps.get(table);
    if (rows === undefined) {
      rows = new Map();
      maps.set(table, rows);
    }
    return rows;
  }

  add(ops: readonly TableOp[]): void {
    for (const op of ops) {
      if (op.table === 'counters') {
        const staged = this.staged.get(op);
        this.counters.set(
          op.key,
          staged ?? (op.type === 'put' ? decodeCounter(op.value) : { objects: 0, bytes: 0 }),
        );
      } else {
        PlannedTables.rows(this.planned, op.table).set(op.key, op);
      }
    }
  }

  /**
   * The ops that add `deltas` to the counter rows, in the given order (CounterDeltas sorts them).
   * They change nothing here until add() is given them, as any other op: a plan that drops them
   * (a rejection) leaves the counters as they were, as its entry of its own would.
   */
  async counterOps(deltas: readonly [string, Counter][]): Promise<TableOp[]> {
    const keys = deltas.map(([key]) => key);
    const unread = keys.filter((key) => !this.counters.has(key));
    const stored = new Map<string, string | undefined>();
    if (unread.length > 0) {
      const values = await this.getMany('counters', unread);
      for (const [i, key] of unread.entries()) stored.set(key, values[i]);
    }
    return deltas.map(([key, d]) => {
      const raw = stored.get(key);
      const was =
        this.counters.get(key) ?? (raw === undefined ? { objects: 0, bytes: 0 } : decodeCounter(raw));
      const now = addCounter(key, was, d);
      const op = counterOp(key, now);
      this.staged.set(op, now);
      return op;
    });
  }

  /**
   * One op per row, the last planned: the state a LevelDB batch of every planned op, applied in
   * order, leaves (in the order the rows were first planned, so the same on every replica).
   */
  ops(): TableOp[] {
    const ops: TableOp[] = [];
    for (const rows of this.planned.values()) for (const op of rows.values()) ops.push(op);
    for (const [key, c] of this.counters) ops.push(counterOp(key, c));
    return ops;
  }

  async get(table: Table, key: string): Promise<string | undefined> {
    return (await this.getMany(table, [key]))[0];
  }

  /** Only grouped commands are planned against planned rows, and none of them reads a prefix. */
  hasKeyWithPrefix(table: Table, prefix: string): Promise<boolean> {
    return this.base.hasKeyWithPrefix(table, prefix);
  }

  async getMany(table: Table, keys: string[]): Promise<(string | undefined)[]> {
    const planned = this.planned.get(table);
    const read = PlannedTables.rows(this.read, table);
    const missing: string[] = [];
    for (const k of keys) {
      if (!planned?.has(k) && !read.has(k) && !(table === 'counters' && this.counters.has(k)))
        missing.push(k);
    }
    if (missing.length > 0) {
      const values = await this.base.getMany(table, missing);
      for (const [i, k] of missing.entries()) read.set(k, values[i]);
    }
    return keys.map((k) => this.current(table, k));
  }

  /** A row as planned, else as read from the base (which getMany did first). */
  private current(table: Table, key: string): string | undefined {
    if (table === 'counters') {
      const c = this.counters.get(key);
      if (c !== undefined) return c.objects === 0 && c.bytes === 0 ? undefined : encodeCounter(c);
    }
    const op = this.planned.get(table)?.get(key);
    if (op !== undefined) return op.type === 'put' ? op.value : undefined;
    return this.read.get(table)?.get(key);
  }
}

async function replicaChanges(
  tables: TableReader,
  c: CommandOf<'replicaChanges'>,
): Promise<Plan<CommandResults['replicaChanges']>> {
  const planned = new PlannedTables(tables);
  const results: ReplicaChangeResult[] = [];
  for (const change of c.changes) {
    const plan = await planReplicaChange(planned, change);
    planned.add(plan.ops);
    results.push(plan.result);
  }
  return { ops: planned.ops(), result: { ok: true, results } };
}

function planReplicaChange(tables: TableReader, c: ReplicaChange): Promise<Plan<ReplicaChangeResult>> {
  switch (c.type) {
    case 'addReplica':
      return addReplica(tables, c);
    case 'removeReplica':
      return removeReplica(tables, c);
    case 'replaceReplica':
      return replaceReplica(tables, c);
  }
}

function isBatchable(c: Command): c is Extract<Command, { type: BatchableType }> {
  return (BATCHABLE_TYPES as readonly string[]).includes(c.type);
}

/**
 * Each inner command is parsed and planned as if it were an entry of its own, against the rows
 * the ones before it planned; one that is invalid or does not fit is its own rejection and plans
 * no write, so it fails no other.
 */
async function commandBatch(
  tables: TableReader,
  c: CommandOf<'commandBatch'>,
): Promise<Plan<CommandResults['commandBatch']>> {
  const planned = new PlannedTables(tables);
  const results: CommandBatchResult['results'] = [];
  for (const raw of c.commands) {
    const parsed = parseCommand(raw);
    if (!parsed.ok) {
      results.push(reject('InvalidCommand', parsed.message));
      continue;
    }
    if (!isBatchable(parsed.command)) {
      results.push(reject('InvalidCommand', `a ${parsed.command.type} command cannot be grouped`));
      continue;
    }
    const plan = await planCommand(planned, parsed.command);
    planned.add(plan.ops);
    results.push(plan.result as CommandResults[BatchableType]);
  }
  return { ops: planned.ops(), result: { ok: true, results } };
}

function bucketReader(tables: TableReader): BucketTableReader {
  return {
    get: (table, key) => tables.get(table, key),
    hasNameUnder: (bucket) => tables.hasKeyWithPrefix('names', bucketPrefix(bucket)),
  };
}

/** Plans one validated command against the live tables. Writes nothing itself. */
export async function planCommand(
  tables: TableReader,
  c: Command,
): Promise<Plan<CommandResults[Command['type']]>> {
  switch (c.type) {
    case 'registerWorker':
      return registerWorker(tables, c);
    case 'updateWorker':
      return updateWorker(tables, c);
    case 'heartbeatSummary':
      return heartbeatSummary(tables, c);
    case 'recordObject':
      return recordObject(tables, c);
    case 'deleteObject':
      return deleteObject(tables, c);
    case 'addReplica':
    case 'removeReplica':
    case 'replaceReplica':
      return planReplicaChange(tables, c);
    case 'replicaChanges':
      return replicaChanges(tables, c);
    case 'markNodeState':
      return markNodeState(tables, c);
    case 'removeWorker':
      return removeWorker(tables, c);
    case 'putName':
      return putName(tables, c);
    case 'deleteName':
      return deleteName(tables, c);
    case 'createBucket':
      return createBucket(bucketReader(tables), c);
    case 'deleteBucket':
      return deleteBucket(bucketReader(tables), c);
    case 'putS3Key':
      return putS3Key(bucketReader(tables), c);
    case 'deleteS3Key':
      return deleteS3Key(bucketReader(tables), c);
    case 'commandBatch':
      return commandBatch(tables, c);
  }
}
