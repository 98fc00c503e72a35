// Tells the leader which blobs this worker removed because they failed a read-back (the scrubber,
// or a whole-blob read that did not hash to its sha256), so their records stop counting these
// copies and repair makes new ones. Reports are batched a moment after the first loss and retried
// while no manager takes them; a restart loses nothing, since the registration's inventory no
// longer lists the removed blobs and rejoin reconciliation drops them the same way.

import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../logging.ts';

/** Lost ids held while no manager takes the report; a bound on memory, not a goal. */
const MAX_PENDING = 10_000;

export interface LostCopyReporterOptions {
  /** Sends one report; a rejection keeps the ids for the next try. */
  report: (ids: string[]) => Promise<void>;
  log: Logger;
  /** Wait after a first loss, so losses found together go in one report (default 200 ms). */
  batchDelayMs?: number;
  /** Wait before trying a failed report again (default 10 s). */
  retryMs?: number;
}

export class LostCopyReporter {
  private readonly pending = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private readonly stopController = new AbortController();

  constructor(private readonly opts: LostCopyReporterOptions) {}

  note(id: string): void {
    if (this.pending.size >= MAX_PENDING) {
      this.opts.log.warn({ event: 'scrub.report_backlog_full', objectId: id }, 'lost blob not queued');
      return;
    }
    this.pending.add(id);
    this.schedule(this.opts.batchDelayMs ?? 200);
  }

  /** Ids found lost and not yet taken by a manager. */
  unreported(): string[] {
    return [...this.pending];
  }

  async stop(): Promise<void> {
    this.stopController.abort();
    clearTimeout(this.timer);
    this.timer = undefined;
    await this.flushing;
  }

  private schedule(delayMs: number): void {
    if (this.stopController.signal.aborted || this.timer !== undefined || this.flushing !== undefined) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      this.flushing = this.flush().finally(() => {
        this.flushing = undefined;
        if (this.pending.size > 0) this.schedule(this.opts.batchDelayMs ?? 200);
      });
    }, delayMs);
    this.timer.unref();
  }

  private async flush(): Promise<void> {
    const ids = [...this.pending];
    try {
      await this.opts.report(ids);
      for (const id of ids) this.pending.delete(id);
      this.opts.log.warn({ event: 'scrub.reported', lost: ids.length }, 'lost blobs reported to the leader');
    } catch (err) {
      this.opts.log.warn(
        { event: 'scrub.report_failed', lost: ids.length, err: (err as Error).message },
        'lost blobs not reported to the leader yet; retrying',
      );
      await sleep(this.opts.retryMs ?? 10_000, undefined, { signal: this.stopController.signal }).catch(
        () => {},
      );
    }
  }
}
