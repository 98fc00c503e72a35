// Client side of the manager<->manager transport. send() only enqueues or writes: each peer has
// its own bounded queue and its own connections, so a dead or slow peer never delays the others.
//
// Every message but a snapshot travels as a binary frame (messageCodec.ts) on a stream: when the
// peer has a stream open to us, on that stream's response (a follower answers its leader on the
// leader's own stream); else on our own long-lived stream to the peer (outboundStream.ts), opened
// when there is something to send, reopened after a failure with backoff. Frames are not retried:
// Raft recovers lost messages itself (heartbeats, probes), and the core is told via onUnreachable.
// A MsgSnap goes alone in a JSON request of its own (`post`), as it always has.

import { Client, Pool } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../../http/clusterAuth.ts';
import { internalConnect } from '../../http/tls.ts';
import { createLogger, type Logger } from '../../logging.ts';
import type { Message, NodeId } from '../types.ts';
import type { ReplySink } from './inboundStream.ts';
import { decodeMessage, encodeMessageFrame, FrameError, isFramed, MAX_FRAME_BYTES } from './messageCodec.ts';
import { MAX_RAFT_BODY_BYTES, MAX_SNAPSHOT_BODY_BYTES, messageBatchSchema } from './messageSchema.ts';
import { OutboundStream } from './outboundStream.ts';
import {
  RAFT_FROM_HEADER,
  RAFT_MESSAGES_PATH,
  RAFT_REPLIES_HEADER,
  RAFT_SNAPSHOT_HEADER,
  RAFT_STREAM_PATH,
} from './raftRoutes.ts';

export interface HttpTransportOptions {
  id: NodeId;
  secret: string;
  /** What to present to `peer` instead of `secret` (a raft credential names its receiver). */
  credentialFor?: (peer: NodeId) => string;
  /** peerId -> base URL, e.g. `http://127.0.0.1:7001`. */
  peers?: Record<NodeId, string>;
  /** A request to this peer failed: the core moves the peer to probe (etcd's ReportUnreachable). */
  onUnreachable?: (peer: NodeId) => void;
  /** How sending a MsgSnap ended (etcd's ReportSnapshot). */
  onSnapshotStatus?: (peer: NodeId, ok: boolean) => void;
  /**
   * Offered every MsgSnap for a known peer first: true when it took it (a snapshot file sent on its
   * own path: snapshotSender.ts), false to send it here (the inline form).
   */
  sendSnapshot?: (msg: Message, peerUrl: string) => boolean;
  /** A message a peer sent us on the response of our stream (or of a snapshot request). */
  onReply?: (msg: Message) => void;
  /** Per-peer queue bound, in messages. */
  maxQueuedMessages?: number;
  /** Per-peer queue bound, in bytes (of frames, or of JSON for a snapshot). */
  maxQueuedBytes?: number;
  /** Largest MsgSnap sent, in bytes of JSON (default MAX_SNAPSHOT_BODY_BYTES less the envelope). */
  maxSnapshotBytes?: number;
  /** Bounds on one write to a stream (or one snapshot request); a single larger message still goes, alone. */
  maxBatchMessages?: number;
  maxBatchBytes?: number;
  /** How long a stream's answer headers, or a peer that takes no more bytes, may keep us waiting. */
  requestTimeoutMs?: number;
  /**
   * Frames sent on a stream (or on a peer's stream's response) and nothing heard back for this
   * long: the stream fails. About two election timeouts: a follower answers every heartbeat.
   */
  idleTimeoutMs?: number;
  /** A stream ends after this long, and the next one starts (a server may cap a request's life). */
  streamMaxAgeMs?: number;
  snapshotTimeoutMs?: number;
  backoffMinMs?: number;
  backoffMaxMs?: number;
  log?: Logger;
}

export interface TransportStats {
  /** Messages written to a stream, or in a snapshot request the peer accepted (2xx). */
  sent: number;
  /** Messages discarded before any attempt: queue full, unknown or removed peer, oversized. */
  dropped: number;
  /** Messages in failed snapshot requests, or queued for a stream that failed. */
  failed: number;
  /** Streams and snapshot requests that failed. */
  failedRequests: number;
  /** Messages waiting in all queues now. */
  queued: number;
}

interface Queued {
  msg: Message;
  json: string;
  bytes: number;
  /**
   * What it counts against the queue's byte bound: its bytes, except for a snapshot (one per peer
   * at a time: the core waits for its report), which a large one would otherwise push itself out of.
   */
  charged: number;
}

interface Peer {
  id: NodeId;
  url: string;
  pool: Pool;
  path: string;
  /** The stream's own connection (a Pool's one connection is the snapshot requests'). */
  streamClient: Client;
  streamPath: string;
  /** Frames waiting for the stream, oldest first. */
  frames: Buffer[];
  frameBytes: number;
  stream: OutboundStream | null;
  /** Set while a failed stream backs off; the next stream starts when it fires. */
  streamBackoff: NodeJS.Timeout | null;
  streamBackoffMs: number;
  /** When the current stream's answer headers came (Date.now()), or null before. */
  streamOpenedAt: number | null;
  /** Frames written to a stream the peer has not yet taken (no answer headers yet). */
  unconfirmed: number;
  /** The stream's answer headers came: what it carries counts as sent. */
  streamOpen: boolean;
  /** The response of the peer's stream to us, while it lasts: our frames for it go there first. */
  sink: ReplySink | null;
  /** Times this peer was heard on any path (our stream's response, its stream to us): the idle checks. */
  heard: number;
  /** Snapshot requests waiting, oldest first. */
  queue: Queued[];
  queuedBytes: number;
  /** Resolves the sender loop's wait for work or for the end of a backoff. */
  wake: (() => void) | null;
  stopped: boolean;
  /** In a failure streak: log once at its start and once at its end. */
  failing: boolean;
  inFlight: AbortController | null;
  loop: Promise<void>;
}

const DEFAULTS = {
  maxQueuedMessages: 4096,
  maxQueuedBytes: 2 * MAX_RAFT_BODY_BYTES,
  maxSnapshotBytes: MAX_SNAPSHOT_BODY_BYTES,
  maxBatchMessages: 512,
  maxBatchBytes: 4 * 1024 * 1024,
  requestTimeoutMs: 5_000,
  idleTimeoutMs: 2_000,
  streamMaxAgeMs: 60_000,
  snapshotTimeoutMs: 60_000,
  backoffMinMs: 50,
  backoffMaxMs: 1_000,
};

// The JSON wrapper `{"messages":[...]}` around the comma-joined messages.
const ENVELOPE_BYTES = '{"messages":[]}'.length;

export class HttpTransport {
  private readonly opts: typeof DEFAULTS;
  private readonly peers = new Map<NodeId, Peer>();
  private readonly log: Logger;
  private closed = false;
  private readonly counters = { sent: 0, dropped: 0, failed: 0, failedRequests: 0 };

  constructor(private readonly options: HttpTransportOptions) {
    this.opts = { ...DEFAULTS };
    for (const key of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
      const v = options[key];
      if (v !== undefined) {
        if (!(Number.isFinite(v) && v > 0))
          throw new Error(`HttpTransport: ${key} must be a positive number`);
        this.opts[key] = v;
      }
    }
    if (options.secret.length === 0) throw new Error('HttpTransport: cluster secret must not be empty');
    this.log = options.log ?? createLogger('raft-transport', { nodeId: options.id });
    for (const [id, url] of Object.entries(options.peers ?? {})) this.setPeer(id, url);
  }

  /** Adds a peer or changes its URL. Messages already queued for it stay queued. */
  setPeer(id: NodeId, url: string): void {
    if (this.closed) return;
    if (id === this.options.id) return;
    let target: URL;
    try {
      target = parsePeerUrl(url);
    } catch (err) {
      // A bad URL (e.g. from a conf change's context) must not crash the driver: the peer stays as it was.
      this.log.error(
        { event: 'raft.transport.bad_peer_url', peer: id, url, err: String(err) },
        'bad peer URL',
      );
      return;
    }
    const existing = this.peers.get(id);
    if (existing) {
      if (existing.url === url) return;
      const old = existing.pool;
      const oldClient = existing.streamClient;
      existing.url = url;
      existing.pool = newPool(target);
      existing.path = pathFor(target, RAFT_MESSAGES_PATH);
      existing.streamClient = newStreamClient(target);
      existing.streamPath = pathFor(target, RAFT_STREAM_PATH);
      existing.stream?.fail(new Error('peer moved'));
      existing.stream = null;
      old.close().catch(() => {});
      oldClient.destroy().catch(() => {});
      return;
    }
    const peer: Peer = {
      id,
      url,
      pool: newPool(target),
      path: pathFor(target, RAFT_MESSAGES_PATH),
      streamClient: newStreamClient(target),
      streamPath: pathFor(target, RAFT_STREAM_PATH),
      frames: [],
      frameBytes: 0,
      stream: null,
      streamBackoff: null,
      streamBackoffMs: 0,
      streamOpenedAt: null,
      unconfirmed: 0,
      streamOpen: false,
      sink: null,
      heard: 0,
      queue: [],
      queuedBytes: 0,
      wake: null,
      stopped: false,
      failing: false,
      inFlight: null,
      loop: Promise.resolve(),
    };
    this.peers.set(id, peer);
    peer.loop = this.runSender(peer).catch((err) => {
      this.log.error({ event: 'raft.transport.sender_crashed', peer: id, err }, 'raft sender loop crashed');
    });
  }

  removePeer(id: NodeId): void {
    const peer = this.peers.get(id);
    if (!peer) return;
    this.peers.delete(id);
    this.counters.dropped += peer.queue.length + peer.frames.length;
    peer.queue = [];
    peer.queuedBytes = 0;
    peer.frames = [];
    peer.frameBytes = 0;
    this.stopPeer(peer);
  }

  /** Sends or enqueues messages, each for its `to` peer; never waits and never throws. */
  send(messages: Message[]): void {
    const framed = new Map<Peer, Buffer[]>();
    for (const msg of messages) {
      const peer = this.peers.get(msg.to);
      if (this.closed || !peer) {
        this.counters.dropped++;
        if (!this.closed) {
          this.log.debug(
            { event: 'raft.transport.unknown_peer', to: msg.to, type: msg.type },
            'no URL for peer',
          );
          this.reportLater(msg, false);
        }
        continue;
      }
      if (msg.type === 'MsgSnap' && this.options.sendSnapshot?.(msg, peer.url)) continue;
      if (!isFramed(msg)) {
        this.enqueue(peer, msg);
        continue;
      }
      const frame = this.frameOf(peer, msg);
      if (frame === null) continue;
      const list = framed.get(peer);
      if (list) list.push(frame);
      else framed.set(peer, [frame]);
    }
    for (const [peer, frames] of framed) this.sendFrames(peer, frames);
  }

  /**
   * Takes the response of `from`'s stream to us as the way to send it frames, until the returned
   * function is called (the stream ended). Frames still waiting for our own stream go there now.
   * Null once closed: the stream is refused, so a stopping node holds no peer's connection open.
   */
  attachReplySink(from: NodeId, sink: ReplySink): (() => void) | null {
    if (this.closed) return null;
    const peer = this.peers.get(from);
    if (!peer) return () => {};
    peer.sink = sink;
    if (peer.stream === null && peer.frames.length > 0) {
      const n = peer.frames.length;
      if (sink.write(Buffer.concat(peer.frames, peer.frameBytes))) {
        this.counters.sent += n;
        peer.frames = [];
        peer.frameBytes = 0;
      }
    }
    return () => {
      if (peer.sink === sink) peer.sink = null;
    };
  }

  /** The peer was heard on a path the transport does not see (its stream to us: raftRoutes' peerHeard). */
  noteHeard(from: NodeId): void {
    const peer = this.peers.get(from);
    if (peer) peer.heard++;
  }

  heardCount(from: NodeId): number {
    return this.peers.get(from)?.heard ?? 0;
  }

  stats(): TransportStats {
    let queued = 0;
    for (const p of this.peers.values()) queued += p.queue.length + p.frames.length;
    return { ...this.counters, queued };
  }

  /** The frame for `msg`, or null (counted, logged, reported) when none can be made or it is too large. */
  private frameOf(peer: Peer, msg: Message): Buffer | null {
    let frame: Buffer | null = null;
    try {
      frame = encodeMessageFrame(msg);
    } catch {
      // A RangeError: larger than the largest Buffer, so past any limit anyway.
    }
    if (frame !== null && frame.length - 4 <= MAX_FRAME_BYTES) return frame;
    this.counters.dropped++;
    this.log.error(
      {
        event: 'raft.transport.message_too_large',
        to: peer.id,
        type: msg.type,
        bytes: frame?.length ?? null,
        limit: MAX_FRAME_BYTES,
      },
      'raft message exceeds the frame limit',
    );
    this.reportLater(msg, false);
    return null;
  }

  /** One Ready's frames for a peer: on its stream to us if it has one and keeps up, else on ours. */
  private sendFrames(peer: Peer, frames: Buffer[]): void {
    if (peer.frames.length === 0 && peer.sink !== null) {
      const bytes = frames.length === 1 ? frames[0]! : Buffer.concat(frames);
      if (peer.sink.write(bytes)) {
        this.counters.sent += frames.length;
        return;
      }
    }
    for (const f of frames) {
      peer.frames.push(f);
      peer.frameBytes += f.length;
    }
    while (peer.frames.length > this.opts.maxQueuedMessages || peer.frameBytes > this.opts.maxQueuedBytes) {
      peer.frameBytes -= peer.frames.shift()!.length;
      this.counters.dropped++;
    }
    this.startStream(peer);
  }

  /** Starts the stream to `peer` if it has none and is not backing off; else wakes the one there is. */
  private startStream(peer: Peer): void {
    if (peer.stream !== null) {
      if (!peer.stream.isEnded) {
        peer.stream.kick();
        return;
      }
      // A failed stream is not replaced: streamClosed reports it and backs off first.
      if (peer.stream.isFailed) return;
      // An ending stream (its maximum age) still drains its answer; the next one queues behind it.
    }
    if (peer.stopped || this.closed || peer.streamBackoff !== null || peer.frames.length === 0) return;
    const stream = new OutboundStream({
      client: peer.streamClient,
      path: peer.streamPath,
      headers: {
        'content-type': 'application/octet-stream',
        [CLUSTER_SECRET_HEADER]: this.options.credentialFor?.(peer.id) ?? this.options.secret,
        [RAFT_FROM_HEADER]: this.options.id,
      },
      pull: () => this.pullFrames(peer),
      onOpen: () => this.streamOpened(peer),
      onFrame: (body) => this.onStreamFrame(peer, body),
      timeoutMs: this.opts.requestTimeoutMs,
      idleTimeoutMs: this.opts.idleTimeoutMs,
      heardCount: () => peer.heard,
      maxAgeMs: this.opts.streamMaxAgeMs,
    });
    peer.stream = stream;
    peer.streamOpen = false;
    stream.closed.then((error) => this.streamClosed(peer, stream, error));
  }

  /** Up to one batch of the queued frames, as one buffer. */
  private pullFrames(peer: Peer): Buffer | null {
    if (peer.frames.length === 0) return null;
    let n = 0;
    let bytes = 0;
    while (n < peer.frames.length && n < this.opts.maxBatchMessages) {
      const len = peer.frames[n]!.length;
      if (n > 0 && bytes + len > this.opts.maxBatchBytes) break;
      bytes += len;
      n++;
    }
    const taken = peer.frames.splice(0, n);
    peer.frameBytes -= bytes;
    if (peer.streamOpen) this.counters.sent += n;
    else peer.unconfirmed += n;
    return n === 1 ? taken[0]! : Buffer.concat(taken, bytes);
  }

  private streamOpened(peer: Peer): void {
    peer.streamOpen = true;
    this.counters.sent += peer.unconfirmed;
    peer.unconfirmed = 0;
    // The backoff resets only once the stream has lived (streamClosed): a peer that takes a stream
    // and refuses a later frame would otherwise get a new stream every backoffMinMs.
    peer.streamOpenedAt = Date.now();
    if (peer.failing) {
      peer.failing = false;
      this.log.info({ event: 'raft.transport.peer_recovered', peer: peer.id }, 'peer reachable again');
    }
  }

  private streamClosed(peer: Peer, stream: OutboundStream, error: string | null): void {
    if (peer.stream !== stream) {
      // Replaced meanwhile (the peer moved; a stream past its age): its successor owns the queue and
      // the backoff, but a failure (an ended stream that never finished) still reaches the core.
      if (error !== null && !peer.stopped && !this.closed) {
        this.counters.failedRequests++;
        this.notifyUnreachable(peer.id);
      }
      return;
    }
    peer.stream = null;
    peer.streamOpen = false;
    const lived = peer.streamOpenedAt === null ? 0 : Date.now() - peer.streamOpenedAt;
    peer.streamOpenedAt = null;
    if (lived >= this.opts.backoffMaxMs) peer.streamBackoffMs = 0;
    if (peer.stopped || this.closed) return;
    if (error === null) {
      this.startStream(peer);
      return;
    }
    // What waited for this stream is stale by the time a next one is up: Raft resends what matters.
    this.counters.failed += peer.frames.length + peer.unconfirmed;
    peer.unconfirmed = 0;
    this.counters.failedRequests++;
    peer.frames = [];
    peer.frameBytes = 0;
    if (!peer.failing) {
      peer.failing = true;
      this.log.warn(
        { event: 'raft.transport.send_failed', peer: peer.id, url: peer.url, err: error },
        'raft stream to peer failed',
      );
    }
    this.notifyUnreachable(peer.id);
    const o = this.opts;
    peer.streamBackoffMs = Math.min(o.backoffMaxMs, Math.max(o.backoffMinMs, peer.streamBackoffMs * 2));
    peer.streamBackoff = setTimeout(() => {
      peer.streamBackoff = null;
      this.startStream(peer);
    }, peer.streamBackoffMs);
  }

  /** A frame on our stream's response: checked like any message from that peer, then delivered. */
  private onStreamFrame(peer: Peer, body: Buffer): void {
    peer.heard++;
    let msg: Message;
    try {
      msg = decodeMessage(body);
    } catch (err) {
      const reason = err instanceof FrameError ? err.message : String(err);
      this.log.warn({ event: 'raft.transport.bad_reply', peer: peer.id, reason }, 'invalid frame from peer');
      return;
    }
    this.deliverReply(peer, msg);
  }

  /** Stops every sender loop, aborts requests in flight and closes the connections. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const peers = [...this.peers.values()];
    this.peers.clear();
    for (const p of peers) this.stopPeer(p);
    await Promise.all(peers.map((p) => p.loop));
  }

  private enqueue(peer: Peer, msg: Message): void {
    const isSnapshot = msg.type === 'MsgSnap';
    const limit = isSnapshot ? this.opts.maxSnapshotBytes : MAX_RAFT_BODY_BYTES;
    let json: string | null = null;
    try {
      json = JSON.stringify(msg);
    } catch {
      // A RangeError: longer than the longest string V8 makes, so past any limit anyway.
    }
    const bytes = json === null ? Number.POSITIVE_INFINITY : Buffer.byteLength(json);
    if (json === null || bytes + ENVELOPE_BYTES > limit) {
      // The peer would refuse it with 413; dropping here keeps the error local and visible.
      this.counters.dropped++;
      this.log.error(
        { event: 'raft.transport.message_too_large', to: peer.id, type: msg.type, bytes, limit },
        'raft message exceeds the body limit',
      );
      this.reportLater(msg, false);
      return;
    }
    const charged = isSnapshot ? 0 : bytes;
    peer.queue.push({ msg, json, bytes, charged });
    peer.queuedBytes += charged;
    while (peer.queue.length > this.opts.maxQueuedMessages || peer.queuedBytes > this.opts.maxQueuedBytes) {
      // Oldest first, sparing snapshots (expensive to regenerate); if only snapshots are left, the oldest goes.
      const victim = peer.queue.findIndex((q) => q.msg.type !== 'MsgSnap');
      const [gone] = peer.queue.splice(Math.max(victim, 0), 1);
      if (!gone) break;
      peer.queuedBytes -= gone.charged;
      this.counters.dropped++;
      if (gone.msg.type === 'MsgSnap') this.reportLater(gone.msg, true);
    }
    peer.wake?.();
  }

  /** Reports a message that never left: as unreachable, and as a failed snapshot for MsgSnap. */
  private reportLater(msg: Message, knownPeer: boolean): void {
    // Deferred so a callback never runs inside the caller's send() (the driver is mid-Ready).
    setImmediate(() => {
      if (this.closed) return;
      if (!knownPeer) this.notifyUnreachable(msg.to);
      if (msg.type === 'MsgSnap') this.notifySnapshot(msg.to, false);
    });
  }

  /** Takes the next request's worth from the head of the queue: a MsgSnap alone, else a batch. */
  private takeBatch(peer: Peer): Queued[] {
    const head = peer.queue[0];
    if (!head) return [];
    let n = 1;
    let bytes = head.bytes;
    if (head.msg.type !== 'MsgSnap') {
      while (n < peer.queue.length && n < this.opts.maxBatchMessages) {
        const next = peer.queue[n]!;
        if (next.msg.type === 'MsgSnap' || bytes + 1 + next.bytes > this.opts.maxBatchBytes) break;
        bytes += 1 + next.bytes;
        n++;
      }
    }
    const batch = peer.queue.splice(0, n);
    for (const q of batch) peer.queuedBytes -= q.charged;
    return batch;
  }

  private async runSender(peer: Peer): Promise<void> {
    let backoff = 0;
    while (!peer.stopped) {
      if (peer.queue.length === 0) {
        await this.pause(peer, null);
        continue;
      }
      const batch = this.takeBatch(peer);
      const isSnapshot = batch[0]!.msg.type === 'MsgSnap';
      const error = await this.post(peer, batch, isSnapshot);
      if (peer.stopped) return;
      if (error === null) {
        this.counters.sent += batch.length;
        if (isSnapshot) this.notifySnapshot(peer.id, true);
        if (peer.failing) {
          peer.failing = false;
          this.log.info({ event: 'raft.transport.peer_recovered', peer: peer.id }, 'peer reachable again');
        }
        backoff = 0;
        continue;
      }
      this.counters.failed += batch.length;
      this.counters.failedRequests++;
      if (!peer.failing) {
        peer.failing = true;
        this.log.warn(
          {
            event: 'raft.transport.send_failed',
            peer: peer.id,
            url: peer.url,
            err: error,
            messages: batch.length,
          },
          'raft request to peer failed',
        );
      }
      this.notifyUnreachable(peer.id);
      if (isSnapshot) this.notifySnapshot(peer.id, false);
      backoff = Math.min(this.opts.backoffMaxMs, Math.max(this.opts.backoffMinMs, backoff * 2));
      await this.pause(peer, backoff);
    }
  }

  /** Waits for new work (ms null) or for `ms` to pass; either way, stopping the peer ends the wait. */
  private pause(peer: Peer, ms: number | null): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        if (timer) clearTimeout(timer);
        peer.wake = null;
        resolve();
      };
      if (ms === null) {
        peer.wake = done;
      } else {
        timer = setTimeout(done, ms);
        // Only a stop may cut a backoff short, not new messages.
        peer.wake = () => {
          if (peer.stopped) done();
        };
      }
    });
  }

  /** One request; resolves to null on a 2xx, else a short description of the failure. */
  private async post(peer: Peer, batch: Queued[], isSnapshot: boolean): Promise<string | null> {
    const body = `{"messages":[${batch.map((q) => q.json).join(',')}]}`;
    const abort = new AbortController();
    peer.inFlight = abort;
    const timeoutMs = isSnapshot ? this.opts.snapshotTimeoutMs : this.opts.requestTimeoutMs;
    const timer = setTimeout(() => abort.abort(new Error(`timed out after ${timeoutMs}ms`)), timeoutMs);
    try {
      const res = await peer.pool.request({
        path: peer.path,
        method: 'POST',
        headers: {
          'content-type': 'application/json',
          [CLUSTER_SECRET_HEADER]: this.options.credentialFor?.(peer.id) ?? this.options.secret,
          ...(isSnapshot ? { [RAFT_SNAPSHOT_HEADER]: '1' } : { [RAFT_REPLIES_HEADER]: '1' }),
        },
        body,
        signal: abort.signal,
      });
      if (res.statusCode === 200) {
        this.deliverReplies(peer, await res.body.text());
        return null;
      }
      if (res.statusCode >= 200 && res.statusCode < 300) {
        await res.body.dump();
        return null;
      }
      const text = (await res.body.text()).slice(0, 200);
      return `HTTP ${res.statusCode}: ${text}`;
    } catch (err) {
      const reason = abort.signal.aborted ? abort.signal.reason : err;
      return reason instanceof Error ? reason.message : String(reason);
    } finally {
      clearTimeout(timer);
      peer.inFlight = null;
    }
  }

  /** Replies that came back in an answer: checked like any message from that peer, then delivered. */
  private deliverReplies(peer: Peer, text: string): void {
    let raw: unknown = null;
    try {
      raw = JSON.parse(text);
    } catch {
      // Not JSON: refused by the schema below like any other malformed answer.
    }
    const parsed = messageBatchSchema.safeParse(raw);
    if (!parsed.success) {
      this.log.warn({ event: 'raft.transport.bad_reply', peer: peer.id }, 'invalid replies from peer');
      return;
    }
    for (const msg of parsed.data.messages) this.deliverReply(peer, msg);
  }

  private deliverReply(peer: Peer, msg: Message): void {
    if (msg.from !== peer.id || msg.to !== this.options.id) {
      this.log.warn(
        { event: 'raft.transport.bad_reply', peer: peer.id, from: msg.from, to: msg.to },
        'reply not from the peer asked, or not for this node',
      );
      return;
    }
    try {
      this.options.onReply?.(msg);
    } catch (err) {
      this.log.error({ event: 'raft.transport.callback_failed', peer: peer.id, err }, 'onReply threw');
    }
  }

  // A throwing host callback must not kill a sender loop.
  private notifyUnreachable(peer: NodeId): void {
    try {
      this.options.onUnreachable?.(peer);
    } catch (err) {
      this.log.error({ event: 'raft.transport.callback_failed', peer, err }, 'onUnreachable threw');
    }
  }

  private notifySnapshot(peer: NodeId, ok: boolean): void {
    try {
      this.options.onSnapshotStatus?.(peer, ok);
    } catch (err) {
      this.log.error({ event: 'raft.transport.callback_failed', peer, err }, 'onSnapshotStatus threw');
    }
  }

  private stopPeer(peer: Peer): void {
    peer.stopped = true;
    peer.inFlight?.abort(new Error('transport stopped'));
    peer.wake?.();
    peer.stream?.fail(new Error('transport stopped'));
    if (peer.streamBackoff !== null) clearTimeout(peer.streamBackoff);
    peer.streamBackoff = null;
    peer.sink?.close();
    peer.sink = null;
    peer.pool.destroy().catch(() => {});
    peer.streamClient.destroy().catch(() => {});
  }
}

function parsePeerUrl(url: string): URL {
  const target = new URL(url);
  if (target.protocol !== 'http:' && target.protocol !== 'https:') throw new Error('not an http(s) URL');
  return target;
}

function newPool(target: URL): Pool {
  // One connection: the sender loop has one request in flight at a time, which also keeps order.
  // undici's default keep-alive (4s, or the server's hint) stays under Node's server default (5s).
  // The process's TLS trust (src/http/tls.ts) rides in the connector, the timeout with it.
  return new Pool(target.origin, { connections: 1, connect: internalConnect({ timeout: 2_000 }) });
}

function newStreamClient(target: URL): Client {
  // One stream at a time; a stream at its maximum age drains before the next one starts.
  return new Client(target.origin, { connect: internalConnect({ timeout: 2_000 }), keepAliveTimeout: 4_000 });
}

function pathFor(target: URL, route: string): string {
  return `${target.pathname.replace(/\/+$/, '')}${route}`;
}
