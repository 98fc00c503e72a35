// The sending end of one Raft stream to a peer: a long-lived HTTP/1.1 POST whose body is the
// frames (messageCodec) this node sends that peer, and whose response carries the peer's frames
// back. The body pulls from the transport's bounded queue only when the socket takes more (a
// Readable's read()), so a slow peer backs frames up into that queue, where the oldest are dropped,
// never into memory without bound. A stream ends itself after `maxAgeMs`: a server may cap how long
// one request lasts, and a fresh stream every minute costs nothing.
//
// A network that drops bytes without closing anything shows no error: the stream fails when frames
// went out and nothing came back for `idleTimeoutMs` (a follower answers every heartbeat on this
// stream, so a peer that still listens is always heard), and a stream that ended may drain its
// answer for `timeoutMs` at most, since it holds the Client's one connection meanwhile.

import { Readable } from 'node:stream';
import type { Client } from 'undici';
import { RAFT_REPLIES_HEADER } from './inboundStream.ts';
import { FRAME_MESSAGE, FrameError, FrameSplitter, MAX_FRAME_BYTES } from './messageCodec.ts';

export interface OutboundStreamOptions {
  client: Client;
  path: string;
  headers: Record<string, string>;
  /** Next bytes to send (whole frames), or null when the queue is empty. */
  pull: () => Buffer | null;
  /** The peer took the stream (its answer's headers came, 200). */
  onOpen: () => void;
  /** A message frame's body from the response. */
  onFrame: (body: Buffer) => void;
  /** How long the response headers, or a socket that takes no more bytes, may keep us waiting. */
  timeoutMs: number;
  /** Frames sent and nothing heard back for this long: the peer or the path is gone. */
  idleTimeoutMs: number;
  /**
   * How many times the peer was heard so far, on any path (its answers may come on its own stream
   * to us); by default the frames on this stream's response.
   */
  heardCount?: () => number;
  maxAgeMs: number;
  maxFrameBytes?: number;
}

export class OutboundStream {
  /** Resolves once the stream is over: null after a clean end, else why it failed. */
  readonly closed: Promise<string | null>;
  private readonly body: Readable;
  private wantsData = false;
  private ended = false;
  private failed = false;
  /** Frames went out, and the idle check runs. */
  private unanswered = false;
  /** The peer said it answers on this stream (RAFT_REPLIES_HEADER): silence then means a dead path. */
  private answersHere = false;
  private sentSinceCheck = false;
  /** The peer's heard count when the current idle period began. */
  private heardMark = 0;
  /** Frames on this stream's response, when the caller counts nothing more (no `heardCount`). */
  private framesHeard = 0;
  private idleTimer: NodeJS.Timeout | null = null;
  private drainTimer: NodeJS.Timeout | null = null;
  private stallTimer: NodeJS.Timeout | null = null;
  private readonly ageTimer: NodeJS.Timeout;
  private readonly abort = new AbortController();

  constructor(private readonly opts: OutboundStreamOptions) {
    this.body = new Readable({
      highWaterMark: 64 * 1024,
      read: () => {
        this.wantsData = true;
        this.clearStall();
        this.flush();
      },
    });
    this.ageTimer = setTimeout(() => this.end(), opts.maxAgeMs);
    this.ageTimer.unref();
    this.closed = this.run();
  }

  /** New frames are queued: send them now if the socket takes them, else watch for a stall. */
  kick(): void {
    if (this.ended) return;
    if (this.wantsData) this.flush();
    else if (this.stallTimer === null) {
      this.stallTimer = setTimeout(
        () => this.fail(new Error(`peer took no bytes for ${this.opts.timeoutMs}ms`)),
        this.opts.timeoutMs,
      );
    }
  }

  /** Ends the body; the peer then ends its response, and `closed` resolves. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    this.clearStall();
    clearTimeout(this.ageTimer);
    this.body.push(null);
    if (!this.failed) {
      this.drainTimer = setTimeout(
        () => this.fail(new Error(`the ended stream did not finish within ${this.opts.timeoutMs}ms`)),
        this.opts.timeoutMs,
      );
      this.drainTimer.unref();
    }
  }

  /** Ends the stream at once, dropping whatever is in flight. */
  fail(reason: Error): void {
    if (this.failed) return;
    this.failed = true;
    this.end();
    this.abort.abort(reason);
  }

  get isEnded(): boolean {
    return this.ended;
  }

  /** Failed, as opposed to ending at its age: its `closed` reports why, and it is not replaced before. */
  get isFailed(): boolean {
    return this.failed;
  }

  private flush(): void {
    while (this.wantsData && !this.ended) {
      const bytes = this.opts.pull();
      if (bytes === null) return;
      this.wantsData = this.body.push(bytes);
      if (this.answersHere) this.awaitAnswer();
    }
  }

  private awaitAnswer(): void {
    if (this.unanswered) {
      this.sentSinceCheck = true;
      return;
    }
    this.unanswered = true;
    this.sentSinceCheck = false;
    this.heardMark = this.heardCount();
    this.idleTimer = setTimeout(() => this.checkIdle(), this.opts.idleTimeoutMs);
    this.idleTimer.unref();
  }

  private heardCount(): number {
    return this.opts.heardCount?.() ?? this.framesHeard;
  }

  // Fails within one to two idle periods of the first unanswered frame, with one timer per period.
  private checkIdle(): void {
    this.idleTimer = null;
    if (this.ended) return;
    const heard = this.heardCount();
    if (heard === this.heardMark) {
      this.fail(new Error(`frames sent and nothing heard back for ${this.opts.idleTimeoutMs}ms`));
      return;
    }
    this.unanswered = this.sentSinceCheck;
    if (!this.unanswered) return;
    this.sentSinceCheck = false;
    this.heardMark = heard;
    this.idleTimer = setTimeout(() => this.checkIdle(), this.opts.idleTimeoutMs);
    this.idleTimer.unref();
  }

  private clearStall(): void {
    if (this.stallTimer !== null) clearTimeout(this.stallTimer);
    this.stallTimer = null;
  }

  private async run(): Promise<string | null> {
    // undici's own headersTimeout starts once a body is all sent, which a stream's never is.
    const noAnswer = setTimeout(
      () => this.fail(new Error(`no answer within ${this.opts.timeoutMs}ms`)),
      this.opts.timeoutMs,
    );
    try {
      const res = await this.opts.client.request({
        path: this.opts.path,
        method: 'POST',
        headers: this.opts.headers,
        body: this.body,
        signal: this.abort.signal,
        bodyTimeout: 0,
      });
      clearTimeout(noAnswer);
      if (res.statusCode !== 200) {
        const text = (await res.body.text()).slice(0, 200);
        return `HTTP ${res.statusCode}: ${text}`;
      }
      this.answersHere = res.headers[RAFT_REPLIES_HEADER] === '1';
      this.opts.onOpen();
      return await this.readFrames(res.body);
    } catch (err) {
      const reason = this.abort.signal.aborted ? this.abort.signal.reason : err;
      return reason instanceof Error ? reason.message : String(reason);
    } finally {
      clearTimeout(noAnswer);
      this.end();
      if (this.drainTimer !== null) clearTimeout(this.drainTimer);
      if (this.idleTimer !== null) clearTimeout(this.idleTimer);
      this.body.destroy();
    }
  }

  /**
   * Takes the frames as each chunk arrives ('data'): an async iterator over the body handed every
   * chunk over through a 'readable' event on the next tick and a promise, on the path of every
   * answer the leader waits for.
   */
  private readFrames(body: Readable): Promise<string | null> {
    const splitter = new FrameSplitter(this.opts.maxFrameBytes ?? MAX_FRAME_BYTES);
    return new Promise<string | null>((resolve, reject) => {
      let over = false;
      const finish = (outcome: () => void) => {
        if (over) return;
        over = true;
        body.off('data', onData);
        outcome();
      };
      /** Ends the stream early: the rest of the body is not read. */
      const stop = (reason: string) => {
        finish(() => resolve(reason));
        body.destroy();
      };
      const onData = (chunk: Buffer) => {
        splitter.push(chunk);
        this.framesHeard++;
        try {
          for (let f = splitter.next(); f !== null; f = splitter.next()) {
            if (f.kind !== FRAME_MESSAGE)
              return stop(`peer ended the stream: ${f.body.toString('utf8', 0, 300)}`);
            this.opts.onFrame(f.body);
          }
        } catch (err) {
          if (err instanceof FrameError) return stop(`bad frame from peer: ${err.message}`);
          finish(() => reject(err));
          body.destroy();
        }
      };
      body.on('data', onData);
      body.once('end', () => finish(() => resolve(null)));
      body.once('error', (err) => finish(() => reject(err)));
      body.once('close', () => finish(() => reject(new Error('the answer stream closed before its end'))));
    });
  }
}
