// Upload bodies the leader holds in memory (StagingArea.tee) are copied, as they arrive, into
// buffers of SLAB_BYTES that are allocated once and reused. A buffer allocated per upload and held
// until the upload's copies are confirmed outlives the young generation, and V8 gives such memory
// back only in a mark-compact, which then ran every ~64 MB of bodies (docs/measurements.md). The
// copy replaces the Buffer.concat that cut socket-sized chunks into batches anyway.

/** A held body's unit: one batch forwarded to the copies (a quarter of the socket writes of 64 KiB). */
export const SLAB_BYTES = 256 * 1024;

/** Slabs not in use, up to a bound; a slab given back past it is left to the garbage collector. */
export class SlabPool {
  private readonly spare: Buffer[] = [];

  constructor(private readonly maxSpare: number) {}

  take(): Buffer {
    return this.spare.pop() ?? Buffer.allocUnsafeSlow(SLAB_BYTES);
  }

  /**
   * Only slabs that nothing reads any more: a slab still queued on a socket would send another
   * upload's bytes once reused.
   */
  give(slabs: readonly Buffer[]): void {
    for (const slab of slabs) if (this.spare.length < this.maxSpare) this.spare.push(slab);
  }

  get spareCount(): number {
    return this.spare.length;
  }
}

/** The memory a body of `size` bytes pins: whole slabs, however little of the last it fills. */
export function slabBytesFor(size: number): number {
  return Math.ceil(size / SLAB_BYTES) * SLAB_BYTES;
}

/** One body copied into slabs: `chunks` are its bytes in order, each a whole slab but the last. */
export class HeldBody {
  readonly slabs: Buffer[] = [];
  readonly chunks: Uint8Array[] = [];
  private fill = SLAB_BYTES;

  /** `reserved`: what the body counts in its budget, slabBytesFor its size. */
  constructor(
    private readonly pool: SlabPool,
    readonly reserved: number,
  ) {}

  /** Copies `chunk` in; answers the slabs it filled, to forward in order. */
  add(chunk: Uint8Array): Uint8Array[] {
    const filled: Uint8Array[] = [];
    let at = 0;
    while (at < chunk.byteLength) {
      if (this.fill === SLAB_BYTES) {
        this.slabs.push(this.pool.take());
        this.fill = 0;
      }
      const slab = this.slabs[this.slabs.length - 1]!;
      const n = Math.min(SLAB_BYTES - this.fill, chunk.byteLength - at);
      slab.set(chunk.subarray(at, at + n), this.fill);
      this.fill += n;
      at += n;
      if (this.fill === SLAB_BYTES) {
        filled.push(slab);
        this.chunks.push(slab);
      }
    }
    return filled;
  }

  /** The bytes copied in so far, while they fit one slab (a body held whole: StagingArea.holdWhole). */
  get firstSlabBytes(): Uint8Array {
    if (this.slabs.length > 1) throw new Error('a held body past one slab has no single view');
    return this.slabs[0]?.subarray(0, this.fill) ?? new Uint8Array(0);
  }

  /** The bytes of the last slab, if it is partly filled: the body's end, to forward. */
  end(): Uint8Array | null {
    if (this.fill === SLAB_BYTES) return null;
    const last = this.slabs[this.slabs.length - 1]!.subarray(0, this.fill);
    this.chunks.push(last);
    return last;
  }
}
