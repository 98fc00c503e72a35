// Server side of the manager<->manager transport. `POST /raft/stream`: a peer's long-lived stream
// of binary frames (inboundStream.ts), the way every message but a snapshot travels.
// `POST /raft/messages` with `{ messages }` as JSON: one batch from one peer, which is how a MsgSnap
// travels (alone, under RAFT_SNAPSHOT_HEADER). The host mounts both with `app.route('/', raftRoutes(...))`.

import type { HttpBindings } from '@hono/node-server';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import { Hono } from 'hono';
import { identityOf, mayActAs, requireCredential } from '../../http/clusterAuth.ts';
import { credentialsOf, type ManagerCredentials } from '../../http/credentials.ts';
import { BodyTooLarge, readBodyText } from '../../http/requestBody.ts';
import { createLogger, type Logger } from '../../logging.ts';
import type { Message, NodeId } from '../types.ts';
import { type ReplySink, serveInboundStream } from './inboundStream.ts';
import { MAX_RAFT_BODY_BYTES, MAX_SNAPSHOT_BODY_BYTES, messageBatchSchema } from './messageSchema.ts';

export const RAFT_MESSAGES_PATH = '/raft/messages';
export const RAFT_STREAM_PATH = '/raft/stream';
/** The member opening a stream: every frame on it must be `from` this id, which the credential must name. */
export const RAFT_FROM_HEADER = 'x-imgvault-raft-from';
export { RAFT_REPLIES_HEADER } from './inboundStream.ts';
/** Set on a request that carries one MsgSnap alone: its body may be up to MAX_SNAPSHOT_BODY_BYTES. */
export const RAFT_SNAPSHOT_HEADER = 'x-imgvault-raft-snapshot';

export interface RaftRoutesOptions {
  /** The single cluster secret; `credentials` wins when given. */
  secret?: string;
  /** Per-role credentials: a raft credential names its member, and every message must be `from` it. */
  credentials?: ManagerCredentials;
  /**
   * Called once per message, in the order the peer sent them. Must not block (the core's step is
   * sync). Returns false when the node refused the message (see messageFilter): the batch is then
   * answered 403.
   */
  onMessage: (msg: Message) => unknown;
  /**
   * Offers the response of `from`'s stream as the way back to it (HttpTransport.attachReplySink);
   * returns how to withdraw it, or null when the node takes no streams (stopping: answered 503).
   * Without it, streams carry messages one way only.
   */
  attachReplySink?: (from: NodeId, sink: ReplySink) => (() => void) | null;
  /** Bytes a stream's response may hold unsent before replies on it are refused. */
  maxUnsentReplyBytes?: number;
  /** Replies sent on a stream and nothing heard from its peer for this long: it is dropped (default 2 s; needs peerHeard). */
  idleTimeoutMs?: number;
  /**
   * What this node heard from each peer on any path (HttpTransport.noteHeard / heardCount): a peer
   * may answer on a stream of its own instead of on ours, and is alive all the same.
   */
  peerHeard?: { note: (from: NodeId) => void; count: (from: NodeId) => number };
  /**
   * Called when a peer's stream to this node breaks, not when it ends cleanly (inboundStream.ts
   * onEnd; HttpTransport.streamClosed reports the streams this node opens): a leader killed
   * outright breaks its streams at once, long before an election.
   */
  onStreamEnd?: (from: NodeId) => void;
  /** When set, a batch addressed to another node is refused (a stale peer URL after a membership change). */
  selfId?: NodeId;
  maxBodyBytes?: number;
  /** The limit for a request marked with RAFT_SNAPSHOT_HEADER (default MAX_SNAPSHOT_BODY_BYTES). */
  maxSnapshotBodyBytes?: number;
  log?: Logger;
}

function peerHeardOf(peerHeard: NonNullable<RaftRoutesOptions['peerHeard']>, from: NodeId) {
  return { noteHeard: () => peerHeard.note(from), heardCount: () => peerHeard.count(from) };
}

function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

export function raftRoutes(options: RaftRoutesOptions): Hono {
  const log = options.log ?? createLogger('raft-transport', options.selfId ? { nodeId: options.selfId } : {});
  const app = new Hono();

  // A raft credential counts only when it names this manager as its receiver.
  const raft = requireCredential(credentialsOf(options), ['raft'], options.selfId);

  // A starting manager's check that a peer takes its credential (bootstrapGuard.ts): 204 or 401,
  // and nothing that looks like a malformed batch in the peer's log.
  app.get(RAFT_MESSAGES_PATH, raft, (c) => c.body(null, 204));

  app.post(RAFT_STREAM_PATH, raft, (c) => {
    const env = c.env as Partial<HttpBindings> | undefined;
    if (!env?.incoming || !env.outgoing) {
      return c.json(errorBody('StreamUnsupported', 'raft streams need a Node HTTP server'), 501);
    }
    const from = c.req.header(RAFT_FROM_HEADER);
    if (!from)
      return c.json(errorBody('BadRequest', `a stream names its sender in ${RAFT_FROM_HEADER}`), 400);
    const identity = identityOf(c);
    if (!mayActAs(identity, from)) {
      log.warn(
        { event: 'raft.message_refused', reason: 'sender_mismatch', from, sender: identity?.id },
        'raft stream from another member than the credential names',
      );
      return c.json(
        errorBody('ForgedSender', `the credential names ${identity?.id}, the stream says it is from ${from}`),
        403,
      );
    }
    serveInboundStream(env.incoming, env.outgoing, {
      from,
      ...(options.selfId !== undefined ? { selfId: options.selfId } : {}),
      onMessage: options.onMessage,
      ...(options.attachReplySink ? { attachSink: options.attachReplySink } : {}),
      maxUnsentReplyBytes: options.maxUnsentReplyBytes ?? 4 * 1024 * 1024,
      idleTimeoutMs: options.idleTimeoutMs ?? 2_000,
      ...(options.peerHeard ? peerHeardOf(options.peerHeard, from) : {}),
      maxFrameBytes: options.maxBodyBytes ?? MAX_RAFT_BODY_BYTES,
      ...(options.onStreamEnd ? { onEnd: () => options.onStreamEnd?.(from) } : {}),
      log,
    });
    return RESPONSE_ALREADY_SENT;
  });

  app.post(RAFT_MESSAGES_PATH, raft, async (c) => {
    const snapshot = c.req.header(RAFT_SNAPSHOT_HEADER) === '1';
    const limit = snapshot
      ? (options.maxSnapshotBodyBytes ?? MAX_SNAPSHOT_BODY_BYTES)
      : (options.maxBodyBytes ?? MAX_RAFT_BODY_BYTES);
    let raw: unknown;
    try {
      raw = JSON.parse(await readBodyText(c, limit));
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        log.warn({ event: 'raft.transport.bad_message', reason: 'too_large' }, 'raft batch too large');
        c.header('connection', 'close');
        return c.json(errorBody('PayloadTooLarge', 'raft message batch exceeds the body limit'), 413);
      }
      log.warn(
        { event: 'raft.transport.bad_message', reason: 'json', err: String(err) },
        'malformed raft JSON',
      );
      return c.json(errorBody('BadJson', 'body is not valid JSON'), 400);
    }
    const parsed = messageBatchSchema.safeParse(raw);
    if (!parsed.success) {
      const issues = parsed.error.issues.slice(0, 5).map((i) => `${i.path.join('.')}: ${i.message}`);
      log.warn(
        { event: 'raft.transport.bad_message', reason: 'schema', issues },
        'invalid raft message batch',
      );
      return c.json(errorBody('BadMessage', issues.join('; ')), 400);
    }
    const { messages } = parsed.data;
    if (snapshot && (messages.length !== 1 || messages[0]!.type !== 'MsgSnap')) {
      log.warn(
        { event: 'raft.transport.bad_message', reason: 'snapshot_batch' },
        'snapshot request not one MsgSnap',
      );
      return c.json(errorBody('BadMessage', 'a snapshot request carries one MsgSnap and nothing else'), 400);
    }
    const { selfId } = options;
    const misaddressed = selfId === undefined ? undefined : messages.find((m) => m.to !== selfId);
    if (misaddressed) {
      log.warn(
        {
          event: 'raft.transport.bad_message',
          reason: 'recipient',
          to: misaddressed.to,
          from: misaddressed.from,
        },
        'raft message for another node',
      );
      return c.json(errorBody('WrongRecipient', `this is ${selfId}, not ${misaddressed.to}`), 400);
    }
    const identity = identityOf(c);
    const forged = messages.find((m) => !mayActAs(identity, m.from));
    if (forged) {
      log.warn(
        {
          event: 'raft.message_refused',
          reason: 'sender_mismatch',
          from: forged.from,
          sender: identity?.id,
          type: forged.type,
          term: forged.term,
        },
        'raft message from another member than the credential names',
      );
      return c.json(
        errorBody(
          'ForgedSender',
          `the credential names ${identity?.id}, the message says it is from ${forged.from}`,
        ),
        403,
      );
    }
    let refused: Message | undefined;
    try {
      for (const msg of messages) if (options.onMessage(msg) === false) refused ??= msg;
    } catch (err) {
      log.error({ event: 'raft.transport.deliver_failed', err }, 'raft message handler threw');
      return c.json(errorBody('InternalError', 'the node could not take the messages'), 500);
    }
    if (refused) {
      return c.json(
        errorBody(
          'RefusedMessage',
          `${selfId ?? 'this node'} refused ${refused.type} from ${refused.from} at term ${refused.term}: not a member, a term too far ahead, or not from the leader`,
        ),
        403,
      );
    }
    return c.body(null, 204);
  });

  return app;
}
