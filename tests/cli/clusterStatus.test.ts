// `imgvault status` over real HTTP, against stand-in managers that answer the ops reads as a cluster
// in the middle of a rolling restart would: a member that answers but has not rejoined the leader
// must make status unhealthy, as must one the leader is still matching or sending a snapshot.

import { afterEach, describe, expect, it } from 'vitest';
import { gatherStatus } from '../../src/cli/clusterStatus.ts';
import { renderStatus } from '../../src/cli/statusCommand.ts';
import type { RaftPeerView, RaftView } from '../../src/protocol/raftView.ts';
import { type LoopbackServer, listenOnLoopback } from '../helpers/loopbackServer.ts';

const servers: LoopbackServer[] = [];
afterEach(async () => {
  for (const s of servers.splice(0)) await s.close();
});

type Follower = { leader: string | null; progress: RaftPeerView['state']; member?: boolean };

const HEALTHY_STATS = { objects: 0, bytes: 0, underReplicated: 0, unavailable: 0, lost: 0, repairing: 0 };

/**
 * Managers m1 (the leader) .. mN on loopback ports; `followers` says how each other one stands,
 * `tables` what every manager answers for the workers and the object counts.
 */
async function standInCluster(
  followers: Record<string, Follower>,
  tables: { nodes?: unknown[]; stats?: Record<string, unknown> } = {},
  disks: Record<string, RaftView['disk']> = {},
): Promise<string[]> {
  const ids = ['m1', ...Object.keys(followers)];
  const views = new Map<string, RaftView>();
  const urls: Record<string, string> = {};
  for (const id of ids) {
    const server = await listenOnLoopback((req, res) => {
      const disk = disks[id];
      const view = { ...views.get(id)!, ...(disk ? { disk } : {}) };
      const body =
        req.url === '/v1/cluster/raft'
          ? view
          : req.url === '/v1/cluster/nodes'
            ? { nodes: tables.nodes ?? [] }
            : req.url === '/v1/cluster/stats'
              ? { ...HEALTHY_STATS, ...tables.stats }
              : null;
      res.writeHead(body ? 200 : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body ?? {}));
    });
    servers.push(server);
    urls[id] = server.url;
  }
  const members = Object.fromEntries(
    ids.filter((id) => followers[id]?.member !== false).map((id) => [id, urls[id]!]),
  );
  const base = { term: 5, commit: 100, applied: 100, firstIndex: 1, lastIndex: 100, snapshotIndex: 0 };
  const confState = { voters: Object.keys(members), learners: [] };
  const peers: Record<string, RaftPeerView> = {};
  for (const id of Object.keys(members)) {
    const state = followers[id]?.progress ?? 'replicate';
    peers[id] = {
      match: state === 'replicate' ? 100 : 90,
      next: 101,
      state,
      isLearner: false,
      lastContactMs: 10,
    };
  }
  views.set('m1', {
    ...base,
    id: 'm1',
    role: 'leader',
    leader: { id: 'm1', url: urls.m1! },
    confState,
    members,
    peers,
  });
  for (const [id, f] of Object.entries(followers)) {
    const leader = f.leader === null ? null : { id: f.leader, url: urls[f.leader] ?? null };
    views.set(id, { ...base, id, role: 'follower', leader, confState, members });
  }
  return ids.map((id) => urls[id]!);
}

describe('status and the members that answer', () => {
  it('is healthy when every member follows the leader and is replicated to', async () => {
    const urls = await standInCluster({
      m2: { leader: 'm1', progress: 'replicate' },
      m3: { leader: 'm1', progress: 'replicate' },
    });
    const status = await gatherStatus(urls, {});
    expect(status.problems).toEqual([]);
    expect(status.healthy).toBe(true);
  });

  it('is not healthy while a member answers but follows no leader (just restarted)', async () => {
    const urls = await standInCluster({
      m2: { leader: 'm1', progress: 'replicate' },
      m3: { leader: null, progress: 'probe' },
    });
    const status = await gatherStatus(urls, {});
    expect(status.healthy).toBe(false);
    expect(status.problems).toEqual([expect.stringContaining('manager m3 does not follow the leader m1')]);
  });

  it('is not healthy while the leader sends a member a snapshot or matches its log', async () => {
    const urls = await standInCluster({
      m2: { leader: 'm1', progress: 'snapshot' },
      m3: { leader: 'm1', progress: 'probe' },
    });
    const status = await gatherStatus(urls, {});
    expect(status.healthy).toBe(false);
    expect(status.problems).toEqual([
      expect.stringContaining('manager m2 is catching up with the leader (receiving a snapshot'),
      expect.stringContaining('manager m3 is catching up with the leader (its log is being matched'),
    ]);
  });

  it('names a removed manager that still answers as not a member, without calling it a problem', async () => {
    const urls = await standInCluster({
      m2: { leader: 'm1', progress: 'replicate' },
      m3: { leader: 'm1', progress: 'replicate' },
      m4: { leader: null, progress: 'probe', member: false },
    });
    const status = await gatherStatus(urls, {});
    expect(status.healthy).toBe(true);
    expect(status.managers.map((m) => [m.id, m.member])).toEqual([
      ['m1', true],
      ['m2', true],
      ['m3', true],
      ['m4', false],
    ]);
  });
});

describe('status and the objects', () => {
  const inSync = { m2: { leader: 'm1', progress: 'replicate' as const } };

  it('names lost objects apart from unavailable ones, as a problem', async () => {
    const urls = await standInCluster(inSync, { stats: { objects: 3, bytes: 3_000, lost: 2 } });
    const status = await gatherStatus(urls, {});
    expect(status.objects?.lost).toBe(2);
    expect(status.healthy).toBe(false);
    expect(status.problems).toEqual([expect.stringMatching(/^2 objects lost: every worker/)]);
    expect(renderStatus(status)).toContain('unavailable 0, lost 2,');
  });

  it("says the lost count is still being established while a new leader's walk has not looked at every object", async () => {
    const urls = await standInCluster(inSync, {
      stats: { objects: 3, bytes: 3_000, lost: 0, lostCounted: false },
    });
    const status = await gatherStatus(urls, {});
    expect(status.objects?.lostCounted).toBe(false);
    expect(status.healthy).toBe(true);
    expect(status.warnings).toEqual([expect.stringMatching(/^the lost count is still being established/)]);
    expect(renderStatus(status)).toContain('lost 0 (still counting),');
  });
});

describe('status and the room on workers', () => {
  const inSync = { m2: { leader: 'm1', progress: 'replicate' as const } };
  const MiB = 1024 * 1024;
  const worker = (id: string, diskUsed: number, diskFree: number) => ({
    id,
    url: `http://${id}`,
    zone: 'z',
    state: 'up',
    silenceMs: 10,
    diskUsed,
    diskFree,
    stored: { objects: 0, bytes: 0 },
  });
  // 1,000 images of 1 MiB on average.
  const stats = { objects: 1_000, bytes: 1_000 * MiB };

  it('warns of a nearly full worker, and stays healthy', async () => {
    const urls = await standInCluster(inSync, {
      stats,
      nodes: [
        worker('w1', 100 * MiB, 900 * MiB),
        // 5% of its disk free: room for 50 images.
        worker('w2', 950 * MiB, 50 * MiB),
        // 20% of a small disk, room for 40 images.
        worker('w3', 160 * MiB, 40 * MiB),
      ],
    });
    const status = await gatherStatus(urls, {});
    expect(status.healthy).toBe(true);
    expect(status.problems).toEqual([]);
    expect(status.warnings).toEqual([
      'worker w2 is nearly full: 50.0 MiB free (5.0% of its disk, room for about 50 average images)',
      'worker w3 is nearly full: 40.0 MiB free (20.0% of its disk, room for about 40 average images)',
    ]);
    const text = renderStatus(status);
    expect(text).toContain('healthy\nwarnings:\n  - worker w2 is nearly full');
  });

  it('calls a full worker a problem, not also a warning', async () => {
    const urls = await standInCluster(inSync, {
      stats,
      nodes: [
        worker('w1', 100 * MiB, 900 * MiB),
        worker('w2', 100 * MiB, 900 * MiB),
        worker('w3', 999 * MiB, MiB / 2),
      ],
    });
    const status = await gatherStatus(urls, {});
    expect(status.problems).toEqual([expect.stringContaining('worker w3 is full')]);
    expect(status.warnings).toEqual([]);
  });
});

describe('status and the disks of managers', () => {
  const inSync = {
    m2: { leader: 'm1', progress: 'replicate' as const },
    m3: { leader: 'm1', progress: 'replicate' as const },
  };
  const MiB = 1024 * 1024;
  const disk = (reserveInPlace: boolean, freeMiB: number) => ({
    reserveInPlace,
    reserveBytes: 16 * MiB,
    freeBytes: freeMiB * MiB,
  });

  it('warns of followers whose disk is full (reserve released, or less than it free), and stays healthy', async () => {
    const urls = await standInCluster(
      inSync,
      {},
      { m1: disk(true, 500), m2: disk(false, 10), m3: disk(true, 3) },
    );
    const status = await gatherStatus(urls, {});
    expect(status.managers.map((m) => m.disk?.reserveInPlace)).toEqual([true, false, true]);
    expect(status.healthy).toBe(true);
    expect(status.warnings).toEqual([
      'manager m2\'s disk is full: its disk reserve is not in place (16.0 MiB); it takes no upload while it leads, until 32.0 MiB are free on that disk (docs/operations.md, "A full manager disk")',
      'manager m3\'s disk is full: 3.0 MiB free, less than its disk reserve beside it (16.0 MiB); it takes no upload while it leads, until 16.0 MiB are free on that disk (docs/operations.md, "A full manager disk")',
    ]);
    expect(renderStatus(status)).toContain("warnings:\n  - manager m2's disk is full");
  });

  it("says uploads are refused when the leader's disk is full", async () => {
    const urls = await standInCluster(inSync, {}, { m1: disk(false, 10) });
    const status = await gatherStatus(urls, {});
    expect(status.healthy).toBe(false);
    expect(status.problems).toEqual([
      "uploads are refused (507 InsufficientStorage): the leader m1's disk is full (its disk reserve is not in place)",
    ]);
    expect(status.warnings).toEqual([expect.stringMatching(/^manager m1's disk is full/)]);
  });
});
