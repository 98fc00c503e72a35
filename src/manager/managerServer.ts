// The manager's HTTP surface: Raft traffic, health, cluster status and admin, plus the surfaces of
// its mode: the image API and worker protocol (mounted by the caller), or, in kv mode, a replicated
// key -> value API that exercises the whole write and linearizable-read paths.

import { randomUUID } from 'node:crypto';
import { zValidator } from '@hono/zod-validator';
import { type Context, Hono } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { Registry } from 'prom-client';
import { z } from 'zod';
import { RaftError, type RaftNode } from '../consensus/raftNode.ts';
import { clientGate } from '../http/clientAuth.ts';
import { requireCredential } from '../http/clusterAuth.ts';
import { credentialsOf, type ManagerCredentials } from '../http/credentials.ts';
import { noLeaderKnown, redirectToLeader } from '../http/leaderRedirect.ts';
import { BodyTooLarge, readBodyText } from '../http/requestBody.ts';
import { KV_VALUE_MAX, type KvStateMachine, kvKeySchema } from '../metadata/kvStateMachine.ts';
import { awaitLiveLeader } from './http/awaitLiveLeader.ts';
import { dashboardCors } from './http/dashboardCors.ts';
import type { LeaderWait } from './leaderWait.ts';
import { memberIdSchema, memberUrlSchema } from './managerConfig.ts';
import type { ManagerDisk } from './managerDisk.ts';
import { raftViewOf } from './raftView.ts';

export interface ManagerAppDeps {
  node: RaftNode;
  /** kv mode only. */
  kv?: KvStateMachine;
  /** Sub-apps mounted at the root (images mode: public, worker and cluster routes). */
  surfaces?: Hono[];
  /** Bearer tokens required on every route but the open ones (CLIENT_GATE_OPEN); empty = open. */
  clientTokens?: string[];
  /** Bearer tokens that open GET and HEAD only (a read-only client). */
  readOnlyTokens?: string[];
  /** Bearer tokens that open /metrics only. */
  metricsTokens?: string[];
  /** The single cluster secret; `credentials` wins when given. */
  secret?: string;
  /** Per-role credentials: raft for peers, operator for the admin routes. */
  credentials?: ManagerCredentials;
  /** The Raft transport's receiving side (POST /raft/messages), mounted at the root. */
  raftApp: Hono;
  metrics?: Registry;
  /** This manager serves TLS: a member added at a plain http:// URL is refused (src/http/tls.ts). */
  httpsOnly?: boolean;
  /** The manager's disk (managerDisk.ts), shown in GET /v1/cluster/raft. */
  disk?: Pick<ManagerDisk, 'view'>;
  /**
   * Requests that need the leader wait for a live one before they are redirected (awaitLiveLeader.ts);
   * without it they are redirected to the leader this node knows, alive or not.
   */
  leaderWait?: LeaderWait;
}

/**
 * What the client gate lets through: /healthz (probes carry no credential), and the routes that
 * refuse a request without their role's credential themselves: Raft traffic (raft), the worker
 * protocol (worker) and the operator actions (operator). An operator needs no client token besides.
 */
const CLIENT_GATE_OPEN: readonly RegExp[] = [
  /^\/healthz$/,
  // The dashboard's page and static files: no data in them (dashboardRoutes.ts).
  /^\/$/,
  /^\/dashboard\/[\w.-]+$/,
  /^\/raft\/(messages|stream)$/,
  /^\/raft\/snapshot(\/message)?$/,
  /^\/internal\/v1\/workers\//,
  /^\/v1\/cluster\/(transfer-leader|members(\/[^/]+)?)$/,
  /^\/v1\/cluster\/nodes\/[^/]+(\/(drain|undrain))?$/,
  // Mounted only with --bulk-record-load (bulkRecordRoutes.ts).
  /^\/v1\/cluster\/bulk-records$/,
  // S3 requests forwarded by a follower, and S3 key administration (src/manager/s3).
  /^\/internal\/s3\//,
  /^\/v1\/cluster\/s3\/keys(\/[^/]+)?$/,
];

/** A founding manager reads its peers' Raft view with its raft credential (bootstrapGuard.ts); an operator too. */
const SECRET_READS: readonly RegExp[] = [/^\/v1\/cluster\/raft$/];

function errorBody(code: string, message: string) {
  return { error: { code, message } };
}

/** zod-validator hook: a validation failure becomes our JSON error, not the library's. */
function badRequest(result: { success: boolean; error?: unknown }, c: Context) {
  if (!result.success) {
    const message = result.error instanceof z.ZodError ? z.prettifyError(result.error) : 'invalid request';
    return c.json(errorBody('BadRequest', message), 400);
  }
}

/**
 * Maps a driver error to HTTP. A write or admin request on a follower is redirected (307 keeps the
 * method and body) to the same path on the leader; with no leader known the client should retry.
 */
function raftErrorResponse(c: Context, err: RaftError, redirect: boolean): Response {
  switch (err.code) {
    case 'NotLeader': {
      if (redirect && err.leader?.url) {
        return redirectToLeader(c, err.leader.url, err.message);
      }
      // Marked for the wait for a live leader (awaitLiveLeader.ts), reads as well as writes.
      if (!err.leader) return noLeaderKnown(c, err.message);
      c.header('Retry-After', '1');
      return c.json(errorBody(err.leader ? 'NotLeader' : 'NoLeader', err.message), 503);
    }
    case 'ProposalDropped':
    case 'Timeout':
    case 'Stopped':
      c.header('Retry-After', '1');
      return c.json(errorBody(err.code, err.message), 503);
    case 'ConfChangeInProgress':
    case 'TransferInProgress':
    case 'DuplicateRequest':
      return c.json(errorBody(err.code, err.message), 409);
    case 'InvalidMember':
    case 'InvalidProposal':
      return c.json(errorBody(err.code, err.message), 400);
  }
}

export function createManagerApp(deps: ManagerAppDeps): Hono {
  const { node } = deps;
  const credentials = credentialsOf(deps);
  const app = new Hono();

  app.onError((err, c) => {
    if (err instanceof RaftError) return raftErrorResponse(c, err, true);
    if (err instanceof HTTPException) {
      return c.json(errorBody('BadRequest', err.message), err.status as ContentfulStatusCode);
    }
    return c.json(errorBody('Internal', 'internal error'), 500);
  });
  app.notFound((c) => c.json(errorBody('NotFound', `no route for ${c.req.method} ${c.req.path}`), 404));

  app.use(
    '*',
    dashboardCors(() => Object.values(node.status().members)),
  );
  app.use(
    '*',
    clientGate({
      tokens: deps.clientTokens ?? [],
      readOnlyTokens: deps.readOnlyTokens ?? [],
      metricsTokens: deps.metricsTokens ?? [],
      open: (path) => CLIENT_GATE_OPEN.some((r) => r.test(path)),
      credentialPaths: {
        accepts: (presented) => credentials.authenticate(presented, ['raft', 'operator'], node.id) !== null,
        match: (path) => SECRET_READS.some((r) => r.test(path)),
      },
    }),
  );
  if (deps.leaderWait) app.use('*', awaitLiveLeader(deps.leaderWait, app));
  app.route('/', deps.raftApp);

  app.get('/healthz', (c) => c.json({ ok: true, id: node.id }));

  if (deps.metrics) {
    const registry = deps.metrics;
    app.get('/metrics', async (c) =>
      c.text(await registry.metrics(), 200, { 'content-type': registry.contentType }),
    );
  }

  app.get('/v1/cluster/raft', (c) => c.json(raftViewOf(node.status(), deps.disk?.view())));

  if (deps.kv) mountKvRoutes(app, node, deps.kv);
  for (const surface of deps.surfaces ?? []) app.route('/', surface);

  // Admin routes need an operator credential; each names the middleware itself because a `use('*')`
  // on a sub-app mounted at /v1/cluster would also guard GET /v1/cluster/raft.
  const auth = requireCredential(credentials, ['operator']);
  const admin = new Hono();
  admin.post(
    '/transfer-leader',
    auth,
    zValidator('json', z.object({ to: memberIdSchema }), badRequest),
    async (c) => {
      const { to } = c.req.valid('json');
      await node.transferLeadership(to);
      return c.json({ leader: to });
    },
  );
  admin.post(
    '/members',
    auth,
    zValidator('json', z.object({ id: memberIdSchema, url: memberUrlSchema }), badRequest),
    async (c) => {
      const { id, url } = c.req.valid('json');
      if (deps.httpsOnly && !url.startsWith('https://')) {
        return c.json(
          errorBody('BadRequest', `member URL ${url} must be https:// (this cluster serves TLS)`),
          400,
        );
      }
      await node.addMember(id, url);
      return c.json({ id, url, voter: true }, 200);
    },
  );
  admin.delete(
    '/members/:id',
    auth,
    zValidator('param', z.object({ id: memberIdSchema }), badRequest),
    async (c) => {
      const { id } = c.req.valid('param');
      const { voters, learners } = node.status().confState;
      if (!voters.includes(id) && !learners.includes(id)) {
        return c.json(errorBody('NotFound', `${id} is not a member`), 404);
      }
      await node.removeMember(id);
      return c.json({ id, removed: true });
    },
  );
  app.route('/v1/cluster', admin);

  return app;
}

function mountKvRoutes(app: Hono, node: RaftNode, kv: KvStateMachine): void {
  const keyParam = zValidator('param', z.object({ key: kvKeySchema }), badRequest);

  const putBody = z.object({ value: z.string().max(KV_VALUE_MAX) });
  app.put('/v1/kv/:key', keyParam, async (c) => {
    const { key } = c.req.valid('param');
    let value: string;
    try {
      const parsed = putBody.safeParse(JSON.parse(await readBodyText(c, KV_VALUE_MAX * 2)));
      if (!parsed.success) return c.json(errorBody('BadRequest', z.prettifyError(parsed.error)), 400);
      value = parsed.data.value;
    } catch (err) {
      if (err instanceof BodyTooLarge) {
        c.header('connection', 'close');
        return c.json(errorBody('PayloadTooLarge', err.message), 413);
      }
      return c.json(errorBody('BadRequest', 'body is not valid JSON'), 400);
    }
    const requestId = randomUUID();
    const command = JSON.stringify({ op: 'put', key, value, requestId });
    const result = await node.propose(command, requestId);
    if (typeof result === 'object' && result !== null && 'error' in result) {
      return c.json(errorBody('Rejected', String((result as { error: unknown }).error)), 400);
    }
    return c.json(result as object, 200);
  });

  app.get('/v1/kv/:key', keyParam, async (c) => {
    const { key } = c.req.valid('param');
    try {
      await node.readIndex();
    } catch (err) {
      // Reads are served by any manager: never redirect, retry when there is a leader again.
      if (err instanceof RaftError) return raftErrorResponse(c, err, false);
      throw err;
    }
    const value = kv.get(key);
    if (value === undefined) return c.json(errorBody('NotFound', `no key ${key}`), 404);
    return c.json({ key, value });
  });
}
