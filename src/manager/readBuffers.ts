// The buffers a proxied GET gathers a worker's answer into before checking it (verifiedRead.ts),
// kept for the next GET instead of a new one each: every new 1 MiB buffer is memory V8 counts as
// external, and a manager serving GETs at concurrency 1 ran a mark-compact every ~300 ms for it
// (docs/measurements.md, "The tail of a GET at concurrency 1").
//
// A buffer goes back only through its lease's release, which its holder calls once nothing reads
// it any more (for an answer, when the node response has finished or closed). A lease never
// released costs nothing but the reuse: the garbage collector takes its buffer as it would any.

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
