// Every worker out of room: uploads get a clear 507, the images stored before still read back, and
// `imgvault status` says the cluster is not healthy and why (it said "healthy" while every upload
// was refused, in a user's try). Real processes; each worker's room is a --quota-bytes, which its
// heartbeats report as its disk (docs/worker-protocol.md).

import { afterAll, beforeAll, expect, it } from 'vitest';
import type { ClusterStatus } from '../../src/cli/clusterStatus.ts';
import { ImageCluster, pngImage, runCli, until } from './imageCluster.ts';

const IMAGE_BYTES = 300_000;
let cluster: ImageCluster;

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'imgvault-full', workerArgs: ['--quota-bytes', '1MiB'] });
}, 90_000);

afterAll(async () => {
  await cluster?.close();
});

it('every worker full: 507 InsufficientStorage, earlier images read back, status names the full workers', async () => {
  const stored = new Map<string, Buffer>();
  let refused: { status: number; body: { error?: { code: string } } } | null = null;
  // Three workers of 1 MiB hold nine copies of 300 kB: the fifth upload at the latest finds no room.
  for (let i = 0; i < 12 && refused === null; i++) {
    const bytes = pngImage(IMAGE_BYTES + i);
    const leader = await cluster.leader();
    const res = await fetch(`${leader.url}/v1/images`, { method: 'POST', body: bytes });
    const body = (await res.json()) as { id?: string; error?: { code: string } };
    if (res.status === 201) stored.set(body.id!, bytes);
    else refused = { status: res.status, body };
  }
  expect(refused).toEqual({
    status: 507,
    body: { error: expect.objectContaining({ code: 'InsufficientStorage' }) },
  });
  expect(stored.size).toBeGreaterThan(0);

  const leader = await cluster.leader();
  for (const [id, bytes] of stored) {
    const res = await fetch(`${leader.url}/v1/images/${id}`);
    expect([id, res.status, Buffer.from(await res.arrayBuffer()).equals(bytes)]).toEqual([id, 200, true]);
  }

  const urls = cluster.managers.map((m) => m.url).join(',');
  // The leader's figures come from heartbeats: wait for the one after the last copy.
  const { code, status } = await until(
    'status to name the full workers',
    async () => {
      const r = await runCli(['status', '--json', '--url', urls]);
      const s = JSON.parse(r.stdout) as ClusterStatus;
      return s.problems.some((p) => p.startsWith('uploads are refused')) ? { code: r.code, status: s } : null;
    },
    30_000,
  );
  expect(code).toBe(3);
  expect(status.healthy).toBe(false);
  const full = status.problems.filter((p) =>
    /^worker w\d is full: .* free, less than an average image/.test(p),
  );
  expect(full.length).toBeGreaterThanOrEqual(2);
  const text = await runCli(['status', '--url', urls]);
  expect(text.stdout).toContain('NOT HEALTHY');
  expect(text.stdout).toContain('uploads are refused (507 InsufficientStorage)');
}, 120_000);
