// "Fully replicated": every object in the table at exactly 2 replicas, each on a worker the leader
// sees serving, none on a worker the drill took away; optionally also every running worker physically
// holding exactly the copies the table lists there (the excess copies of a returning worker gone).

import { CLUSTER_SECRET_HEADER } from '../../http/clusterAuth.ts';
import type { DrillCluster, DrillProc } from './drillCluster.ts';

interface ObjectRow {
  id: string;
  replicas: string[];
}

async function listObjects(url: string): Promise<ObjectRow[]> {
  const rows: ObjectRow[] = [];
  let after: string | null = null;
  for (let page = 0; page < 1_000; page++) {
    const q = after === null ? '' : `&after=${encodeURIComponent(after)}`;
    const res = await fetch(`${url}/v1/images?limit=1000${q}`, { signal: AbortSignal.timeout(5_000) });
    if (!res.ok) throw new Error(`listing answered ${res.status}`);
    const body = (await res.json()) as { items: ObjectRow[]; next: string | null };
    rows.push(...body.items);
    if (!body.next) return rows;
    after = body.next;
  }
  throw new Error('listing did not end within 1000 pages');
}

async function inventory(w: DrillProc, secret: string): Promise<Set<string>> {
  const res = await fetch(`${w.url}/inventory`, {
    headers: { [CLUSTER_SECRET_HEADER]: secret },
    signal: AbortSignal.timeout(5_000),
  });
  if (!res.ok) throw new Error(`inventory of ${w.id} answered ${res.status}`);
  const ids = (await res.text())
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => (JSON.parse(l) as { id: string }).id);
  return new Set(ids);
}

async function physicallyExact(cluster: DrillCluster, rows: ObjectRow[]): Promise<boolean> {
  for (const w of cluster.workers.filter((x) => x.child !== null)) {
    const held = await inventory(w, cluster.secret);
    for (const row of rows) if (held.has(row.id) !== row.replicas.includes(w.id)) return false;
  }
  return true;
}

/** Up, or suspect for a late heartbeat on a busy machine: not down, draining or drained. */
const serving = (state: string | undefined) => state === 'up' || state === 'suspect';

async function fullyReplicated(cluster: DrillCluster, avoid: string[], physical: boolean): Promise<boolean> {
  const leader = await cluster.leader(5_000);
  const states = await cluster.nodeStates(leader.url);
  const rows = await listObjects(leader.url);
  const placed = rows.every(
    (o) => o.replicas.length === 2 && o.replicas.every((r) => serving(states.get(r)) && !avoid.includes(r)),
  );
  return placed && (!physical || (await physicallyExact(cluster, rows)));
}

/**
 * Polls until fully replicated; resolves with when that was first seen (epoch ms). Throws after
 * `timeoutMs`.
 */
export async function waitFullReplication(
  cluster: DrillCluster,
  opts: { avoid: string[]; physical: boolean; timeoutMs: number },
): Promise<number> {
  const deadline = Date.now() + opts.timeoutMs;
  let lastError = '';
  while (Date.now() < deadline) {
    try {
      if (await fullyReplicated(cluster, opts.avoid, opts.physical)) return Date.now();
    } catch (err) {
      lastError = err instanceof Error ? err.message : String(err);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
  const why = lastError ? ` (last error: ${lastError})` : '';
  throw new Error(`not fully replicated within ${opts.timeoutMs} ms${why}`);
}
