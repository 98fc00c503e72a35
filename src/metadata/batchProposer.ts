// Groups the commands that reach the leader while its previous proposal is in flight into one
// `commandBatch` entry, so the metadata commit rate is not the ceiling of the upload rate: under
// load each Raft round (one fsync, one replication, one table write) carries many callers' commands
// instead of one. A caller alone still gets an entry of its own, with no added wait. A full entry
// does not wait for the one in flight either (up to maxInFlight in flight in all): under a burst (a
// bulk load, a repair wave) the Raft rounds overlap instead of following one another. A partial
// entry waits one round at most: it goes as soon as a proposal in flight ends and a slot is free,
// not once all of them have ended.

import { randomUUID } from 'node:crypto';
import { RaftError } from '../consensus/raftNode.ts';
import { BATCHABLE_TYPES, MAX_BATCH_CHARS, MAX_BATCH_COMMANDS } from './commands.ts';
import type { CommandProposer } from './proposeCommand.ts';

export interface BatchProposerOptions {
  /** Commands in one entry, 2..MAX_BATCH_COMMANDS. */
  maxCommands?: number;
  /** Entry data in UTF-16 units, at most MAX_BATCH_CHARS. */
  maxChars?: number;
  /**
   * Commands waiting behind the proposals in flight; beyond it propose() fails with ProposalDropped.
   * Uploads, names, repair and the bulk route share it; the bulk route takes at most half of the
   * default (bulkRecordRoutes.ts), leaving room for a burst of the others beside a bulk load. A
   * recordObject is under 1 KiB, so a full queue of them is a few MiB.
   */
  maxQueued?: number;
  /**
   * Proposals in flight at once in all, at least 1; beside another goes a full entry, or a partial
   * one whose oldest command has seen a proposal end since it came.
   */
  maxInFlight?: number;
}

interface Waiting {
  data: string;
  requestId: string;
  /** `ended` when it was queued: the proposals that had ended by then. */
  since: number;
  resolve: (result: unknown) => void;
  reject: (err: unknown) => void;
}

/** What `{"type":"commandBatch","requestId":"<uuid>","commands":[` and `]}` take. */
const BATCH_OVERHEAD_CHARS = 128;
/** Sixteen full entries: the bulk route's share of eight, and a burst of uploads beside it. */
export const DEFAULT_MAX_QUEUED = 16 * MAX_BATCH_COMMANDS;
/** Proposals in flight at once, in all: enough to overlap the fsync, replication and apply of a round. */
export const DEFAULT_MAX_IN_FLIGHT = 4;
const BATCHABLE = new Set<string>(BATCHABLE_TYPES);
/** `encodeCommand` writes the parsed value, whose first key is the schema's first: `type`. */
const LEADING_TYPE = /^\{"type":"([A-Za-z]+)"/;

/**
 * True when `data` (an encoded command) may go into a batch; anything else is proposed alone.
 * It must be one JSON value: spliced into the batch, text that does not parse would make the whole
 * entry unreadable, and every caller in it would wait for a result that never comes.
 */
function groupable(data: string, maxChars: number): boolean {
  const type = LEADING_TYPE.exec(data)?.[1];
  if (type === undefined || !BATCHABLE.has(type) || data.length + BATCH_OVERHEAD_CHARS > maxChars) {
    return false;
  }
  try {
    JSON.parse(data);
    return true;
  } catch {
    return false;
  }
}

/**
 * A `CommandProposer` in front of the Raft node: `proposeCommand(batcher, command)` works as with
 * the node itself, and each caller still resolves only once its own command is committed and
 * applied, with its own result (a rejected command rejects its caller alone).
 */
export class BatchProposer implements CommandProposer {
  private readonly maxCommands: number;
  private readonly maxChars: number;
  private readonly maxQueued: number;
  private readonly maxInFlight: number;
  private readonly queue: Waiting[] = [];
  /** UTF-16 units of the queued commands' data, each with its separator. */
  private queuedChars = 0;
  private inFlight = 0;
  /** Proposals ended so far (committed or failed): one more each round. */
  private ended = 0;
  private scheduled = false;

  constructor(
    private readonly node: CommandProposer,
    options: BatchProposerOptions = {},
  ) {
    this.maxCommands = Math.min(MAX_BATCH_COMMANDS, Math.max(2, options.maxCommands ?? MAX_BATCH_COMMANDS));
    this.maxChars = Math.min(MAX_BATCH_CHARS, options.maxChars ?? MAX_BATCH_CHARS);
    this.maxQueued = options.maxQueued ?? DEFAULT_MAX_QUEUED;
    this.maxInFlight = Math.max(1, options.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT);
  }

  propose(data: string, requestId: string): Promise<unknown> {
    if (!groupable(data, this.maxChars)) return this.node.propose(data, requestId);
    if (this.queue.length >= this.maxQueued) {
      return Promise.reject(
        new RaftError('ProposalDropped', `${this.queue.length} commands already wait to be proposed`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ data, requestId, since: this.ended, resolve, reject });
      this.queuedChars += data.length + 1;
      this.schedule();
    });
  }

  /** Flushes on the next turn, so commands arriving in the same turn share an entry. */
  private schedule(): void {
    if (this.scheduled || !this.mayPropose()) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.flush();
    });
  }

  /**
   * Whether the queue's head may be proposed now: always when nothing is in flight; beside a
   * proposal in flight as a full entry, or as a partial one whose oldest command has waited a round
   * (a proposal ended since it came): it gathered what came meanwhile and need not wait for the rest.
   */
  private mayPropose(): boolean {
    if (this.queue.length === 0) return false;
    if (this.inFlight === 0) return true;
    if (this.inFlight >= this.maxInFlight) return false;
    if (this.queue[0]!.since < this.ended) return true;
    return this.queue.length >= this.maxCommands || this.queuedChars + BATCH_OVERHEAD_CHARS > this.maxChars;
  }

  private flush(): void {
    while (this.mayPropose()) {
      this.inFlight += 1;
      void this.send(this.take()).finally(() => {
        this.inFlight -= 1;
        this.ended += 1;
        this.schedule();
      });
    }
  }

  /** The longest prefix of the queue within both bounds (never empty). */
  private take(): Waiting[] {
    let chars = BATCH_OVERHEAD_CHARS;
    let n = 0;
    while (n < this.queue.length && n < this.maxCommands) {
      const next = this.queue[n]!.data.length + 1;
      if (n > 0 && chars + next > this.maxChars) break;
      chars += next;
      n += 1;
    }
    this.queuedChars -= chars - BATCH_OVERHEAD_CHARS;
    return this.queue.splice(0, n);
  }

  private async send(group: Waiting[]): Promise<void> {
    if (group.length === 1) {
      const [only] = group as [Waiting];
      await this.node.propose(only.data, only.requestId).then(only.resolve, only.reject);
      return;
    }
    const requestId = randomUUID();
    const data = `{"type":"commandBatch","requestId":"${requestId}","commands":[${group.map((w) => w.data).join(',')}]}`;
    let result: unknown;
    try {
      result = await this.node.propose(data, requestId);
    } catch (err) {
      for (const w of group) w.reject(err);
      return;
    }
    const results = (result as { ok?: boolean; results?: unknown[] }).results;
    if (!Array.isArray(results) || results.length !== group.length) {
      // The whole entry was refused (it cannot be, for data built here from validated commands):
      // every caller gets that refusal as its command's result.
      for (const w of group) w.resolve(result);
      return;
    }
    for (const [i, w] of group.entries()) w.resolve(results[i]);
  }
}
