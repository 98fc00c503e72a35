// Server side of snapshot transfer (etcd's rafthttp snapshotHandler, split in resumable pieces): a
// leader streams a snapshot file here apart from the message path, then delivers the MsgSnap that
// names it, which reaches the node only once the whole file is here and checked.
//
//   GET  /raft/snapshot?from&index&term&size&sha256          -> 200 { received }  bytes held
//   PUT  /raft/snapshot?from&index&term&size&sha256&offset   body: bytes offset.. (one piece)
//                                                            -> 200 { received }; 409 OffsetMismatch
//                                                               { received }; 422 DigestMismatch;
//                                                               411 without a content-length
//   POST /raft/snapshot/message  { message }                 -> 204; 409 SnapshotMissing; 403 refused
//
// Authenticated like /raft/messages: a raft credential naming this manager as its receiver (or the
// single secret), and `from` must be the member the credential names.

import { type Context, Hono } from 'hono';
import { z } from 'zod';
import { identityOf, mayActAs, requireCredential } from '../../http/clusterAuth.ts';
import { credentialsOf, type ManagerCredentials } from '../../http/credentials.ts';
import { BodyTooLarge, readBodyText } from '../../http/requestBody.ts';
import { createLogger, type Logger } from '../../logging.ts';
import { SnapshotFileError, type SnapshotFileRef, type SnapshotFolder } from '../snapshotFiles.ts';
import { missingSnapshotFile } from '../snapshots.ts';
import type { Message, NodeId } from '../types.ts';
import { MAX_NODE_ID_CHARS, MAX_RAFT_BODY_BYTES, messageSchema } from './messageSchema.ts';

export const RAFT_SNAPSHOT_PATH = '/raft/snapshot';
export const RAFT_SNAPSHOT_MESSAGE_PATH = '/raft/snapshot/message';
/** Largest piece one PUT may carry; a sender sends pieces of at most this. */
export const MAX_SNAPSHOT_PIECE_BYTES = 16 * 1024 * 1024;
/** Largest snapshot file a receiver takes (disk, not memory, is what it costs). */
export const MAX_SNAPSHOT_FILE_BYTES = 2 ** 40;

export interface SnapshotRoutesOptions {
  secret?: string;
  credentials?: ManagerCredentials;
  selfId: NodeId;
  folder: SnapshotFolder;
  /** The node's receive(): false when it refused the message. */
  onMessage: (msg: Message) => unknown;
  maxPieceBytes?: number;
  log?: Logger;
}

const decimal = z
  .string()
  .regex(/^\d{1,16}$/)
  .transform(Number);
const fileQuery = z.object({
  from: z.string().min(1).max(MAX_NODE_ID_CHARS),
  index: decimal,
  term: decimal,
  size: decimal.refine((n) => n <= MAX_SNAPSHOT_FILE_BYTES, 'snapshot file too large'),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});
const pieceQuery = fileQuery.extend({ offset: decimal });

function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

export function snapshotRoutes(options: SnapshotRoutesOptions): Hono {
  const log = options.log ?? createLogger('raft-transport', { nodeId: options.selfId });
  const app = new Hono();
  const raft = requireCredential(credentialsOf(options), ['raft'], options.selfId);
  const maxPiece = options.maxPieceBytes ?? MAX_SNAPSHOT_PIECE_BYTES;
  /** The file a request names, or an answer refusing it. */
  function fileOf(
    c: Context,
    schema: typeof fileQuery | typeof pieceQuery,
  ): { refusal: Response } | { refusal: null; ref: SnapshotFileRef; offset: number; from: NodeId } {
    const parsed = schema.safeParse(c.req.query());
    if (!parsed.success) {
      const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`);
      return { refusal: c.json(errorBody('BadRequest', issues.join('; ')), 400) };
    }
    if (!mayActAs(identityOf(c), parsed.data.from)) {
      return { refusal: c.json(errorBody('ForgedSender', 'the credential names another member'), 403) };
    }
    const { index, term, size, sha256 } = parsed.data;
    const ref: SnapshotFileRef = { index, term, size, sha256 };
    return {
      refusal: null,
      ref,
      offset: 'offset' in parsed.data ? (parsed.data.offset as number) : 0,
      from: parsed.data.from,
    };
  }

  app.get(RAFT_SNAPSHOT_PATH, raft, async (c) => {
    const found = fileOf(c, fileQuery);
    if (found.refusal !== null) return found.refusal;
    try {
      return c.json({ received: await options.folder.received(found.ref) });
    } catch (err) {
      // A whole `.part` that did not match its digest was removed: the sender starts over.
      if (err instanceof SnapshotFileError) return c.json({ received: err.received });
      throw err;
    }
  });

  app.put(RAFT_SNAPSHOT_PATH, raft, async (c) => {
    const found = fileOf(c, pieceQuery);
    if (found.refusal !== null) return found.refusal;
    const length = c.req.header('content-length');
    if (length === undefined) {
      c.header('connection', 'close');
      return c.json(errorBody('LengthRequired', 'a piece carries a content-length'), 411);
    }
    const declared = Number(length);
    if (!(declared <= maxPiece)) {
      c.header('connection', 'close');
      return c.json(
        errorBody('PayloadTooLarge', `a piece carries a content-length of at most ${maxPiece}`),
        413,
      );
    }
    const body = (c.req.raw.body ?? []) as AsyncIterable<Uint8Array>;
    try {
      const received = await options.folder.append(found.ref, found.offset, body, maxPiece);
      if (received === found.ref.size) {
        log.info(
          { event: 'raft.snapshot_received', from: found.from, index: found.ref.index, bytes: received },
          'snapshot file received and checked',
        );
      }
      return c.json({ received });
    } catch (err) {
      if (!(err instanceof SnapshotFileError)) {
        // A cut connection (the sender resumes from what the .part holds) or a disk error.
        log.warn(
          { event: 'raft.snapshot_piece_failed', from: found.from, index: found.ref.index, err: String(err) },
          'snapshot piece not written whole',
        );
        return c.json(errorBody('PieceFailed', 'the piece was not written whole'), 500);
      }
      log.warn(
        { event: 'raft.snapshot_piece_refused', from: found.from, index: found.ref.index, code: err.code },
        err.message,
      );
      const status = err.code === 'OffsetMismatch' ? 409 : err.code === 'DigestMismatch' ? 422 : 413;
      return c.json({ ...errorBody(err.code, err.message), received: err.received }, status);
    }
  });

  app.post(RAFT_SNAPSHOT_MESSAGE_PATH, raft, async (c) => {
    let msg: Message;
    try {
      const parsed = z
        .object({ message: messageSchema })
        .safeParse(JSON.parse(await readBodyText(c, MAX_RAFT_BODY_BYTES)));
      if (!parsed.success) return c.json(errorBody('BadMessage', 'not a { message } of a raft message'), 400);
      msg = parsed.data.message;
    } catch (err) {
      if (err instanceof BodyTooLarge)
        return c.json(errorBody('PayloadTooLarge', 'snapshot message too large'), 413);
      return c.json(errorBody('BadJson', 'body is not valid JSON'), 400);
    }
    if (msg.type !== 'MsgSnap' || msg.to !== options.selfId) {
      return c.json(errorBody('BadMessage', `only a MsgSnap for ${options.selfId} is delivered here`), 400);
    }
    if (!mayActAs(identityOf(c), msg.from)) {
      return c.json(errorBody('ForgedSender', 'the credential names another member'), 403);
    }
    const missing = missingSnapshotFile(msg, options.folder);
    if (missing !== null) return c.json(errorBody('SnapshotMissing', missing), 409);
    if (options.onMessage(msg) === false) {
      return c.json(
        errorBody('RefusedMessage', `${options.selfId} refused the snapshot from ${msg.from}`),
        403,
      );
    }
    return c.body(null, 204);
  });

  return app;
}
