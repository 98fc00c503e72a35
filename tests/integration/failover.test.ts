// Uploads through a change of leader, on real processes: a planned transfer, then kill -9 of the
// leader, each while a client keeps uploading to the managers that stay. Workers heartbeat every
// manager, so the new leader places the first upload it gets without waiting for a heartbeat.
// Worker heartbeats are slow here (every 2 s) and the suspect timeout long: a leader that had to
// wait for workers to find it (a cold liveness view) would refuse uploads for a visible while.

import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { ImageCluster, type ManagerProc, pngImage, until } from './imageCluster.ts';

const HEARTBEAT_MS = 2_000;
const SUSPECT_MS = 6_000;

interface Answer {
  at: number;
  manager: string;
  status: number;
  code: string | null;
}

let cluster: ImageCluster;
let startedAt: number;
/** When every worker had registered (start() returns then); their beats to every manager follow. */
let readyAt: number;

beforeAll(async () => {
  startedAt = Date.now();
  cluster = await ImageCluster.start({
    name: 'imgvault-failover',
    managerArgs: [
      '--heartbeat-interval-ms',
      String(HEARTBEAT_MS),
      '--suspect-after-ms',
      String(SUSPECT_MS),
      '--down-after-ms',
      '60000',
    ],
  });
  readyAt = Date.now();
}, 90_000);

afterAll(async () => {
  await cluster?.close();
});

/** One upload, redirects not followed: 201, or a 307 / 503 while leadership moves. */
async function upload(m: ManagerProc): Promise<Answer> {
  const res = await fetch(`${m.url}/v1/images`, {
    method: 'POST',
    body: new Blob([pngImage(4_096)]),
    redirect: 'manual',
    signal: AbortSignal.timeout(15_000),
  });
  const text = await res.text();
  let code: string | null = null;
  if (res.status >= 300) code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? null;
  return { at: Date.now(), manager: m.id, status: res.status, code };
}

/** Uploads to `targets` in turn, one at a time, until `stop()`; every answer is kept. */
function uploadLoad(targets: ManagerProc[]) {
  const answers: Answer[] = [];
  let running = true;
  const done = (async () => {
    for (let i = 0; running; i++) {
      const m = targets[i % targets.length]!;
      answers.push(
        await upload(m).catch((err: unknown) => ({
          at: Date.now(),
          manager: m.id,
          status: 0,
          code: String((err as Error).cause ?? err),
        })),
      );
      await new Promise((r) => setTimeout(r, 50));
    }
  })();
  return {
    answers,
    stop: async () => {
      running = false;
      await done;
    },
  };
}

/** The manager every running manager agrees leads, once it is not `old`. */
async function newLeader(old: ManagerProc): Promise<ManagerProc> {
  return until(
    'a new leader',
    async () => {
      const leader = await cluster.leader(5_000);
      return leader !== old && leader;
    },
    30_000,
  );
}

/** What the failover may answer: 201, or 307 / 503 while leadership moves; never 507 or NoLiveWorker. */
function expectRideThrough(answers: Answer[]): void {
  const refused = answers.filter(
    (a) => !(a.status === 201 || a.status === 307 || (a.status === 503 && a.code !== 'NoLiveWorker')),
  );
  expect(refused).toEqual([]);
  expect(answers.filter((a) => a.status === 201).length).toBeGreaterThan(0);
}

/** The new leader places the first upload it gets, and the load rode through the change. */
async function expectTakeover(leader: ManagerProc, load: ReturnType<typeof uploadLoad>): Promise<void> {
  const first = await upload(leader);
  await new Promise((r) => setTimeout(r, 1_000));
  await load.stop();
  expect(first).toMatchObject({ status: 201 });
  expectRideThrough(load.answers);
}

async function waitPastSuspectTimeout(): Promise<void> {
  // A manager's view of a worker it never heard turns suspect this long after it starts. And a
  // follower is warm only once it has heard each worker: the first beats after registration can
  // reach a follower before the registration applies there (then they are not recorded), so give
  // every worker two more beats. On a loaded machine the cluster's start can take longer than the
  // suspect timeout, and a follower that had heard nobody yet would rightly answer 503.
  const wait = Math.max(startedAt + SUSPECT_MS + 1_000, readyAt + 2 * HEARTBEAT_MS + 1_000) - Date.now();
  if (wait > 0) await new Promise((r) => setTimeout(r, wait));
}

describe('uploads through a change of leader', () => {
  it('a planned transfer: the new leader places the first upload it gets', async () => {
    await waitPastSuspectTimeout();
    const old = await cluster.leader();
    const to = cluster.running().find((m) => m !== old)!;
    const load = uploadLoad(cluster.running());
    await new Promise((r) => setTimeout(r, 300));

    const res = await fetch(`${old.url}/v1/cluster/transfer-leader`, {
      method: 'POST',
      headers: { [CLUSTER_SECRET_HEADER]: cluster.secret, 'content-type': 'application/json' },
      body: JSON.stringify({ to: to.id }),
      signal: AbortSignal.timeout(10_000),
    });
    expect(res.status).toBe(200);
    const leader = await newLeader(old);
    expect(leader).toBe(to);
    await expectTakeover(leader, load);
  }, 90_000);

  it('kill -9 of the leader: no 507, and the new leader places the first upload it gets', async () => {
    await waitPastSuspectTimeout();
    const old = await cluster.leader();
    const survivors = cluster.running().filter((m) => m !== old);
    const load = uploadLoad(survivors);
    await new Promise((r) => setTimeout(r, 300));

    await cluster.killManager(old);
    const leader = await newLeader(old);
    await expectTakeover(leader, load);
  }, 90_000);
});
