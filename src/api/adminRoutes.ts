// Operator actions on the cluster (cluster secret required): draining a worker. A follower
// redirects to the leader like any write.

import { Hono } from 'hono';
import { RaftError } from '../consensus/raftNode.ts';
import { DrainError, drainStatus, startDrain } from '../manager/drain.ts';
import { ImageError, type RaftAccess } from '../manager/imageService.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { requireClusterSecret } from './clusterAuth.ts';
import { jsonError } from './errors.ts';
import { redirectToLeader } from './leaderRedirect.ts';

export function adminRoutes(opts: {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  secret: string;
  /** Told once a drain is committed (the repair loop starts moving its objects at once). */
  onDrain?: (nodeId: string) => void;
}) {
  const app = new Hono();
  app.use('/v1/cluster/nodes/:id/drain', requireClusterSecret(opts.secret));

  app.post('/v1/cluster/nodes/:id/drain', async (c) => {
    try {
      const status = await startDrain(opts.raft, opts.metadata, c.req.param('id'));
      opts.onDrain?.(c.req.param('id'));
      return c.json(status, 202);
    } catch (err) {
      if (err instanceof DrainError) {
        const status = err.code === 'InvalidId' ? 400 : err.code === 'NodeUnknown' ? 404 : 409;
        return jsonError(c, status, err.code, err.message);
      }
      if (err instanceof ImageError && err.code === 'NotLeader' && err.leaderUrl) {
        return redirectToLeader(c, err.leaderUrl, err.message);
      }
      if (err instanceof ImageError || err instanceof RaftError) {
        c.header('retry-after', '1');
        return jsonError(c, 503, 'NoLeader', err.message);
      }
      throw err;
    }
  });

  app.get('/v1/cluster/nodes/:id/drain', async (c) => {
    const status = await drainStatus(opts.metadata, c.req.param('id'));
    if (!status) return jsonError(c, 404, 'NodeUnknown', `node ${c.req.param('id')} is not registered`);
    return c.json(status);
  });

  return app;
}
