// Read-only ops views of the replicated tables: the node table (with the leader's liveness view
// applied when this manager leads) and the seed's object-count and disk-usage tables.

import { Hono } from 'hono';
import type { WorkerLiveness } from '../manager/workerLiveness.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';

export function clusterRoutes(opts: {
  metadata: MetadataStateMachine;
  liveness: WorkerLiveness;
  isLeader: () => boolean;
}) {
  const app = new Hono();

  app.get('/v1/cluster/nodes', async (c) => {
    const leading = opts.isLeader();
    const nodes = await opts.metadata.listNodes();
    const { nodes: usage } = await opts.metadata.stats();
    return c.json({
      // Only the leader hears heartbeats, so only its answer says how long each worker has been silent.
      observedByLeader: leading,
      nodes: nodes.map((n) => ({
        id: n.nodeId,
        url: n.url,
        zone: n.zone,
        state: leading ? opts.liveness.effectiveState(n) : n.state,
        tableState: n.state,
        stateSince: new Date(n.stateSince).toISOString(),
        lastSeen: new Date(n.lastSeen).toISOString(),
        silenceMs: leading ? opts.liveness.silenceMs(n.nodeId) : null,
        diskUsed: n.diskUsed,
        diskFree: n.diskFree,
        objectCount: n.objectCount,
        stored: usage[n.nodeId] ?? { objects: 0, bytes: 0 },
      })),
    });
  });

  app.get('/v1/cluster/stats', async (c) => {
    const stats = await opts.metadata.stats();
    return c.json({
      appliedIndex: stats.appliedIndex,
      objects: stats.objects,
      bytes: stats.bytes,
      nodes: stats.nodes,
    });
  });

  // Open like the other read-only views. It scans every table, so it is for drills and tests (do
  // the managers at the same applied index hold the same rows?), not for frequent polling.
  app.get('/v1/cluster/digest', async (c) => {
    const digest = await opts.metadata.tableDigest();
    return c.json({ appliedIndex: digest.appliedIndex, sha256: digest.sha256 });
  });

  return app;
}
