// What a peer may send us, checked at the edge before anything reaches the Raft core. Bounds are
// generous (a batch of appends, a whole snapshot) but finite, matching the body limits below.

import { z } from 'zod';
import { MESSAGE_TYPES, type Message } from '../types.ts';

const MiB = 1024 * 1024;

/** Largest `POST /raft/messages` body the server accepts, but for a snapshot's. */
export const MAX_RAFT_BODY_BYTES = 64 * MiB;
/**
 * Largest body of a request that carries one MsgSnap alone (marked by RAFT_SNAPSHOT_HEADER): a
 * metadata snapshot takes about 380 bytes per image, so 64 MiB stopped at about 170,000 images.
 * Bounded by the longest string V8 makes (about 512 Mi characters), which the body is read into.
 */
export const MAX_SNAPSHOT_BODY_BYTES = 480 * MiB;
export const MAX_MESSAGES_PER_BATCH = 10_000;
export const MAX_ENTRIES_PER_MESSAGE = 100_000;
export const MAX_ENTRY_DATA_CHARS = 16 * MiB;
export const MAX_SNAPSHOT_DATA_CHARS = MAX_SNAPSHOT_BODY_BYTES;
export const MAX_NODE_ID_CHARS = 256;
export const MAX_CONTEXT_CHARS = 64 * 1024;
export const MAX_MEMBERS = 1_000;

const count = z.number().int().nonnegative();
/**
 * The largest term a peer may name: its successor is still a safe integer, so a node that adopted
 * it can campaign once more (the term-jump check in messageFilter keeps honest terms far below).
 */
export const MAX_TERM = Number.MAX_SAFE_INTEGER - 1;
const term = count.max(MAX_TERM);
const nodeId = z.string().min(1).max(MAX_NODE_ID_CHARS);

export const entrySchema = z.object({
  term,
  index: count,
  type: z.enum(['normal', 'confChange']),
  data: z.string().max(MAX_ENTRY_DATA_CHARS),
});

export const snapshotSchema = z.object({
  metadata: z.object({
    index: count,
    term,
    confState: z.object({
      voters: z.array(nodeId).max(MAX_MEMBERS),
      learners: z.array(nodeId).max(MAX_MEMBERS),
    }),
  }),
  data: z.string().max(MAX_SNAPSHOT_DATA_CHARS),
});

export const messageSchema = z.object({
  type: z.enum(MESSAGE_TYPES),
  from: nodeId,
  to: nodeId,
  term,
  logTerm: term.optional(),
  index: count.optional(),
  entries: z.array(entrySchema).max(MAX_ENTRIES_PER_MESSAGE).optional(),
  commit: count.optional(),
  reject: z.boolean().optional(),
  rejectHint: count.optional(),
  snapshot: snapshotSchema.optional(),
  context: z.string().max(MAX_CONTEXT_CHARS).optional(),
});

export const messageBatchSchema = z.object({
  messages: z.array(messageSchema).min(1).max(MAX_MESSAGES_PER_BATCH),
});

// Fails to compile if the schema and the Message type drift apart (a field added, dropped or retyped).
type Parsed = z.infer<typeof messageSchema>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
export const schemaMatchesMessage: Same<Parsed, Message> & Same<keyof Parsed, keyof Message> = true;
