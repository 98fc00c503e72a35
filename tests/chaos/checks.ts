// What a healed cluster must show after a chaos run. convergenceProblems() lists what is not yet
// true of the cluster's state (replicas, inventories, digests) and is polled until it is empty or
// the bound runs out; historyProblems() judges what the clients saw, final reads included.

import { waitForLeader } from '../../src/cli/localManagers.ts';
import type { ChaosCluster } from './chaosCluster.ts';
import { checkHistory, type Operation } from './linearizability.ts';

interface ImageJson {
  id: string;
  sha256: string;
  replicas: string[];
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url, { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`${url}: ${res.status}`);
  return (await res.json()) as T;
}

async function listImages(base: string): Promise<ImageJson[]> {
  const items: ImageJson[] = [];
  let after: string | null = null;
  for (let page = 0; page < 1_000; page++) {
    const q: string = after ? `&after=${encodeURIComponent(after)}` : '';
    const body = await getJson<{ items: ImageJson[]; next: string | null }>(
      `${base}/v1/images?limit=1000${q}`,
    );
    items.push(...body.items);
    if (!body.next) return items;
    after = body.next;
  }
  throw new Error('listing did not end within 1000 pages');
}

/** id -> sha256 of every blob a worker holds (read straight from its private port). */
async function inventory(cluster: ChaosCluster, name: string): Promise<Map<string, string>> {
  const res = await cluster.workerGet(cluster.proc(name), '/inventory');
  if (!res.ok) throw new Error(`inventory of ${name}: ${res.status}`);
  const held = new Map<string, string>();
  for (const line of (await res.text()).split('\n')) {
    if (line.trim() === '') continue;
    const { id, sha256 } = JSON.parse(line) as { id: string; sha256: string };
    held.set(id, sha256);
  }
  return held;
}

/** The digests of every manager agree at one applied index (retried while the index moves). */
async function digestProblems(cluster: ChaosCluster): Promise<string[]> {
  let last = '';
  for (let attempt = 0; attempt < 20; attempt++) {
    const digests = await Promise.all(
      cluster.managers().map((m) =>
        getJson<{ appliedIndex: number; sha256: string }>(`${m.proxy.url}/v1/cluster/digest`).then((d) => ({
          m: m.name,
          ...d,
        })),
      ),
    );
    last = digests.map((d) => `${d.m}@${d.appliedIndex}=${d.sha256.slice(0, 12)}`).join(' ');
    if (digests.every((d) => d.appliedIndex === digests[0]!.appliedIndex)) {
      return digests.every((d) => d.sha256 === digests[0]!.sha256) ? [] : [`table digests differ: ${last}`];
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return [`managers never at one applied index: ${last}`];
}

/** Empty when the cluster has converged: every check of the state at rest passes. */
export async function convergenceProblems(cluster: ChaosCluster): Promise<string[]> {
  const problems: string[] = [];
  // The leader's node table applies its own liveness view (a silent worker is `suspect`).
  const base = (await waitForLeader(cluster.managerUrls(), 10_000)).url;
  const { nodes } = await getJson<{ nodes: { id: string; state: string }[] }>(`${base}/v1/cluster/nodes`);
  const up = new Set(nodes.filter((n) => n.state === 'up').map((n) => n.id));
  for (const w of cluster.workers()) if (!up.has(w.name)) problems.push(`worker ${w.name} not up`);
  const images = await listImages(base);
  const known = new Map(images.map((i) => [i.id, i]));
  const held = new Map<string, Map<string, string>>();
  for (const w of cluster.workers()) {
    const blobs = await inventory(cluster, w.name).catch((err: Error) => {
      problems.push(`inventory of ${w.name} unreadable: ${err.message}`);
      return new Map<string, string>();
    });
    held.set(w.name, blobs);
  }
  for (const img of images) {
    const distinct = new Set(img.replicas);
    if (img.replicas.length !== 2 || distinct.size !== 2)
      problems.push(`${img.id}: replicas ${img.replicas}`);
    for (const r of img.replicas) {
      if (!up.has(r)) problems.push(`${img.id}: replica on ${r}, not up`);
      const sha = held.get(r)?.get(img.id);
      if (sha !== img.sha256)
        problems.push(`${img.id}: ${r} holds ${sha ?? 'nothing'}, record says ${img.sha256}`);
    }
  }
  for (const [worker, blobs] of held) {
    for (const id of blobs.keys()) {
      const img = known.get(id);
      if (!img) problems.push(`${worker} keeps ${id}, which no record knows`);
      else if (!img.replicas.includes(worker)) problems.push(`${worker} keeps ${id}, not among its replicas`);
    }
  }
  problems.push(...(await digestProblems(cluster)));
  return problems;
}

export interface HistoryVerdict {
  /** Acknowledged uploads the final reads contradict with no later write to explain it. */
  lost: string[];
  problems: string[];
}

/**
 * `finals` are the reads of every id from every manager after convergence, also in `history`. An
 * acknowledged write settles the id when no other write that could change it (created, deleted
 * or unknown) returned after the settling write was called: then every final read must show it.
 * An acknowledged upload a final read contradicts is lost; an acknowledged delete a final read
 * contradicts is undone. The linearizability check covers every other interleaving.
 */
export function historyProblems(history: Operation[], finals: Operation[]): HistoryVerdict {
  const lost: string[] = [];
  const problems: string[] = [];
  const finalSet = new Set(finals);
  const writes = history.filter((o) => o.input.kind !== 'get' && !finalSet.has(o));
  for (const final of finals) {
    const mine = writes.filter((o) => o.id === final.id);
    for (const settled of mine.filter(settles)) {
      if (mine.some((w) => w !== settled && mayChange(w) && w.ret > settled.call)) continue;
      const want = settled.input.kind === 'put' ? settled.input.sha256 : null;
      const got = final.output.kind === 'found' ? final.output.sha256 : null;
      if (want !== null && got !== want)
        lost.push(`${final.id}: acknowledged ${want.slice(0, 12)}, ${final.client} read ${got ?? 'nothing'}`);
      if (want === null && got !== null)
        problems.push(`${final.id}: acknowledged delete, ${final.client} read ${got.slice(0, 12)}`);
    }
  }
  for (const v of checkHistory(history)) {
    if (v.verdict === 'illegal')
      problems.push(`${v.id}: history of ${v.operations} operations not linearizable`);
    if (v.verdict === 'unknown')
      problems.push(`${v.id}: linearizability search ran out of budget (${v.operations} operations)`);
  }
  return { lost, problems };
}

/** An acknowledged write whose outcome fixes the id's state: it holds these bytes, or none. */
function settles(o: Operation): boolean {
  return o.output.kind === 'created' || o.output.kind === 'same' || o.output.kind === 'deleted';
}

function mayChange(o: Operation): boolean {
  return o.output.kind === 'created' || o.output.kind === 'deleted' || o.output.kind === 'unknown';
}
