// What `imgvault backup` and `imgvault restore` share: files moved a few at a time behind one
// progress line, a Ctrl-C (or SIGTERM) that stops at the next file, and a second one that prints the
// summary and exits without waiting for the files in flight; the exit status the summary earns.

import type { Command } from 'commander';
import { withClientOptions } from './clusterClient.ts';
import type { ProgressLine } from './localTree.ts';

export interface TransferSummary {
  failed: number;
  interrupted: boolean;
}

export interface TransferFlags {
  json?: boolean;
  concurrency: string;
  url?: string;
  token?: string;
}

/**
 * Completes a transfer command: after its own flags, the summary as JSON, files in flight and the
 * cluster's; its action's error becomes one line and exit status 1.
 */
export function transferCommand<A extends unknown[]>(
  cmd: Command,
  action: (...args: A) => Promise<number>,
): Command {
  return withClientOptions(
    cmd
      .option('--json', 'print the summary as one JSON object on standard output')
      .option('-c, --concurrency <n>', 'files in flight', '4'),
  ).action(async (...args: A) => {
    try {
      process.exitCode = await action(...args);
    } catch (err) {
      console.error(`imgvault: ${err instanceof Error ? err.message : String(err)}`);
      process.exitCode = 1;
    }
  });
}

/** `--concurrency` bounded to 1..64 (4 when it is not a number). */
export function concurrencyOf(flags: { concurrency: string }): number {
  return Math.max(1, Math.min(64, Number(flags.concurrency) || 4));
}

export abstract class FileTransfer<T extends { size: number }, S extends TransferSummary> {
  protected stopping = false;
  private done = 0;
  private bytesDone = 0;

  constructor(
    readonly summary: S,
    protected readonly progress: ProgressLine,
  ) {}

  /** Moves one file; its failure is counted by `failed`, never thrown. */
  protected abstract one(item: T): Promise<void>;

  stop(): void {
    this.stopping = true;
    this.summary.interrupted = true;
  }

  async run(items: readonly T[], concurrency: number): Promise<void> {
    const queue = [...items];
    await Promise.all(
      Array.from({ length: Math.min(concurrency, queue.length) }, async () => {
        for (let item = queue.shift(); item !== undefined && !this.stopping; item = queue.shift()) {
          await this.one(item);
          this.done++;
          this.bytesDone += item.size;
          this.progress.update(this.done, this.bytesDone);
        }
      }),
    );
  }

  protected failed(key: string, err: unknown): void {
    this.summary.failed++;
    this.progress.line(`failed\t${key}\t${err instanceof Error ? err.message : String(err)}`);
  }

  /** The summary on standard output as one JSON object, or `describe`d on standard error. */
  private report(json: boolean, describe: (summary: S) => string): void {
    if (json) console.log(JSON.stringify(this.summary));
    else console.error(describe(this.summary));
  }

  /**
   * Runs `work` with the signals stopping this transfer, then reports the summary; the exit status:
   * 130 when interrupted, 1 when a file failed, else 0.
   */
  async interruptible(
    work: () => Promise<void>,
    json: boolean,
    describe: (summary: S) => string,
  ): Promise<number> {
    let interrupts = 0;
    const onInterrupt = () => {
      interrupts++;
      this.stop();
      if (interrupts > 1) {
        this.progress.clear();
        this.report(json, describe);
        process.exit(130);
      }
    };
    process.on('SIGINT', onInterrupt);
    process.on('SIGTERM', onInterrupt);
    try {
      await work();
    } finally {
      process.off('SIGINT', onInterrupt);
      process.off('SIGTERM', onInterrupt);
      this.progress.clear();
    }
    this.report(json, describe);
    if (this.summary.interrupted) return 130;
    return this.summary.failed > 0 ? 1 : 0;
  }
}
