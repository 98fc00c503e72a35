// Operator actions on the cluster (an operator credential, or the single cluster secret, required):
// draining a worker, taking a drain back, and removing a drained worker for good. A follower
// redirects to the leader like any write.

import { type Context, Hono } from 'hono';
import { RaftError } from '../../consensus/raftNode.ts';
import { requireCredential } from '../../http/clusterAuth.ts';
import { credentialsOf, type ManagerCredentials } from '../../http/credentials.ts';
import { jsonError } from '../../http/errors.ts';
import { noLeaderKnown, redirectToLeader } from '../../http/leaderRedirect.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import { DrainError, drainStatus, removeWorker, startDrain, undrain } from '../drain.ts';
import { ImageError, type RaftAccess } from '../imageService.ts';

export function adminRoutes(opts: {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  /** The single cluster secret; `credentials` wins when given. */
  secret?: string;
  credentials?: ManagerCredentials;
  /** Told once a drain is committed (the repair loop starts moving its objects at once). */
  onDrain?: (nodeId: string) => void;
}) {
  const app = new Hono();
  const auth = requireCredential(credentialsOf(opts), ['operator']);
  app.use('/v1/cluster/nodes/:id/drain', auth);
  app.use('/v1/cluster/nodes/:id/undrain', auth);

  app.post('/v1/cluster/nodes/:id/drain', (c) =>
    operatorAction(c, 202, async (id) => {
      const status = await startDrain(opts.raft, opts.metadata, id);
      opts.onDrain?.(id);
      return status;
    }),
  );

  // Undrain needs no wake-up: the node is no longer leaving, so the next pass simply finds nothing.
  app.post('/v1/cluster/nodes/:id/undrain', (c) =>
    operatorAction(c, 200, (id) => undrain(opts.raft, opts.metadata, id)),
  );

  // The auth on the route itself: GET /v1/cluster/nodes/:id, if one comes, is not an operator's.
  app.delete('/v1/cluster/nodes/:id', auth, (c) =>
    operatorAction(c, 200, (id) => removeWorker(opts.raft, opts.metadata, id)),
  );

  app.get('/v1/cluster/nodes/:id/drain', async (c) => {
    const status = await drainStatus(opts.metadata, c.req.param('id'));
    if (!status) return jsonError(c, 404, 'NodeUnknown', `node ${c.req.param('id')} is not registered`);
    return c.json(status);
  });

  return app;
}

/** Runs one operator action for the node in the path and maps its typed errors to HTTP. */
async function operatorAction(
  c: Context,
  okStatus: 200 | 202,
  action: (nodeId: string) => Promise<object>,
): Promise<Response> {
  try {
    return c.json(await action(c.req.param('id') ?? ''), okStatus);
  } catch (err) {
    if (err instanceof DrainError) {
      const status = err.code === 'InvalidId' ? 400 : err.code === 'NodeUnknown' ? 404 : 409;
      return jsonError(c, status, err.code, err.message);
    }
    if (err instanceof ImageError && err.code === 'NotLeader' && err.leaderUrl) {
      return redirectToLeader(c, err.leaderUrl, err.message);
    }
    if (
      (err instanceof ImageError && (err.code === 'NotLeader' || err.code === 'NoLeader')) ||
      (err instanceof RaftError && err.code === 'NotLeader')
    ) {
      return noLeaderKnown(c, err.message);
    }
    if (err instanceof ImageError || err instanceof RaftError) {
      c.header('retry-after', '1');
      return jsonError(c, 503, 'NoLeader', err.message);
    }
    throw err;
  }
}
