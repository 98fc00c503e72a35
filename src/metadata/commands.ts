// The commands of the replicated metadata state machine, and what applying each one returns.
//
// A command is validated by `commandSchema` on the proposer, before it enters the Raft log, and
// validated again when it is decoded for apply (so apply is total even on an entry written by a
// buggy or newer proposer: such an entry becomes an `InvalidCommand` no-op on every replica alike).
// Every timestamp is chosen by the proposer and carried inside the command: applying must be a pure
// function of (state, command), with no clock and no randomness, or the replicas would diverge.

import { z } from 'zod';
import { CRC32C_HEX_PATTERN } from '../protocol/checksums.ts';
import { NODE_ID_PATTERN, nodeIdSchema, objectIdSchema } from '../protocol/ids.ts';

export { NODE_ID_PATTERN, nodeIdSchema, OBJECT_ID_PATTERN, objectIdSchema } from '../protocol/ids.ts';
/** Bound on one object's replica list (the design keeps 2; repair may briefly hold one more). */
export const MAX_REPLICAS = 8;
/** Bound on the nodes one coalesced heartbeat summary carries. */
export const MAX_HEARTBEAT_NODES = 1024;

const zoneSchema = z.string().regex(NODE_ID_PATTERN, 'invalid zone');
/** Milliseconds since the Unix epoch, as read by the proposer's clock. */
const timestampSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const countSchema = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);
const workerUrlSchema = z
  .string()
  .max(2048)
  .regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'worker url must be http(s)://host[:port][/path]');
const sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'sha256 must be 64 lowercase hex digits');
/** CRC32C (Castagnoli) of an object's bytes: what workers check transfers and copies with. */
const crc32cSchema = z.string().regex(CRC32C_HEX_PATTERN, 'crc32c must be 8 lowercase hex digits');
const contentTypeSchema = z
  .string()
  .max(127)
  .regex(/^[a-z]+\/[A-Za-z0-9.+-]+$/, 'invalid content type');

/**
 * Optional on every command: the proposer's id for the proposal, which the node driver uses to hand
 * the apply result back to the caller waiting on it. It never influences the state.
 */
export const requestIdSchema = z.string().min(1).max(128);
const requestId = requestIdSchema.optional();

export const NODE_STATES = ['up', 'suspect', 'down', 'draining', 'drained'] as const;
export const nodeStateSchema = z.enum(NODE_STATES);
export type NodeState = z.infer<typeof nodeStateSchema>;

export const registerWorkerSchema = z.strictObject({
  type: z.literal('registerWorker'),
  requestId,
  nodeId: nodeIdSchema,
  url: workerUrlSchema,
  zone: zoneSchema,
  at: timestampSchema,
});

/** Moves a worker (new url) or re-labels its zone; liveness is `markNodeState`'s business. */
export const updateWorkerSchema = z
  .strictObject({
    type: z.literal('updateWorker'),
    requestId,
    nodeId: nodeIdSchema,
    url: workerUrlSchema.optional(),
    zone: zoneSchema.optional(),
  })
  .refine((c) => c.url !== undefined || c.zone !== undefined, 'updateWorker needs url or zone');

export const nodeUsageSchema = z.strictObject({
  nodeId: nodeIdSchema,
  diskUsed: countSchema,
  diskFree: countSchema,
  objectCount: countSchema,
  lastSeen: timestampSchema,
});
export type NodeUsage = z.infer<typeof nodeUsageSchema>;

/**
 * The leader coalesces the heartbeats it received since its last summary into one entry: the log
 * grows with the summary period, not with (workers x heartbeat rate).
 */
export const heartbeatSummarySchema = z.strictObject({
  type: z.literal('heartbeatSummary'),
  requestId,
  nodes: z
    .array(nodeUsageSchema)
    .min(1)
    .max(MAX_HEARTBEAT_NODES)
    .refine((nodes) => new Set(nodes.map((n) => n.nodeId)).size === nodes.length, 'duplicate nodeId'),
});

const replicaListSchema = z
  .array(nodeIdSchema)
  .min(1)
  .max(MAX_REPLICAS)
  .refine((ids) => new Set(ids).size === ids.length, 'replicas must be distinct nodes');

export const recordObjectSchema = z.strictObject({
  type: z.literal('recordObject'),
  requestId,
  id: objectIdSchema,
  size: countSchema,
  sha256: sha256Schema,
  /** Optional only so that entries logged before it existed still apply; uploads set it. */
  crc32c: crc32cSchema.optional(),
  contentType: contentTypeSchema,
  createdAt: timestampSchema,
  /** In placement order: primary first. */
  replicas: replicaListSchema,
});

export const deleteObjectSchema = z.strictObject({
  type: z.literal('deleteObject'),
  requestId,
  id: objectIdSchema,
});

/**
 * The object a replica change was decided on, as its proposer read it. An id can be deleted and
 * uploaded again (other bytes, or the same ones later) between that read and the commit, and its
 * copies can change under the plan (a new leader plans on a table that has not yet applied its
 * predecessor's last entries): the change is then refused (ObjectChanged) rather than applied to an
 * object it was never checked against, and the next pass plans again. Optional (and `replicas`
 * within it) only so that entries logged before they existed still apply; every proposer sets both.
 */
const expectedObjectSchema = z.strictObject({
  sha256: sha256Schema,
  createdAt: timestampSchema,
  replicas: replicaListSchema.optional(),
});
export type ExpectedObject = z.infer<typeof expectedObjectSchema>;

/** What a replica change decided on `object` expects to find when it applies. */
export function expectedOf(object: {
  sha256: string;
  createdAt: number;
  replicas: readonly string[];
}): ExpectedObject {
  return { sha256: object.sha256, createdAt: object.createdAt, replicas: [...object.replicas] };
}

export const addReplicaSchema = z.strictObject({
  type: z.literal('addReplica'),
  requestId,
  id: objectIdSchema,
  nodeId: nodeIdSchema,
  expected: expectedObjectSchema.optional(),
});

export const removeReplicaSchema = z.strictObject({
  type: z.literal('removeReplica'),
  requestId,
  id: objectIdSchema,
  nodeId: nodeIdSchema,
  expected: expectedObjectSchema.optional(),
});

/** Repair's commit: "copy made on `add`, dead copy on `remove` dropped", in one entry. */
export const replaceReplicaSchema = z
  .strictObject({
    type: z.literal('replaceReplica'),
    requestId,
    id: objectIdSchema,
    add: nodeIdSchema,
    remove: nodeIdSchema,
    expected: expectedObjectSchema.optional(),
  })
  .refine((c) => c.add !== c.remove, 'add and remove must differ');

/** Bound on the replica changes one `replicaChanges` entry carries. */
export const MAX_REPLICA_CHANGES = 256;

const replicaChangeSchema = z.discriminatedUnion('type', [
  addReplicaSchema,
  removeReplicaSchema,
  replaceReplicaSchema,
]);
export type ReplicaChange = z.infer<typeof replicaChangeSchema>;

/**
 * Many replica changes in one entry: repair commits a whole batch of copies with one Raft round
 * and one table write instead of one of each per object. Each change applies (or is rejected) as
 * if it were an entry of its own, in order, seeing the changes before it.
 */
export const replicaChangesSchema = z.strictObject({
  type: z.literal('replicaChanges'),
  requestId,
  changes: z.array(replicaChangeSchema).min(1).max(MAX_REPLICA_CHANGES),
});

export const markNodeStateSchema = z.strictObject({
  type: z.literal('markNodeState'),
  requestId,
  nodeId: nodeIdSchema,
  state: nodeStateSchema,
  at: timestampSchema,
  /**
   * The state the proposer decided on. When set and the node is in another state by the time the
   * entry applies, the change is refused (StateChanged): a drain that finishes must not overwrite
   * an undrain committed between its read and its commit. Entries without it apply as before.
   */
  expected: nodeStateSchema.optional(),
});

/**
 * Takes a drained worker out of the node table for good. Applies only while the node is `drained`
 * and the node index names no copy on it (checked here, at apply, the one place no replica change
 * can slip in between the check and the removal). The id is remembered (the `removedNodes` table):
 * a worker's credential cannot be revoked alone (docs/security.md), so a registration under a
 * removed id is refused rather than bringing the retired disk back as a worker.
 */
export const removeWorkerSchema = z.strictObject({
  type: z.literal('removeWorker'),
  requestId,
  nodeId: nodeIdSchema,
  at: timestampSchema,
});

// ---- Names: bucket + key -> content ---------------------------------------------------------

/** A bucket (a backup set): S3's alphabet, so the same names serve an S3 endpoint. */
export const BUCKET_PATTERN = /^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/;
/** S3's ETag forms: the MD5 of the bytes, or of the parts' MD5s with the part count. */
export const ETAG_PATTERN = /^[0-9a-f]{32}(-[1-9][0-9]{0,4})?$/;
/** Bound on a key, in UTF-8 bytes (S3's). */
export const MAX_KEY_BYTES = 1024;

/**
 * Why `key` is not a valid name key, or null. Keys become paths on restore: no empty, `.` or `..`
 * segment (so no leading, trailing or doubled `/`), no backslash, no control character (NUL
 * included: keys are LevelDB keys and listing cursors rely on keys never holding one), and
 * well-formed Unicode (a lone surrogate has no UTF-8 form, and LevelDB orders UTF-8 bytes).
 */
export function keyProblem(key: string): string | null {
  if (key.length === 0) return 'key is empty';
  if (Buffer.byteLength(key, 'utf8') > MAX_KEY_BYTES) return `key exceeds ${MAX_KEY_BYTES} UTF-8 bytes`;
  if (Buffer.from(key, 'utf8').toString('utf8') !== key) return 'key is not well-formed Unicode';
  if (/\p{Cc}/u.test(key)) return 'key contains a control character';
  if (key.includes('\\')) return "key contains '\\' (use '/' between folders)";
  for (const segment of key.split('/')) {
    if (segment === '') return "key has an empty segment (a leading, trailing or doubled '/')";
    if (segment === '.' || segment === '..') return `key has a '${segment}' segment`;
  }
  return null;
}

export const bucketSchema = z
  .string()
  .regex(
    BUCKET_PATTERN,
    'bucket must be 3-63 characters of a-z, 0-9, . and -, starting and ending alphanumeric',
  );
export const nameKeySchema = z.string().superRefine((key, ctx) => {
  const problem = keyProblem(key);
  if (problem !== null) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * Names `bucket/key` with the content whose sha256 is `sha256`. The content already stored under
 * another name (the content index) wins over `objectId`, in apply, so two uploads of the same bytes
 * racing each other still end as one stored object; `objectId` is then reported `unused` for its
 * proposer to delete. Without `objectId` the content must already be stored (the dedup path).
 */
export const putNameSchema = z.strictObject({
  type: z.literal('putName'),
  requestId,
  bucket: bucketSchema,
  key: nameKeySchema,
  sha256: sha256Schema,
  objectId: objectIdSchema.optional(),
  /** The file's modification time, kept for restore. */
  mtime: timestampSchema,
  at: timestampSchema,
  /** S3's ETag of the content (the MD5 of a single PUT, `<md5>-<parts>` of a multipart upload). */
  etag: z.string().regex(ETAG_PATTERN, 'etag must be an MD5 in hex, optionally -<parts>').optional(),
});

export const deleteNameSchema = z.strictObject({
  type: z.literal('deleteName'),
  requestId,
  bucket: bucketSchema,
  key: nameKeySchema,
});

/**
 * A bucket exists once created, or while it holds a name (names put before buckets could be
 * created still count): creating one that exists is a no-op that reports `created: false`.
 */
export const createBucketSchema = z.strictObject({
  type: z.literal('createBucket'),
  requestId,
  bucket: bucketSchema,
  at: timestampSchema,
});

/** Only an empty bucket goes: names are deleted one by one, through their own content release. */
export const deleteBucketSchema = z.strictObject({
  type: z.literal('deleteBucket'),
  requestId,
  bucket: bucketSchema,
});

// ---- S3 access keys -------------------------------------------------------------------------

/** AWS's shape (e.g. `AKIA` + 16 characters): upper-case letters and digits. */
export const ACCESS_KEY_ID_PATTERN = /^[A-Z0-9]{16,128}$/;
/** SigV4 keys its HMAC with the secret itself, so the secret is kept as is (docs/s3.md). */
export const SECRET_ACCESS_KEY_PATTERN = /^[A-Za-z0-9/+=_-]{16,128}$/;

export const putS3KeySchema = z.strictObject({
  type: z.literal('putS3Key'),
  requestId,
  accessKeyId: z.string().regex(ACCESS_KEY_ID_PATTERN, 'invalid access key id'),
  secretAccessKey: z.string().regex(SECRET_ACCESS_KEY_PATTERN, 'invalid secret access key'),
  at: timestampSchema,
});

export const deleteS3KeySchema = z.strictObject({
  type: z.literal('deleteS3Key'),
  requestId,
  accessKeyId: z.string().regex(ACCESS_KEY_ID_PATTERN, 'invalid access key id'),
});

// ---- Grouped commands ---------------------------------------------------------------------

/** Bounds on one `commandBatch` entry: the commands it groups, and its data in UTF-16 units. */
export const MAX_BATCH_COMMANDS = 256;
export const MAX_BATCH_CHARS = 1024 * 1024;

/**
 * Commands a batch may group. The bucket and key commands and `removeWorker` stay out: they are
 * rare, and each reads a prefix range (BucketNotEmpty, the node index) that rows planned earlier in
 * the same batch would not show.
 */
export const BATCHABLE_TYPES = [
  'registerWorker',
  'updateWorker',
  'heartbeatSummary',
  'recordObject',
  'deleteObject',
  'addReplica',
  'removeReplica',
  'replaceReplica',
  'replicaChanges',
  'markNodeState',
  'putName',
  'deleteName',
] as const;
export type BatchableType = (typeof BATCHABLE_TYPES)[number];

/**
 * Commands of many callers that reached the leader together, in one entry: one Raft round and one
 * table write for all of them. The inner commands stay unparsed here and are validated one by one
 * when applied, so one the schema refuses becomes an `InvalidCommand` result of its own and the
 * others still apply (each in order, seeing the ones before it).
 */
export const commandBatchSchema = z.strictObject({
  type: z.literal('commandBatch'),
  requestId,
  commands: z.array(z.unknown()).min(1).max(MAX_BATCH_COMMANDS),
});

export const commandSchema = z.discriminatedUnion('type', [
  registerWorkerSchema,
  updateWorkerSchema,
  heartbeatSummarySchema,
  recordObjectSchema,
  deleteObjectSchema,
  addReplicaSchema,
  removeReplicaSchema,
  replaceReplicaSchema,
  replicaChangesSchema,
  markNodeStateSchema,
  removeWorkerSchema,
  putNameSchema,
  deleteNameSchema,
  createBucketSchema,
  deleteBucketSchema,
  putS3KeySchema,
  deleteS3KeySchema,
  commandBatchSchema,
]);

export type Command = z.infer<typeof commandSchema>;
export type CommandType = Command['type'];
export type CommandOf<T extends CommandType> = Extract<Command, { type: T }>;

export type ParseCommandResult = { ok: true; command: Command } | { ok: false; message: string };

/** Validates untrusted input (e.g. a control loop's or an API handler's value) into a command. */
export function parseCommand(input: unknown): ParseCommandResult {
  const parsed = commandSchema.safeParse(input);
  if (parsed.success) return { ok: true, command: parsed.data };
  return { ok: false, message: z.prettifyError(parsed.error) };
}

/**
 * The entry `data` for a command. Validates first (throws on an invalid command: proposing one is
 * a programming error of the proposer) and serialises the parsed value, so unknown keys never
 * reach the log.
 */
export function encodeCommand(command: Command): string {
  return JSON.stringify(commandSchema.parse(command));
}

export type DecodeCommandResult =
  | { ok: true; command: Command }
  | { ok: false; message: string; requestId: string | null };

/** Decodes an entry's `data`; never throws. A rejected entry still yields its request id if it has one. */
export function decodeCommand(data: string): DecodeCommandResult {
  let raw: unknown;
  try {
    raw = JSON.parse(data);
  } catch {
    return { ok: false, message: 'entry data is not JSON', requestId: null };
  }
  const parsed = parseCommand(raw);
  if (parsed.ok) return parsed;
  const carried =
    typeof raw === 'object' && raw !== null ? (raw as { requestId?: unknown }).requestId : undefined;
  const id = requestIdSchema.safeParse(carried);
  return { ok: false, message: parsed.message, requestId: id.success ? id.data : null };
}

// ---- Records as the queries return them -------------------------------------------------------

export interface ObjectRecord {
  size: number;
  sha256: string;
  /**
   * CRC32C of the bytes (8 hex digits), what workers verify transfers and copies at rest with;
   * absent on objects recorded before it existed.
   */
  crc32c?: string;
  contentType: string;
  createdAt: number;
  /** Placement order: primary first. */
  replicas: string[];
}

export interface ObjectView extends ObjectRecord {
  id: string;
}

export interface NodeRecord {
  url: string;
  zone: string;
  state: NodeState;
  /** Proposer time of the last state change (or of registration). */
  stateSince: number;
  /** Last heartbeat as reported by the leader; registration counts as one. */
  lastSeen: number;
  /** As reported by the worker; the table-derived figures are in the counters. */
  diskUsed: number;
  diskFree: number;
  objectCount: number;
}

export interface NodeView extends NodeRecord {
  nodeId: string;
}

/** What is kept of a worker taken out of the node table (`removeWorker`). */
export interface RemovedNodeRecord {
  url: string;
  zone: string;
  /** Proposer time of the removal. */
  removedAt: number;
}

/** What a name holds: its content (by object id and sha256) and what a restore needs. */
export interface NameRecord {
  objectId: string;
  size: number;
  sha256: string;
  contentType: string;
  mtime: number;
  /** Proposer time of the last put. */
  updatedAt: number;
  /** S3's ETag, when the put carried one (names put before S3 existed have none). */
  etag?: string;
}

export interface NameView extends NameRecord {
  bucket: string;
  key: string;
}

// ---- Results --------------------------------------------------------------------------------

/**
 * Why a validated command did not fit the state it met. The command is then a no-op (apart from
 * advancing the applied index) on every replica, and its proposer receives the code.
 */
export type RejectionCode =
  | 'InvalidCommand'
  | 'ObjectExists'
  | 'ObjectNotFound'
  | 'NodeUnknown'
  | 'ReplicaExists'
  | 'ReplicaNotFound'
  | 'LastReplica'
  | 'TooManyReplicas'
  | 'ObjectChanged'
  | 'NodeLeaving'
  | 'StateChanged'
  | 'NodeNotDrained'
  | 'NodeHoldsCopies'
  | 'NodeRemoved'
  | 'ObjectReferenced'
  | 'ContentNotFound'
  | 'NameNotFound'
  | 'BucketNotFound'
  | 'BucketNotEmpty'
  | 'KeyExists'
  | 'KeyNotFound';

export interface Rejection<C extends RejectionCode = RejectionCode> {
  ok: false;
  code: C;
  message: string;
}

/** `NodeRemoved`: the id was taken out by `removeWorker` and never registers again. */
export type RegisterWorkerResult = { ok: true; created: boolean; node: NodeView } | Rejection<'NodeRemoved'>;
export type UpdateWorkerResult = { ok: true; node: NodeView } | Rejection<'NodeUnknown'>;
/** Nodes the summary named that the table does not know are skipped, not an error. */
export type HeartbeatSummaryResult = { ok: true; updated: number; unknown: string[] };
export type RecordObjectResult =
  | { ok: true; created: boolean; object: ObjectView }
  | Rejection<'ObjectExists' | 'NodeUnknown'>;
/** `replicas` are the nodes whose blob the caller should now delete. */
export type DeleteObjectResult =
  | { ok: true; object: ObjectView }
  | Rejection<'ObjectNotFound' | 'ObjectReferenced'>;
export type AddReplicaResult =
  | { ok: true; object: ObjectView }
  | Rejection<
      'ObjectNotFound' | 'ObjectChanged' | 'NodeUnknown' | 'NodeLeaving' | 'ReplicaExists' | 'TooManyReplicas'
    >;
export type RemoveReplicaResult =
  | { ok: true; object: ObjectView }
  | Rejection<'ObjectNotFound' | 'ObjectChanged' | 'ReplicaNotFound' | 'LastReplica'>;
export type ReplaceReplicaResult =
  | { ok: true; object: ObjectView }
  | Rejection<
      'ObjectNotFound' | 'ObjectChanged' | 'NodeUnknown' | 'NodeLeaving' | 'ReplicaExists' | 'ReplicaNotFound'
    >;
export type ReplicaChangeResult = AddReplicaResult | RemoveReplicaResult | ReplaceReplicaResult;
/** One result per change, in the order of `changes`. */
export type ReplicaChangesResult = { ok: true; results: ReplicaChangeResult[] };
export type MarkNodeStateResult =
  | { ok: true; node: NodeView; previous: NodeState }
  | Rejection<'NodeUnknown' | 'StateChanged'>;
/** `node`: the row as it was when removed. */
export type RemoveWorkerResult =
  | { ok: true; node: NodeView }
  | Rejection<'NodeUnknown' | 'NodeNotDrained' | 'NodeHoldsCopies'>;

/**
 * `deduplicated`: the content was stored under a name already. `released`: the object the name pointed at before, now named by nothing (its proposer deletes
 * it through deleteObject). `unused`: the proposed `objectId`, not used because the same content
 * was already stored (its proposer deletes it too).
 */
export type PutNameResult =
  | {
      ok: true;
      created: boolean;
      deduplicated: boolean;
      name: NameView;
      released: string | null;
      unused: string | null;
    }
  | Rejection<'ContentNotFound' | 'ObjectChanged'>;
export type DeleteNameResult =
  | { ok: true; name: NameView; released: string | null }
  | Rejection<'NameNotFound'>;

export type CreateBucketResult = { ok: true; created: boolean; bucket: string; createdAt: number };
export type DeleteBucketResult = { ok: true } | Rejection<'BucketNotFound' | 'BucketNotEmpty'>;
/** Putting the same id and secret again is a no-op; another secret under a taken id is refused. */
export type PutS3KeyResult = { ok: true; created: boolean } | Rejection<'KeyExists'>;
export type DeleteS3KeyResult = { ok: true } | Rejection<'KeyNotFound'>;

export interface S3KeyRecord {
  secretAccessKey: string;
  createdAt: number;
}

/** One result per inner command, in order: what that command alone would have returned. */
export type CommandBatchResult = {
  ok: true;
  results: (CommandResults[BatchableType] | Rejection<'InvalidCommand'>)[];
};

export interface CommandResults {
  registerWorker: RegisterWorkerResult;
  updateWorker: UpdateWorkerResult;
  heartbeatSummary: HeartbeatSummaryResult;
  recordObject: RecordObjectResult;
  deleteObject: DeleteObjectResult;
  addReplica: AddReplicaResult;
  removeReplica: RemoveReplicaResult;
  replaceReplica: ReplaceReplicaResult;
  replicaChanges: ReplicaChangesResult;
  markNodeState: MarkNodeStateResult;
  removeWorker: RemoveWorkerResult;
  putName: PutNameResult;
  deleteName: DeleteNameResult;
  createBucket: CreateBucketResult;
  deleteBucket: DeleteBucketResult;
  putS3Key: PutS3KeyResult;
  deleteS3Key: DeleteS3KeyResult;
  commandBatch: CommandBatchResult;
}

export type ResultOf<T extends CommandType> = CommandResults[T];

/** What applying one command entry returned: its command's result, or `InvalidCommand`. */
export type ApplyResult = CommandResults[CommandType] | Rejection<'InvalidCommand'>;

export function reject<C extends RejectionCode>(code: C, message: string): Rejection<C> {
  return { ok: false, code, message };
}
