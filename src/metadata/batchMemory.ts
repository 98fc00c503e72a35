// The native memory of written LevelDB batches, which V8 cannot see.
//
// classic-level frees a chained batch's LevelDB WriteBatch (a copy of every row put into it) only
// when V8 collects the batch's JS object (classic-level chained-batch.js: `_close` frees nothing;
// binding.cc FinalizeBatch), and to V8 that object is a few hundred bytes whatever the batch holds.
// A batch lives through the scavenges of its own gathering and writing, so it is promoted and waits
// for a full collection, which a restore (short-lived garbage, a small heap) seldom causes: the
// written batches piled up outside the heap, growing with the snapshot (docs/operations.md,
// "Manager memory"). The strings a restore decodes its chunks into (1 MiB each, in V8's
// large-object space) wait for the same collection. Collecting after every so many bytes written
// bounds both, for a few tens of milliseconds per collection.

import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gc: (() => void) | undefined;

/** A full garbage collection, now (synchronous). */
export function collectGarbage(): void {
  gc ??= (globalThis as { gc?: () => void }).gc ?? exposedGc();
  gc();
}

/** V8's `gc` without --expose-gc on the command line: the flag set now holds for new contexts. */
function exposedGc(): () => void {
  setFlagsFromString('--expose-gc');
  return runInNewContext('gc') as () => void;
}

/**
 * Counts the bytes of batches written since the last collection and collects once they reach
 * `budget`: at most that much of written batches (plus the ones being gathered and written) is
 * held outside the heap.
 */
export class WrittenBatches {
  private unreleased = 0;

  constructor(private readonly budget: number) {}

  /** A batch of `bytes` was written (its JS object is no longer referenced). */
  written(bytes: number): void {
    this.unreleased += bytes;
    if (this.unreleased < this.budget) return;
    this.unreleased = 0;
    collectGarbage();
  }
}
