// The receiving end of a peer's Raft stream (`POST /raft/stream`): frames in on the request body,
// each checked (messageCodec) and handed to the node in order; this node's messages for that peer
// go back as frames on the response, for as long as the stream lasts. The response's headers wait
// for the first good frame, so a stream that starts malformed is answered with a plain 400 JSON
// error; a bad frame later ends the stream with an error frame. Either way the bad frame and all
// after it never reach the node.
//
// A network that drops bytes without closing shows no error here either: replies written into a
// dead socket succeed until the backlog limit. So a stream on which replies went out and nothing
// came in for `idleTimeoutMs` is dropped (a leader sends heartbeats, a follower answers them: a peer
// that still listens is always heard), and this node's messages for the peer take another way.

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Logger } from '../../logging.ts';
import type { Message, NodeId } from '../types.ts';
import {
  decodeMessage,
  encodeErrorFrame,
  FRAME_MESSAGE,
  FrameError,
  FrameSplitter,
  MAX_FRAME_BYTES,
} from './messageCodec.ts';

/**
 * On a stream's `200`: this receiver sends its messages for the sender back on the response, so a
 * sender that hears nothing there may take the path as dead. (Before the stream, a sender asked
 * with it for replies in the answer to a JSON batch; a receiver now ignores it there.)
 */
export const RAFT_REPLIES_HEADER = 'x-imgvault-raft-replies';

/** Where a node's messages for a peer go when that peer has a stream open to it. */
export interface ReplySink {
  /** Writes frames; false (and nothing written) when the stream is gone or too far behind. */
  write(frames: Buffer): boolean;
  /** Ends the stream (this node is stopping); its sender sees a clean end. */
  close(): void;
}

export interface InboundStreamOptions {
  /** Who opened the stream, as its credential proved (or, under the single secret, as it says). */
  from: NodeId;
  selfId?: NodeId;
  onMessage: (msg: Message) => unknown;
  /** Offers the response as a way back to `from`; returns how to withdraw it, or null to refuse the stream (stopping). */
  attachSink?: (from: NodeId, sink: ReplySink) => (() => void) | null;
  /** Bytes the response may hold unsent before further replies are refused (backpressure). */
  maxUnsentReplyBytes: number;
  /** Replies written and nothing heard from the peer for this long: the stream is dropped (with `heardCount` only). */
  idleTimeoutMs: number;
  /** Counts the peer as heard (a chunk came on this stream), for the checks on other paths to it. */
  noteHeard?: () => void;
  /**
   * How many times the peer was heard so far on any path (it may answer on a stream of its own
   * to us); by default the chunks on this stream.
   */
  heardCount?: () => number;
  maxFrameBytes?: number;
  /**
   * Called once when the stream breaks: an error, the connection closed before the body ended, the
   * idle drop, or a bad frame. A peer killed outright shows here first. A clean end is not a loss:
   * the leader ends each stream on purpose (outboundStream.ts, rotation), and its next stream may
   * already deliver frames, so counting that end as lost would mark a live leader silent.
   */
  onEnd?: () => void;
  log: Logger;
}

export function serveInboundStream(
  incoming: IncomingMessage,
  outgoing: ServerResponse,
  opts: InboundStreamOptions,
): void {
  const splitter = new FrameSplitter(opts.maxFrameBytes ?? MAX_FRAME_BYTES);
  let started = false;
  let done = false;
  let detach: (() => void) | null = null;
  let unanswered = false;
  let sentSinceCheck = false;
  let framesHeard = 0;
  let heardMark = 0;
  let idleTimer: NodeJS.Timeout | null = null;
  const heardCount = () => opts.heardCount?.() ?? framesHeard;

  const finish = (broken: boolean) => {
    if (done) return;
    done = true;
    detach?.();
    detach = null;
    if (idleTimer !== null) clearTimeout(idleTimer);
    idleTimer = null;
    if (broken) opts.onEnd?.();
  };
  // Drops the stream within one to two idle periods of the first unanswered reply.
  const checkIdle = () => {
    idleTimer = null;
    if (done) return;
    const heard = heardCount();
    if (heard === heardMark) {
      opts.log.warn(
        { event: 'raft.transport.stream_idle', from: opts.from, idleMs: opts.idleTimeoutMs },
        'replies sent on a raft stream and nothing heard back: dropping it',
      );
      finish(true);
      incoming.off('data', onData);
      outgoing.destroy();
      return;
    }
    unanswered = sentSinceCheck;
    if (!unanswered) return;
    sentSinceCheck = false;
    heardMark = heard;
    idleTimer = setTimeout(checkIdle, opts.idleTimeoutMs);
    idleTimer.unref();
  };
  const awaitAnswer = () => {
    if (unanswered) {
      sentSinceCheck = true;
      return;
    }
    unanswered = true;
    sentSinceCheck = false;
    heardMark = heardCount();
    idleTimer = setTimeout(checkIdle, opts.idleTimeoutMs);
    idleTimer.unref();
  };
  const fail = (status: number, code: string, message: string) => {
    opts.log.warn({ event: 'raft.transport.bad_message', reason: code, from: opts.from, message }, message);
    finish(true);
    incoming.off('data', onData);
    if (started) {
      outgoing.end(encodeErrorFrame(code, message), () => incoming.destroy());
      return;
    }
    const body = JSON.stringify({ error: { code, message } });
    outgoing.writeHead(status, { 'content-type': 'application/json', connection: 'close' });
    outgoing.end(body, () => incoming.destroy());
  };
  const start = (): boolean => {
    // Frames the node hands over while attaching (what waited for this peer) follow the headers.
    let early: Buffer[] | null = [];
    const sink: ReplySink = {
      write: (frames) => {
        if (done || outgoing.writableLength > opts.maxUnsentReplyBytes) return false;
        if (early !== null) early.push(frames);
        else writeNow(outgoing, frames);
        // Only a node that knows what it heard from the peer on every path can call a stream dead.
        if (opts.heardCount) awaitAnswer();
        return true;
      },
      close: () => {
        if (done) return;
        finish(false);
        incoming.off('data', onData);
        outgoing.end();
      },
    };
    const attached = opts.attachSink ? opts.attachSink(opts.from, sink) : () => {};
    if (attached === null) {
      fail(503, 'ShuttingDown', 'this node is stopping');
      return false;
    }
    detach = attached;
    started = true;
    outgoing.writeHead(200, {
      'content-type': 'application/octet-stream',
      ...(opts.attachSink ? { [RAFT_REPLIES_HEADER]: '1' } : {}),
    });
    outgoing.flushHeaders();
    for (const frames of early) outgoing.write(frames);
    early = null;
    return true;
  };
  const take = (body: Buffer): boolean => {
    const msg = decodeMessage(body);
    if (opts.selfId !== undefined && msg.to !== opts.selfId) {
      fail(400, 'WrongRecipient', `this is ${opts.selfId}, not ${msg.to}`);
      return false;
    }
    if (msg.from !== opts.from) {
      fail(403, 'ForgedSender', `the stream is from ${opts.from}, the message says it is from ${msg.from}`);
      return false;
    }
    if (!started && !start()) return false;
    // A refused message (messageFilter) is dropped and logged by the node; the stream goes on.
    opts.onMessage(msg);
    return true;
  };
  function onData(chunk: Buffer): void {
    if (done) return;
    framesHeard++;
    opts.noteHeard?.();
    splitter.push(chunk);
    try {
      for (let f = splitter.next(); f !== null; f = splitter.next()) {
        if (f.kind !== FRAME_MESSAGE) {
          fail(400, 'BadFrame', 'only message frames may be sent');
          return;
        }
        if (!take(f.body)) return;
      }
    } catch (err) {
      if (err instanceof FrameError) {
        fail(400, 'BadFrame', err.message);
        return;
      }
      opts.log.error({ event: 'raft.transport.deliver_failed', err }, 'raft message handler threw');
      fail(500, 'InternalError', 'the node could not take the messages');
    }
  }

  incoming.on('data', onData);
  incoming.on('end', () => {
    if (done) return;
    finish(false);
    if (started) outgoing.end();
    else fail(400, 'BadFrame', 'the stream ended before its first frame');
  });
  incoming.on('error', () => finish(true));
  outgoing.on('close', () => finish(true));
}

/**
 * Writes `bytes` on the response and hands them to the socket at once. ServerResponse.write on an
 * uncorked socket corks it until the next process.nextTick, and a follower's driver sends its
 * append answer in the middle of a microtask drain that goes on to apply committed entries and
 * advance: the answer, the critical path of a commit at low concurrency, waited for all of that.
 * Corked and uncorked here, the chunk's size line, bytes and end go out in one write, now.
 */
function writeNow(outgoing: ServerResponse, bytes: Buffer): void {
  const socket = outgoing.socket;
  socket?.cork();
  outgoing.write(bytes);
  socket?.uncork();
}
