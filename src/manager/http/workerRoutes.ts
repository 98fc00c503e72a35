// Internal routes the workers call (docs/worker-protocol.md). A worker credential required, and a
// worker speaks only as the id its credential names (or the single cluster secret). Every
// manager takes heartbeats (the answer says whether it leads); a follower redirects the other
// requests to the leader like any write.

import { Readable } from 'node:stream';
import type { ReadableStream as NodeWebStream } from 'node:stream/web';
import { type Context, Hono } from 'hono';
import { z } from 'zod';
import { identityOf, mayActAs, requireCredential } from '../../http/clusterAuth.ts';
import { credentialsOf, type ManagerCredentials } from '../../http/credentials.ts';
import { jsonError } from '../../http/errors.ts';
import { noLeaderKnown, redirectToLeader } from '../../http/leaderRedirect.ts';
import { NdjsonLineTooLong, ndjsonLines } from '../../http/ndjson.ts';
import { BodyTooLarge, readBodyText } from '../../http/requestBody.ts';
import {
  HEARTBEAT_PATH,
  LOST_COPIES_PATH,
  REGISTER_PATH,
  WIPE_CHECK_PATH,
  WORKERS_PREFIX,
} from '../../protocol/workerPaths.ts';
import {
  type BlobList,
  blobListSchema,
  heartbeatSchema,
  type InventoryLine,
  inventoryLineSchema,
  registrationHeaderSchema,
} from '../../protocol/workerSchemas.ts';
import { ImageError } from '../imageService.ts';
import { InventoryOutOfOrder } from '../inventorySpool.ts';
import {
  InventoryTooLarge,
  UnknownWorker,
  type WorkerRegistry,
  WorkerRemoved,
  WorkerUrlConflict,
} from '../workerRegistry.ts';

const MAX_LINE_BYTES = 4096;
/** MAX_BLOB_LIST_IDS ids of up to 128 characters, quoted, with room to spare. */
const BLOB_LIST_MAX_BYTES = 256 * 1024;

class BadRegistration extends Error {}

/** A worker credential naming another worker than the request does. */
class WrongWorker extends Error {}

/** Throws WrongWorker unless the request's credential may speak as worker `id`. */
function checkSpeaker(c: Context, id: string): void {
  const identity = identityOf(c);
  if (!mayActAs(identity, id)) {
    throw new WrongWorker(`the credential is worker ${identity?.id}'s; it cannot speak for worker ${id}`);
  }
}

function parseLine<T>(schema: z.ZodType<T>, line: string, what: string): T {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    throw new BadRegistration(`${what} is not JSON`);
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw new BadRegistration(`${what}: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

function mapError(c: Context, err: unknown): Response {
  if (
    err instanceof BadRegistration ||
    err instanceof NdjsonLineTooLong ||
    err instanceof InventoryOutOfOrder
  ) {
    return jsonError(c, 400, 'BadRegistration', err.message);
  }
  if (err instanceof WrongWorker) return jsonError(c, 403, 'WrongWorker', err.message);
  if (err instanceof BodyTooLarge) return jsonError(c, 413, 'BodyTooLarge', err.message);
  if (err instanceof UnknownWorker) return jsonError(c, 404, 'UnknownWorker', err.message);
  if (err instanceof WorkerUrlConflict) return jsonError(c, 409, 'WorkerUrlConflict', err.message);
  if (err instanceof WorkerRemoved) return jsonError(c, 410, 'WorkerRemoved', err.message);
  if (err instanceof InventoryTooLarge) return jsonError(c, 413, 'InventoryTooLarge', err.message);
  if (err instanceof ImageError) {
    if (err.code === 'NotLeader' && err.leaderUrl) return redirectToLeader(c, err.leaderUrl, err.message);
    if (err.code === 'NotLeader' || err.code === 'NoLeader') return noLeaderKnown(c, err.message);
    c.header('retry-after', '1');
    return jsonError(c, 503, err.code, err.message);
  }
  throw err;
}

export function workerRoutes(opts: {
  registry: WorkerRegistry;
  /** The single cluster secret; `credentials` wins when given. */
  secret?: string;
  credentials?: ManagerCredentials;
  heartbeatIntervalMs: number;
  /** This manager serves TLS: a worker must be reachable at an https:// URL (src/http/tls.ts). */
  httpsOnly?: boolean;
}) {
  const app = new Hono();
  app.use(`${WORKERS_PREFIX}/*`, requireCredential(credentialsOf(opts), ['worker']));

  app.post(REGISTER_PATH, async (c) => {
    try {
      const web = c.req.raw.body;
      if (!web) throw new BadRegistration('the registration body is empty');
      const lines = ndjsonLines(Readable.fromWeb(web as NodeWebStream), MAX_LINE_BYTES);
      const first = await lines.next();
      if (first.done) throw new BadRegistration('the registration body is empty');
      const header = parseLine(registrationHeaderSchema, first.value, 'registration header');
      checkSpeaker(c, header.id);
      if (opts.httpsOnly && !header.url.startsWith('https://')) {
        throw new BadRegistration(`worker URL ${header.url} must be https:// (this cluster serves TLS)`);
      }
      const inventory = (async function* (): AsyncGenerator<InventoryLine> {
        let n = 1;
        for await (const line of lines) yield parseLine(inventoryLineSchema, line, `inventory line ${n++}`);
      })();
      await opts.registry.register(header, inventory);
      return c.json({ heartbeatIntervalMs: opts.heartbeatIntervalMs });
    } catch (err) {
      return mapError(c, err);
    }
  });

  app.post(HEARTBEAT_PATH, async (c) => {
    try {
      const raw = await c.req.json().catch(() => {
        throw new BadRegistration('heartbeat body is not JSON');
      });
      const usage = heartbeatSchema.safeParse(raw);
      if (!usage.success) throw new BadRegistration(z.prettifyError(usage.error));
      checkSpeaker(c, usage.data.id);
      const answer = await opts.registry.heartbeat(usage.data);
      return c.json({ heartbeatIntervalMs: opts.heartbeatIntervalMs, ...answer });
    } catch (err) {
      return mapError(c, err);
    }
  });

  /** A worker's list of blob ids (`{ id, blobs }`), read with a bound and checked. */
  const blobList = async (c: Context): Promise<BlobList> => {
    const text = await readBodyText(c, BLOB_LIST_MAX_BYTES);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch {
      throw new BadRegistration('body is not JSON');
    }
    const list = blobListSchema.safeParse(raw);
    if (!list.success) throw new BadRegistration(z.prettifyError(list.error));
    checkSpeaker(c, list.data.id);
    return list.data;
  };

  app.post(WIPE_CHECK_PATH, async (c) => {
    try {
      return c.json(await opts.registry.wipeCheck(await blobList(c)));
    } catch (err) {
      return mapError(c, err);
    }
  });

  app.post(LOST_COPIES_PATH, async (c) => {
    try {
      return c.json(await opts.registry.lostCopies(await blobList(c)));
    } catch (err) {
      return mapError(c, err);
    }
  });

  return app;
}
