// The bodies of the worker protocol (docs/worker-protocol.md) as zod schemas: the receiving end
// parses with them, the sending end builds the types they infer.

import { z } from 'zod';
import { NODE_ID_PATTERN, objectIdSchema, SHA256_HEX_PATTERN } from './ids.ts';

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** What a worker's disk holds, sent with every heartbeat and registration. */
export const diskUsageSchema = z.object({
  diskUsed: count,
  diskFree: count,
  blobCount: count,
  blobBytes: count,
});

/** POST HEARTBEAT_PATH. */
export const heartbeatSchema = diskUsageSchema.extend({
  id: z.string().regex(NODE_ID_PATTERN, 'invalid worker id'),
});

/** The first NDJSON line of POST REGISTER_PATH; inventory lines follow, ids ascending. */
export const registrationHeaderSchema = heartbeatSchema.extend({
  url: z
    .string()
    .max(2048)
    .regex(/^https?:\/\/[^\s/?#]+(\/[^\s?#]*)?$/, 'url must be http(s)://host[:port]'),
  zone: z.string().regex(NODE_ID_PATTERN, 'invalid zone'),
});

/** One blob a worker holds: a line of its registration and of GET INVENTORY_PATH. */
export const inventoryLineSchema = z.object({
  // Ids become file names and keys on every path that handles them: the object id pattern, or no entry.
  id: objectIdSchema,
  size: count,
  sha256: z.string().regex(SHA256_HEX_PATTERN),
});

/** Blob ids one wipe check or lost-copies report may carry. */
export const MAX_BLOB_LIST_IDS = 1_000;

/** A worker's list of its blob ids: a wipe check, or a report of copies its scrubber removed. */
export const blobListSchema = z.object({
  id: z.string().regex(NODE_ID_PATTERN, 'invalid worker id'),
  blobs: z.array(objectIdSchema).max(MAX_BLOB_LIST_IDS),
});

/** The manager's answer to a registration (fields it may add later are kept, not refused). */
export const registerAnswerSchema = z.looseObject({
  leaderId: z.string().optional(),
  heartbeatIntervalMs: z.number().int().min(50).max(60_000).optional(),
});

/** The manager's answer to a wipe check: the listed blobs the worker must keep. */
export const wipeCheckAnswerSchema = z.object({ keep: z.array(z.string()) });

/** Blobs one copy-batch request may name. */
export const MAX_COPY_BATCH = 256;

/** POST COPY_BATCH_PATH: send many blobs of this holder to one target; each succeeds or fails alone. */
export const copyBatchBodySchema = z.object({
  target: z.string().min(1).max(2048),
  blobs: z
    .array(z.object({ id: z.string().max(256), sha256: z.string().regex(SHA256_HEX_PATTERN).optional() }))
    .min(1)
    .max(MAX_COPY_BATCH)
    .refine((blobs) => new Set(blobs.map((b) => b.id)).size === blobs.length, 'blob ids must be distinct'),
});

export type DiskUsage = z.infer<typeof diskUsageSchema>;
export type Heartbeat = z.infer<typeof heartbeatSchema>;
export type RegistrationHeader = z.infer<typeof registrationHeaderSchema>;
export type InventoryLine = z.infer<typeof inventoryLineSchema>;
export type BlobList = z.infer<typeof blobListSchema>;
export type RegisterAnswer = z.infer<typeof registerAnswerSchema>;
export type CopyBatchBody = z.infer<typeof copyBatchBodySchema>;
