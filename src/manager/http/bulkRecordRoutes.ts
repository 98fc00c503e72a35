// POST /v1/cluster/bulk-records: image records committed through the real Raft and apply path
// without their bytes, so `npm run bench:scale` can load millions of them in minutes. Mounted only
// when the manager runs with --bulk-record-load, and only for an operator credential: the records
// name copies that no worker holds, which is what a benchmark of the tables wants and what a
// cluster in service must never have.

import { Hono } from 'hono';
import { z } from 'zod';
import { requireCredential } from '../../http/clusterAuth.ts';
import type { ManagerCredentials } from '../../http/credentials.ts';
import { jsonError } from '../../http/errors.ts';
import { redirectToLeader } from '../../http/leaderRedirect.ts';
import { BodyTooLarge, readBodyText } from '../../http/requestBody.ts';
import { recordObjectSchema } from '../../metadata/commands.ts';
import { proposeCommand } from '../../metadata/proposeCommand.ts';
import { ImageError, type RaftAccess, raftFailure } from '../imageService.ts';

/** Records one request carries: a few Raft entries' worth (commandBatch groups up to 256). */
export const MAX_BULK_RECORDS = 1000;
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

export function bulkRecordRoutes(deps: { raft: RaftAccess; credentials: ManagerCredentials }) {
  const app = new Hono();
  app.post('/v1/cluster/bulk-records', requireCredential(deps.credentials, ['operator']), async (c) => {
    let parsed: z.ZodSafeParseResult<z.infer<typeof bulkSchema>>;
    try {
      parsed = bulkSchema.safeParse(JSON.parse(await readBodyText(c, MAX_BULK_BODY_BYTES)));
    } catch (err) {
      if (err instanceof BodyTooLarge) return jsonError(c, 413, 'PayloadTooLarge', err.message);
      return jsonError(c, 400, 'BadRequest', 'body is not valid JSON');
    }
    if (!parsed.success) return jsonError(c, 400, 'BadRequest', z.prettifyError(parsed.error));
    try {
      return c.json(await recordAll(deps.raft, parsed.data.records));
    } catch (err) {
      if (err instanceof ImageError && err.code === 'NotLeader' && err.leaderUrl) {
        return redirectToLeader(c, err.leaderUrl, err.message);
      }
      if (err instanceof ImageError) {
        c.header('retry-after', '1');
        return jsonError(c, 503, err.code, err.message);
      }
      throw err;
    }
  });
  return app;
}

/** Proposes every record at once: the batch proposer groups them into a few entries. */
async function recordAll(
  raft: RaftAccess,
  records: z.infer<typeof bulkSchema>['records'],
): Promise<BulkRecordOutcome> {
  const results = await Promise.all(records.map((r) => proposeCommand(raft, r).catch(raftFailure)));
  const outcome: BulkRecordOutcome = { created: 0, existing: 0, rejected: [] };
  for (const [i, r] of results.entries()) {
    if (r.ok && r.created) outcome.created += 1;
    else if (r.ok) outcome.existing += 1;
    else outcome.rejected.push({ id: records[i]!.id, code: r.code });
  }
  return outcome;
}
