// kill -9 of the leader, on real processes, with reads (an image's meta, the list) sent to the
// surviving managers right away. Each follower still names the dead leader until its election
// timeout; a read confirmed through it (ReadIndex) would wait out the read timeout (5 s) and end in
// 503 CommitFailed. Instead a read is refused at once while the leader is silent, held until a live
// leader is known, then served: each ends in 200, or in 503 NoLeader with Retry-After after the
// wait (--leader-wait-ms), well before the read timeout.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ImageCluster, type ManagerProc, pngImage, until } from './imageCluster.ts';

interface Answer {
  url: string;
  status: number;
  code: string | null;
  retryAfter: string | null;
  ms: number;
}

/** Default --leader-wait-ms, and the Raft node's read timeout. */
const LEADER_WAIT_MS = 2_500;
const READ_TIMEOUT_MS = 5_000;

let cluster: ImageCluster;

beforeAll(async () => {
  cluster = await ImageCluster.start({ name: 'imgvault-election-read', workers: 2 });
}, 120_000);

afterAll(async () => {
  await cluster?.close();
});

async function get(url: string): Promise<Answer> {
  const started = performance.now();
  const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(30_000) });
  const body = (await res.json().catch(() => null)) as { error?: { code?: string } } | null;
  return {
    url,
    status: res.status,
    code: body?.error?.code ?? null,
    retryAfter: res.headers.get('retry-after'),
    ms: performance.now() - started,
  };
}

/** The meta of `id` and the list, on `m`. */
function reads(m: ManagerProc, id: string): Promise<Answer>[] {
  return [get(`${m.url}/v1/images/${id}/meta`), get(`${m.url}/v1/images?limit=10`)];
}

/** Served, or refused for want of a live leader once the wait ran out; never the read timeout. */
function wrong(a: Answer): boolean {
  const servedOrHeld =
    a.status === 200 || (a.status === 503 && a.code === 'NoLeader' && a.retryAfter !== null);
  // A read held for the whole wait is answered right after it, before the read timeout.
  return !servedOrHeld || a.ms >= Math.min(LEADER_WAIT_MS + 2_000, READ_TIMEOUT_MS - 500);
}

describe('reads on the survivors right after kill -9 of the leader', () => {
  it('end in 200 or 503 NoLeader, well before the read timeout, never CommitFailed', async () => {
    const dead = await cluster.leader();
    const survivors = cluster.running().filter((m) => m !== dead);
    const stored = await fetch(`${dead.url}/v1/images`, {
      method: 'POST',
      body: new Blob([pngImage(8_192)]),
    });
    expect(stored.status).toBe(201);
    const { id } = (await stored.json()) as { id: string };
    for (const m of survivors) {
      await until(
        `${m.id} serves the meta`,
        async () => (await get(`${m.url}/v1/images/${id}/meta`)).status === 200,
        30_000,
      );
    }

    await cluster.killManager(dead);
    const answers = await Promise.all(survivors.flatMap((m) => [...reads(m, id), ...reads(m, id)]));
    const for2s = Date.now() + 2_000;
    for (let i = 0; Date.now() < for2s; i++)
      answers.push(...(await Promise.all(reads(survivors[i % 2]!, id))));

    expect(answers.filter(wrong)).toEqual([]);
    await until(
      'the meta through both survivors under the new leader',
      async () =>
        (await Promise.all(survivors.map((m) => get(`${m.url}/v1/images/${id}/meta`)))).every(
          (a) => a.status === 200,
        ),
      30_000,
    );
  }, 120_000);
});
