// `imgvault worker remove` on real processes (three managers, three workers): refused while the
// worker is up, accepted once it is drained; the node table and `status` no longer list it, every
// image still reads, and the removed worker, still running, stops (exit 3) on its next heartbeat and
// is refused when started again.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ClusterStatus } from '../../src/cli/clusterStatus.ts';
import { EXIT_REMOVED } from '../../src/storagenode/workerExit.ts';
import { ImageCluster, pngImage, runCli, until } from './imageCluster.ts';

let cluster: ImageCluster;
const stored = new Map<string, Buffer>();

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'imgvault-worker-remove' });
  for (let i = 0; i < 6; i++) {
    const id = `remove-${i}`;
    const bytes = pngImage(4_000 + i * 100);
    await cluster.putImage(id, bytes);
    stored.set(id, bytes);
  }
}, 90_000);

afterAll(async () => {
  await cluster?.close();
});

const urls = () => cluster.managers.map((m) => m.url).join(',');
const admin = (args: string[]) => runCli([...args, '--url', urls(), '--secret-file', cluster.secretFile]);

async function nodeIds(): Promise<string[]> {
  const leader = await cluster.leader();
  const res = await fetch(`${leader.url}/v1/cluster/nodes`, { signal: AbortSignal.timeout(5_000) });
  return ((await res.json()) as { nodes: { id: string }[] }).nodes.map((n) => n.id);
}

/** Resolves with the exit code of the worker's process once it has exited. */
function exitOf(id: string): Promise<number | null> {
  const child = cluster.worker(id).child!;
  if (child.exitCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)));
}

describe('imgvault worker remove', () => {
  it('refuses a worker that is not drained, removes a drained one, which then stops and stays out', async () => {
    const early = await admin(['worker', 'remove', 'w3']);
    expect(early.code).toBe(1);
    expect(early.stderr).toContain('409 NodeNotDrained');
    const unknown = await admin(['worker', 'remove', 'w9']);
    expect([unknown.code, unknown.stderr]).toEqual([1, expect.stringContaining('404 NodeUnknown')]);

    const drain = await admin(['worker', 'drain', 'w3', '--wait-ms', '30000']);
    expect([drain.code, drain.stdout]).toEqual([0, expect.stringContaining('w3 drained')]);
    const exited = exitOf('w3');
    const removed = await admin(['worker', 'remove', 'w3']);
    expect([removed.code, removed.stdout]).toEqual([0, expect.stringContaining('w3 removed')]);
    expect(await nodeIds()).toEqual(['w1', 'w2']);

    // Still running, it hears it was removed at its next heartbeat and stops instead of re-registering.
    expect(await exited).toBe(EXIT_REMOVED);
    cluster.worker('w3').child = null;
    const status = await runCli(['status', '--json', '--url', urls()]);
    const body = JSON.parse(status.stdout) as ClusterStatus;
    expect(body.workers.map((w) => [w.id, w.state])).toEqual([
      ['w1', 'up'],
      ['w2', 'up'],
    ]);
    expect(body.objects).toMatchObject({ count: stored.size, underReplicated: 0, repairing: 0 });
    const leader = await cluster.leader();
    for (const [id, bytes] of stored) {
      const res = await fetch(`${leader.url}/v1/images/${id}`, { signal: AbortSignal.timeout(5_000) });
      expect([id, res.status, Buffer.from(await res.arrayBuffer()).equals(bytes)]).toEqual([id, 200, true]);
    }

    // Started again under its id (same credential, same folder): refused at once, not back in the table.
    cluster.spawnWorker(cluster.worker('w3'));
    expect(await exitOf('w3')).toBe(EXIT_REMOVED);
    cluster.worker('w3').child = null;
    expect(await nodeIds()).toEqual(['w1', 'w2']);
    const again = await admin(['worker', 'remove', 'w3']);
    expect([again.code, again.stdout]).toEqual([0, expect.stringContaining('w3 was already removed')]);
    await until('every manager at one applied index with the same tables', async () => {
      const digests = await Promise.all(
        cluster.managers.map(async (m) => {
          const res = await fetch(`${m.url}/v1/cluster/digest`, { signal: AbortSignal.timeout(5_000) });
          return (await res.json()) as { appliedIndex: number; sha256: string };
        }),
      );
      return digests.every(
        (d) => d.appliedIndex === digests[0]!.appliedIndex && d.sha256 === digests[0]!.sha256,
      )
        ? true
        : null;
    });
  }, 120_000);
});
