// The buffers a whole small object is read into before it is checked and sent: a manager's proxied
// GET gathers a worker's answer into one (src/manager/verifiedRead.ts), a worker reads a blob file
// into one (src/storagenode/blobStore.ts, readWhole). Kept for the next GET instead of a new one
// each: every new 1 MiB buffer is memory V8 counts as external, and a manager serving GETs at
// concurrency 1 ran a mark-compact every ~300 ms for it (docs/measurements.md, "The tail of a GET
// at concurrency 1").
//
// A buffer goes back only through its lease's release, which its holder calls once nothing reads
// it any more (for an answer, when the node response has finished or closed). A lease never
// released costs nothing but the reuse: the garbage collector takes its buffer as it would any.

import type { ServerResponse } from 'node:http';
import type { HttpBindings } from '@hono/node-server';
import type { Context } from 'hono';

export interface BufferLease {
  readonly buffer: Buffer;
  /** Hands the buffer back; later calls do nothing, so one buffer is never handed out twice. */
  release(): void;
}

export class ReadBuffers {
  private readonly idle: Buffer[] = [];

  /** `keep`: how many idle buffers are kept at most (the memory a burst leaves behind). */
  constructor(
    readonly size: number,
    private readonly keep: number,
  ) {}

  lease(): BufferLease {
    const buffer = this.idle.pop() ?? Buffer.allocUnsafe(this.size);
    let out = true;
    return {
      buffer,
      release: () => {
        if (!out) return;
        out = false;
        if (this.idle.length < this.keep) this.idle.push(buffer);
      },
    };
  }

  /** Idle buffers held now (for tests). */
  get idleCount(): number {
    return this.idle.length;
  }
}

/**
 * Hands a leased buffer back once the answer on `outgoing` no longer needs it: 'finish' comes after
 * its last byte is in the kernel's hands, 'close' after a connection that went away (libuv drops
 * what it had not written). Until one of them, a queued or partial write may still read the buffer,
 * so handing it back any earlier would let another GET's bytes into this answer. Without a node
 * response (under `app.request()`) or a lease, nothing is handed back: the garbage collector takes it.
 */
export function releaseAfterWritten(
  outgoing: ServerResponse | undefined,
  release: (() => void) | undefined,
): void {
  if (!outgoing || !release) return;
  outgoing.once('finish', release);
  outgoing.once('close', release);
}

/**
 * The node response a Hono handler answers on, when @hono/node-server serves it (not under
 * `app.request()`): only then is it known when an answer's buffer is written, so only then is a
 * leased buffer worth taking.
 */
export function outgoingOf(c: Context): ServerResponse | undefined {
  return (c.env as Partial<HttpBindings> | undefined)?.outgoing;
}

/** releaseAfterWritten on the answer a Hono handler gives. */
export function releaseWhenWritten(c: Context, release: (() => void) | undefined): void {
  releaseAfterWritten(outgoingOf(c), release);
}
