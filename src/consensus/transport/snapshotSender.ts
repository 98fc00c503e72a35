// Client side of snapshot transfer (etcd's rafthttp snapshot_sender.go, made resumable): a MsgSnap
// whose data names a snapshot file leaves the message path; its file is streamed to the follower
// in pieces over its own connection (a long transfer never holds up appends and heartbeats to that
// follower or anyone else), then the MsgSnap itself is delivered, and the core hears how it ended
// (reportSnapshot). After a cut the next attempt asks the follower how many bytes it holds and goes
// on from there. Memory: one read chunk of the file at a time, whatever its size.

import type { FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { Pool } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../../http/clusterAuth.ts';
import { internalConnect } from '../../http/tls.ts';
import { createLogger, type Logger } from '../../logging.ts';
import { readRange, type SnapshotFileRef, type SnapshotFolder } from '../snapshotFiles.ts';
import { snapshotFileOf } from '../snapshots.ts';
import type { Message, NodeId } from '../types.ts';
import {
  MAX_SNAPSHOT_PIECE_BYTES,
  RAFT_SNAPSHOT_MESSAGE_PATH,
  RAFT_SNAPSHOT_PATH,
} from './snapshotRoutes.ts';

export interface SnapshotSenderOptions {
  id: NodeId;
  folder: SnapshotFolder;
  secret: string;
  /** What to present to `peer` instead of `secret` (a raft credential names its receiver). */
  credentialFor?: (peer: NodeId) => string;
  /** How sending a MsgSnap ended (etcd's ReportSnapshot). */
  onSnapshotStatus: (peer: NodeId, ok: boolean) => void;
  /** Bytes per PUT (at most MAX_SNAPSHOT_PIECE_BYTES). */
  pieceBytes?: number;
  /** Attempts in a row that move no byte before the transfer is given up. */
  maxAttempts?: number;
  requestTimeoutMs?: number;
  retryDelayMs?: number;
  log?: Logger;
}

class TransferFailed extends Error {}

export class SnapshotSender {
  /** One transfer per follower; a newer MsgSnap for it replaces the one under way. */
  private readonly transfers = new Map<NodeId, AbortController>();
  private readonly log: Logger;
  private closed = false;

  constructor(private readonly options: SnapshotSenderOptions) {
    this.log = options.log ?? createLogger('raft-transport', { nodeId: options.id });
  }

  /** Takes a MsgSnap naming a file and sends it to `url`; false (not taken) for an inline one. */
  send(msg: Message, url: string): boolean {
    const file = msg.snapshot === undefined ? null : snapshotFileOf(msg.snapshot.data);
    if (file === null) return false;
    if (this.closed) return true;
    this.transfers.get(msg.to)?.abort();
    const abort = new AbortController();
    this.transfers.set(msg.to, abort);
    void this.transfer(msg, file, url, abort.signal).then((ok) => {
      if (this.transfers.get(msg.to) === abort) this.transfers.delete(msg.to);
      // A replaced or closed transfer says nothing: the core awaits the report of the newest.
      if (abort.signal.aborted) return;
      try {
        this.options.onSnapshotStatus(msg.to, ok);
      } catch (err) {
        this.log.error(
          { event: 'raft.transport.callback_failed', peer: msg.to, err },
          'onSnapshotStatus threw',
        );
      }
    });
    return true;
  }

  /** Stops every transfer; their files stay where they are (a follower resumes a later one). */
  close(): void {
    this.closed = true;
    for (const abort of this.transfers.values()) abort.abort();
    this.transfers.clear();
  }

  private async transfer(
    msg: Message,
    file: SnapshotFileRef,
    url: string,
    signal: AbortSignal,
  ): Promise<boolean> {
    const target = new URL(url);
    const base = target.pathname.replace(/\/+$/, '');
    const pool = new Pool(target.origin, { connections: 1, connect: internalConnect({ timeout: 2_000 }) });
    const started = Date.now();
    // One handle for the whole transfer, and the file pinned: a snapshot taken or installed
    // meanwhile removes older files, and a transfer that reopened its file per piece would fail on
    // every attempt and leave the follower a useless partial file.
    const release = this.options.folder.pin(file);
    let fh: FileHandle;
    try {
      fh = await this.options.folder.openComplete(file);
    } catch (err) {
      release();
      await pool.destroy().catch(() => {});
      this.log.warn(
        { event: 'raft.snapshot_send_failed', peer: msg.to, index: file.index, err: String(err) },
        'snapshot file not readable; the leader tries again later',
      );
      return false;
    }
    let failures = 0;
    // The most bytes the follower ever held: an attempt that moved past it made progress. A
    // follower that refused the whole file (digest) starts over at 0 and never passes it again.
    const progress = { best: 0 };
    try {
      for (;;) {
        const before = progress.best;
        try {
          await this.push(pool, base, msg, { ref: file, fh }, signal, progress);
          this.log.info(
            {
              event: 'raft.snapshot_sent',
              peer: msg.to,
              index: file.index,
              bytes: file.size,
              ms: Date.now() - started,
            },
            'snapshot sent',
          );
          return true;
        } catch (err) {
          failures = progress.best > before ? 1 : failures + 1;
          if (signal.aborted || failures >= (this.options.maxAttempts ?? 5)) {
            if (!signal.aborted) {
              this.log.warn(
                { event: 'raft.snapshot_send_failed', peer: msg.to, index: file.index, err: String(err) },
                'snapshot not sent; the leader tries again later',
              );
            }
            return false;
          }
          await delay((this.options.retryDelayMs ?? 200) * failures, signal);
        }
      }
    } finally {
      await pool.destroy().catch(() => {});
      await fh.close().catch(() => {});
      release();
    }
  }

  /** One attempt: learn what the follower holds, send the rest piece by piece, then the MsgSnap. */
  private async push(
    pool: Pool,
    base: string,
    msg: Message,
    source: { ref: SnapshotFileRef; fh: FileHandle },
    signal: AbortSignal,
    progress: { best: number },
  ): Promise<void> {
    const file = source.ref;
    const query = `from=${encodeURIComponent(this.options.id)}&index=${file.index}&term=${file.term}&size=${file.size}&sha256=${file.sha256}`;
    let offset = (
      await this.request<{ received: number }>(
        pool,
        msg.to,
        signal,
        'GET',
        `${base}${RAFT_SNAPSHOT_PATH}?${query}`,
      )
    ).received;
    this.log.info(
      { event: 'raft.snapshot_send_started', peer: msg.to, index: file.index, bytes: file.size, offset },
      'sending a snapshot file',
    );
    const piece = Math.min(this.options.pieceBytes ?? 8 * 1024 * 1024, MAX_SNAPSHOT_PIECE_BYTES);
    while (offset < file.size) {
      const end = Math.min(file.size, offset + piece);
      const body = Readable.from(readRange(source.fh, this.options.folder.pathOf(file), offset, end));
      const answer = await this.request<{ received: number }>(
        pool,
        msg.to,
        signal,
        'PUT',
        `${base}${RAFT_SNAPSHOT_PATH}?${query}&offset=${offset}`,
        { body, length: end - offset },
      );
      // A follower that answers without taking a byte would be asked again forever: count it as a
      // failed attempt instead.
      if (answer.received <= offset)
        throw new TransferFailed(`the follower took no byte of the piece at ${offset}`);
      progress.best = Math.max(progress.best, answer.received);
      offset = answer.received;
    }
    await this.request(pool, msg.to, signal, 'POST', `${base}${RAFT_SNAPSHOT_MESSAGE_PATH}`, {
      body: JSON.stringify({ message: msg }),
      json: true,
    });
  }

  private async request<T>(
    pool: Pool,
    peer: NodeId,
    signal: AbortSignal,
    method: 'GET' | 'PUT' | 'POST',
    path: string,
    send?: { body: Readable | string; length?: number; json?: boolean },
  ): Promise<T> {
    const timeoutMs = this.options.requestTimeoutMs ?? 60_000;
    const res = await pool.request({
      path,
      method,
      headers: {
        [CLUSTER_SECRET_HEADER]: this.options.credentialFor?.(peer) ?? this.options.secret,
        ...(send?.json ? { 'content-type': 'application/json' } : {}),
        ...(send?.length !== undefined
          ? { 'content-type': 'application/octet-stream', 'content-length': String(send.length) }
          : {}),
      },
      ...(send ? { body: send.body } : {}),
      signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    });
    const text = await res.body.text();
    if (res.statusCode === 204) return undefined as T;
    if (res.statusCode !== 200)
      throw new TransferFailed(`HTTP ${res.statusCode} on ${method}: ${text.slice(0, 200)}`);
    return JSON.parse(text) as T;
  }
}

function delay(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });
}
