// POST /v1/cluster/bulk-records: image records committed through the real Raft and apply path
// without their bytes, so `npm run bench:scale` can load millions of them in minutes. Mounted only
// when the manager runs with --bulk-record-load, and only for an operator credential: the records
// name copies that no worker holds, which is what a benchmark of the tables wants and what a
// cluster in service must never have.

import { randomUUID } from 'node:crypto';
import { Hono } from 'hono';
import { z } from 'zod';
import { RaftError } from '../../consensus/raftNode.ts';
import { requireCredential } from '../../http/clusterAuth.ts';
import type { ManagerCredentials } from '../../http/credentials.ts';
import { jsonError } from '../../http/errors.ts';
import { noLeaderKnown, redirectToLeader } from '../../http/leaderRedirect.ts';
import { BodyTooLarge, readBodyText } from '../../http/requestBody.ts';
import { DEFAULT_MAX_QUEUED } from '../../metadata/batchProposer.ts';
import { type ResultOf, recordObjectSchema } from '../../metadata/commands.ts';
import type { RaftAccess } from '../imageService.ts';

/**
 * Records one request carries: a few Raft entries' worth (commandBatch groups up to 256), which the
 * batch proposer keeps in flight together.
 */
export const MAX_BULK_RECORDS = 1000;
/**
 * Records of all bulk requests together proposed and not yet answered: half the batch proposer's
 * queue (DEFAULT_MAX_QUEUED), which uploads, names and repair share with the bulk route. A record
 * beyond it waits for room rather than failing, so concurrent bulk requests cannot fill that queue
 * and have an upload beside them dropped (ProposalDropped).
 */
export const BULK_QUEUE_SHARE = DEFAULT_MAX_QUEUED / 2;
const MAX_BULK_BODY_BYTES = 2 * 1024 * 1024;

const bulkSchema = z.strictObject({
  records: z
    .array(recordObjectSchema.omit({ requestId: true }))
    .min(1)
    .max(MAX_BULK_RECORDS),
});

export interface BulkRecordOutcome {
  created: number;
  existing: number;
  rejected: { id: string; code: string }[];
}

/** Slots counted across requests, handed out in the order asked (FIFO). */
class Budget {
  private readonly waiting: (() => void)[] = [];

  constructor(private free: number) {}

  async acquire(): Promise<void> {
    if (this.free > 0) {
      this.free -= 1;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  release(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free += 1;
  }
}

export function bulkRecordRoutes(deps: {
  raft: RaftAccess;
  credentials: ManagerCredentials;
  /** Bulk records proposed at once across requests; BULK_QUEUE_SHARE by default. */
  queueShare?: number;
}) {
  const app = new Hono();
  const budget = new Budget(Math.max(1, deps.queueShare ?? BULK_QUEUE_SHARE));
  app.post('/v1/cluster/bulk-records', requireCredential(deps.credentials, ['operator']), async (c) => {
    let parsed: z.ZodSafeParseResult<z.infer<typeof bulkSchema>>;
    try {
      parsed = bulkSchema.safeParse(JSON.parse(await readBodyText(c, MAX_BULK_BODY_BYTES)));
    } catch (err) {
      if (err instanceof BodyTooLarge) return jsonError(c, 413, 'PayloadTooLarge', err.message);
      return jsonError(c, 400, 'BadRequest', 'body is not valid JSON');
    }
    if (!parsed.success) return jsonError(c, 400, 'BadRequest', z.prettifyError(parsed.error));
    if (!deps.raft.isLeader()) {
      const leader = deps.raft.leaderInfo();
      if (leader?.url) return redirectToLeader(c, leader.url, 'this manager is not the leader');
      return noLeaderKnown(c, 'no leader is known right now; retry shortly');
    }
    return c.json(await recordAll(deps.raft, budget, parsed.data.records));
  });
  return app;
}

type BulkRecord = z.infer<typeof bulkSchema>['records'][number];

/**
 * Proposes every record as the shared budget allows: the batch proposer groups them into full
 * entries and keeps several in flight. Every record gets its own outcome, a Raft failure included (one not committed here is
 * `rejected` with the driver's code, e.g. NotLeader or ProposalDropped, and may be sent again).
 */
async function recordAll(
  raft: RaftAccess,
  budget: Budget,
  records: BulkRecord[],
): Promise<BulkRecordOutcome> {
  const outcome: BulkRecordOutcome = { created: 0, existing: 0, rejected: [] };
  const results = await Promise.all(
    records.map(async (r) => {
      await budget.acquire();
      try {
        return await recordOne(raft, r);
      } finally {
        budget.release();
      }
    }),
  );
  for (const [i, r] of results.entries()) {
    if (r.ok && r.created) outcome.created += 1;
    else if (r.ok) outcome.existing += 1;
    else outcome.rejected.push({ id: records[i]!.id, code: r.code });
  }
  return outcome;
}

/**
 * The record was validated against recordObjectSchema (less the request id) when the body was
 * parsed, so its entry is written here rather than by `proposeCommand`, which would validate it
 * again: the parsed value holds only the schema's keys, and `type` leads as the batch proposer needs.
 */
async function recordOne(
  raft: RaftAccess,
  record: BulkRecord,
): Promise<{ ok: true; created: boolean } | { ok: false; code: string }> {
  const requestId = randomUUID();
  try {
    const { type, ...fields } = record;
    const data = JSON.stringify({ type, requestId, ...fields });
    return (await raft.propose(data, requestId)) as ResultOf<'recordObject'>;
  } catch (err) {
    if (err instanceof RaftError) return { ok: false, code: err.code };
    throw err;
  }
}
