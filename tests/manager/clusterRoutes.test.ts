// The read-only cluster views on the leader: what `imgvault status` and the dashboard show.

import { afterEach, describe, expect, it } from 'vitest';
import { clusterRoutes } from '../../src/manager/http/clusterRoutes.ts';
import { cleanup, hearAll, setup } from './placementFixture.ts';

afterEach(cleanup);

interface NodeJson {
  id: string;
  diskUsed: number;
  diskFree: number;
}

describe('GET /v1/cluster/nodes', () => {
  it("shows the leader's last heartbeat figures before any summary reached the table", async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s, { w1: 300_000 });
    const nodes = async (leading: boolean) => {
      const app = clusterRoutes({ metadata: s.sm, liveness: s.liveness, isLeader: () => leading });
      const res = await app.request('/v1/cluster/nodes');
      return ((await res.json()) as { nodes: NodeJson[] }).nodes;
    };
    expect(await nodes(true)).toEqual([
      expect.objectContaining({ id: 'w1', diskUsed: 300_000, diskFree: 700_000 }),
      expect.objectContaining({ id: 'w2', diskUsed: 100_000, diskFree: 900_000 }),
    ]);
    // A follower answers from the table, which no summary has reached yet.
    expect(await nodes(false)).toEqual([
      expect.objectContaining({ id: 'w1', diskUsed: 0, diskFree: 0 }),
      expect.objectContaining({ id: 'w2', diskUsed: 0, diskFree: 0 }),
    ]);
  });
});
