// Read-only ops views of the replicated tables: the node table (with the leader's liveness view
// applied when this manager leads) and the object-count and disk-usage tables (docs/seed-flow.md), with the
// repair loop's view of what is short of copies.

import { Hono } from 'hono';
import type { NodeState } from '../../metadata/commands.ts';
import type { MetadataStateMachine } from '../../metadata/metadataStateMachine.ts';
import type { RepairMetrics } from '../repairMetrics.ts';
import type { WorkerLiveness } from '../workerLiveness.ts';

/** Workers whose copies repair or a drain still has to move (plan.ts's LEAVING). */
const LEAVING: ReadonlySet<NodeState> = new Set<NodeState>(['down', 'draining', 'drained']);

export function clusterRoutes(opts: {
  metadata: MetadataStateMachine;
  liveness: WorkerLiveness;
  isLeader: () => boolean;
  /** The repair loop's gauges: only the leader's are meaningful (followers hold zeros). */
  repairMetrics?: Pick<RepairMetrics, 'underReplicated' | 'unavailable' | 'lost' | 'lostCounted'>;
}) {
  const app = new Hono();

  app.get('/v1/cluster/nodes', async (c) => {
    const leading = opts.isLeader();
    const nodes = await opts.metadata.listNodes();
    const { nodes: usage } = await opts.metadata.stats();
    return c.json({
      // Only the leader hears heartbeats, so only its answer says how long each worker has been silent.
      observedByLeader: leading,
      nodes: nodes.map((n) => {
        // The table's figures come from the leader's summary every few seconds (none yet on a
        // fresh cluster); the leader's own last heartbeat is fresher.
        const heard = leading ? opts.liveness.heardUsage(n.nodeId) : undefined;
        return {
          id: n.nodeId,
          url: n.url,
          zone: n.zone,
          state: leading ? opts.liveness.effectiveState(n) : n.state,
          tableState: n.state,
          stateSince: new Date(n.stateSince).toISOString(),
          lastSeen: new Date(n.lastSeen).toISOString(),
          silenceMs: leading ? opts.liveness.silenceMs(n.nodeId) : null,
          diskUsed: heard?.diskUsed ?? n.diskUsed,
          diskFree: heard?.diskFree ?? n.diskFree,
          objectCount: heard?.objectCount ?? n.objectCount,
          stored: usage[n.nodeId] ?? { objects: 0, bytes: 0 },
        };
      }),
    });
  });

  /** Names, the bytes they name, and the bytes their distinct content takes: the saving is the difference. */
  const namesFigures = async () => {
    const { names, content } = await opts.metadata.nameStats();
    return {
      count: names.objects,
      bytes: names.bytes,
      storedBytes: content.bytes,
      savedBytes: names.bytes - content.bytes,
    };
  };

  app.get('/v1/cluster/stats', async (c) => {
    const leading = opts.isLeader();
    const stats = await opts.metadata.stats();
    const nodes = await opts.metadata.listNodes();
    const repairing = nodes
      .filter((n) => LEAVING.has(n.state))
      .reduce((sum, n) => sum + (stats.nodes[n.nodeId]?.objects ?? 0), 0);
    const gauge = async (g: RepairMetrics['underReplicated'] | undefined) =>
      leading && g ? ((await g.get()).values[0]?.value ?? 0) : null;
    return c.json({
      appliedIndex: stats.appliedIndex,
      objects: stats.objects,
      bytes: stats.bytes,
      nodes: stats.nodes,
      observedByLeader: leading,
      underReplicated: await gauge(opts.repairMetrics?.underReplicated),
      unavailable: await gauge(opts.repairMetrics?.unavailable),
      lost: await gauge(opts.repairMetrics?.lost),
      // False while a new leader's repair walk has not yet looked at every object: `lost` may rise.
      lostCounted: leading && opts.repairMetrics ? (await gauge(opts.repairMetrics.lostCounted)) === 1 : null,
      repairing,
      names: await namesFigures(),
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
