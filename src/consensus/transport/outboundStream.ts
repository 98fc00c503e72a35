// The sending end of one Raft stream to a peer: a long-lived HTTP/1.1 POST whose body is the
// frames (messageCodec) this node sends that peer, and whose response carries the peer's frames
// back. The body pulls from the transport's bounded queue only when the socket takes more (a
// Readable's read()), so a slow peer backs frames up into that queue, where the oldest are dropped,
// never into memory without bound. A stream ends itself after `maxAgeMs`: a server may cap how long
// one request lasts, and a fresh stream every minute costs nothing.

import { Readable } from 'node:stream';
import type { Client } from 'undici';
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
  maxAgeMs: number;
  maxFrameBytes?: number;
}

export class OutboundStream {
  /** Resolves once the stream is over: null after a clean end, else why it failed. */
  readonly closed: Promise<string | null>;
  private readonly body: Readable;
  private wantsData = false;
  private ended = false;
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
  }

  /** Ends the stream at once, dropping whatever is in flight. */
  fail(reason: Error): void {
    this.end();
    this.abort.abort(reason);
  }

  get isEnded(): boolean {
    return this.ended;
  }

  private flush(): void {
    while (this.wantsData && !this.ended) {
      const bytes = this.opts.pull();
      if (bytes === null) return;
      this.wantsData = this.body.push(bytes);
    }
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
      this.opts.onOpen();
      return await this.readFrames(res.body);
    } catch (err) {
      const reason = this.abort.signal.aborted ? this.abort.signal.reason : err;
      return reason instanceof Error ? reason.message : String(reason);
    } finally {
      clearTimeout(noAnswer);
      this.end();
      this.body.destroy();
    }
  }

  private async readFrames(body: AsyncIterable<Buffer>): Promise<string | null> {
    const splitter = new FrameSplitter(this.opts.maxFrameBytes ?? MAX_FRAME_BYTES);
    try {
      for await (const chunk of body) {
        splitter.push(chunk);
        for (let f = splitter.next(); f !== null; f = splitter.next()) {
          if (f.kind !== FRAME_MESSAGE) return `peer ended the stream: ${f.body.toString('utf8', 0, 300)}`;
          this.opts.onFrame(f.body);
        }
      }
    } catch (err) {
      if (err instanceof FrameError) return `bad frame from peer: ${err.message}`;
      throw err;
    }
    return null;
  }
}
