// The background scrubber: reads every blob back against its index entry, slowly, so a copy that
// rots on disk is found before a client or a repair needs it. What it finds is removed by the
// store (BlobStore.scrub), whose lost-blob listeners tell the leader (LostCopyReporter); the
// leader drops the copy from the record and repair makes a new one from the other copy.

import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../logging.ts';
import type { BlobEntry, BlobStore } from './blobStore.ts';

export interface ScrubberOptions {
  store: BlobStore;
  /** Read-back rate; the scrubber sleeps between blobs to stay under it. */
  bytesPerSecond: number;
  /** Pause between the end of one full pass and the start of the next. */
  pauseMs: number;
  log: Logger;
  onBlob?: (outcome: 'intact' | 'lost', bytes: number) => void;
  /** Index entries read per iterator (default 1000). */
  pageSize?: number;
}

export interface PassSummary {
  checked: number;
  bytes: number;
  lost: string[];
}

/** Index entries read per iterator: a pass at 16 MiB/s over a large disk lasts hours or days. */
const DEFAULT_PAGE = 1000;

/**
 * The inventory a page at a time, each page from a short-lived iterator, so a pass never pins one
 * LevelDB snapshot (and the compaction it holds back) for its whole length.
 */
async function* pagedInventory(
  store: BlobStore,
  pageSize: number,
  signal: AbortSignal,
): AsyncGenerator<BlobEntry> {
  let after: string | undefined;
  while (!signal.aborted) {
    const page: BlobEntry[] = [];
    for await (const entry of store.inventory(after === undefined ? {} : { after })) {
      page.push(entry);
      if (page.length === pageSize) break;
    }
    for (const entry of page) {
      if (signal.aborted) return;
      yield entry;
    }
    if (page.length < pageSize) return;
    after = page[page.length - 1]!.id;
  }
}

export class Scrubber {
  private readonly stopController = new AbortController();
  private running: Promise<void> | undefined;

  constructor(private readonly opts: ScrubberOptions) {
    if (!(opts.bytesPerSecond > 0)) throw new Error('Scrubber needs a positive bytesPerSecond');
  }

  start(): void {
    this.running ??= this.loop().catch((err: unknown) => {
      if (!this.stopController.signal.aborted) {
        this.opts.log.error({ event: 'scrub.stopped', err }, 'scrubber stopped on an error');
      }
    });
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    await this.running;
  }

  /** One full pass over the index, at the configured rate. */
  async pass(): Promise<PassSummary> {
    const { store, bytesPerSecond, onBlob } = this.opts;
    const signal = this.stopController.signal;
    const summary: PassSummary = { checked: 0, bytes: 0, lost: [] };
    const started = performance.now();
    for await (const entry of pagedInventory(store, this.opts.pageSize ?? DEFAULT_PAGE, signal)) {
      let outcome: Awaited<ReturnType<BlobStore['scrub']>>;
      try {
        outcome = await store.scrub(entry);
      } catch (err) {
        // One blob that cannot be read back now (EIO, a busy disk) must not end the scrubbing.
        this.opts.log.warn(
          { event: 'scrub.blob_failed', objectId: entry.id, err: (err as Error).message },
          'blob not checked; the next pass tries again',
        );
        continue;
      }
      if (outcome === 'gone') continue;
      summary.checked += 1;
      summary.bytes += entry.size;
      onBlob?.(outcome, entry.size);
      if (outcome === 'lost') summary.lost.push(entry.id);
      // Ahead of the rate: wait until the bytes read so far are due.
      const dueMs = (summary.bytes / bytesPerSecond) * 1000;
      const aheadMs = dueMs - (performance.now() - started);
      if (aheadMs > 1) await sleep(aheadMs, undefined, { signal }).catch(() => {});
    }
    return summary;
  }

  private async loop(): Promise<void> {
    const signal = this.stopController.signal;
    while (!signal.aborted) {
      const summary = await this.pass();
      this.opts.log.info(
        {
          event: 'scrub.pass_done',
          checked: summary.checked,
          bytes: summary.bytes,
          lost: summary.lost.length,
        },
        'scrub pass done',
      );
      await sleep(this.opts.pauseMs, undefined, { signal }).catch(() => {});
    }
  }
}
