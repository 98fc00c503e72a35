// Reading and dropping the body of an upload the admission caps refused, so the 503 goes out on a
// connection that stays usable: answered with the body still coming, a client still writing it
// meets a closed socket (EPIPE, ECONNRESET) instead of reading the 503 (hey under bench:overload
// did). Bounded per body and for the whole process: admission refuses exactly when the manager is
// loaded, so draining must not turn into the unbounded work the caps were there to refuse.

import type { IncomingMessage } from 'node:http';

export interface DrainLimits {
  /** A body declaring more than this is not read: the answer closes the connection. */
  maxBodyBytes: number;
  /** Bytes all drains in progress may have declared together; past it, no more are started. */
  budgetBytes: number;
  /** A body not wholly in within this long is given up on. */
  timeoutMs: number;
}

export const DEFAULT_DRAIN_LIMITS: DrainLimits = {
  maxBodyBytes: 4 * 1024 * 1024,
  budgetBytes: 64 * 1024 * 1024,
  timeoutMs: 2_000,
};

/** The drains of one process, holding their declared lengths against the budget while they run. */
export class RefusedBodyDrain {
  private draining = 0;

  constructor(private readonly limits: DrainLimits = DEFAULT_DRAIN_LIMITS) {}

  /** Bytes the drains in progress declared. */
  get drainingBytes(): number {
    return this.draining;
  }

  /**
   * Reads `incoming` to its end and drops it, when it declared `length` bytes within the limits and
   * arrives in time. False when the body was not (or not wholly) read; then nothing more of it is
   * read, and the caller answers with `connection: close`.
   */
  async drain(incoming: IncomingMessage, length: number): Promise<boolean> {
    if (!Number.isSafeInteger(length) || length < 0 || length > this.limits.maxBodyBytes) return false;
    if (incoming.readableFlowing !== null) return false;
    if (incoming.readableEnded) return true;
    if (this.draining + length > this.limits.budgetBytes) return false;
    this.draining += length;
    try {
      return await readToEnd(incoming, this.limits.timeoutMs);
    } finally {
      this.draining -= length;
    }
  }
}

function readToEnd(incoming: IncomingMessage, timeoutMs: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const done = (read: boolean) => {
      clearTimeout(timer);
      incoming.off('end', onEnd);
      incoming.off('error', onFail);
      incoming.off('close', onFail);
      if (!read) incoming.pause();
      resolve(read);
    };
    const onEnd = () => done(true);
    const onFail = () => done(incoming.readableEnded);
    const timer = setTimeout(() => done(false), timeoutMs);
    incoming.on('end', onEnd);
    incoming.on('error', onFail);
    incoming.on('close', onFail);
    incoming.resume();
  });
}
