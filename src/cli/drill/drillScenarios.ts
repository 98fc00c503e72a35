// The faults. Each drill does its fault while the load runs and hands back when it struck, the
// leader's term before it, and (for worker drills) a promise of the moment the cluster was fully
// replicated again. Every wait is bounded by the drill's recovery timeout.

import { rm } from 'node:fs/promises';
import { CLUSTER_SECRET_HEADER } from '../../http/clusterAuth.ts';
import { peersSpec } from '../localManagers.ts';
import type { DrillCluster, DrillProc } from './drillCluster.ts';
import { drillRequest } from './drillHttp.ts';
import type { DrillLedger } from './drillLedger.ts';
import { waitFullReplication } from './replicationWatch.ts';

export interface FaultContext {
  cluster: DrillCluster;
  ledger: DrillLedger;
  recoveryTimeoutMs: number;
  /** How long leader-pause keeps the leader stopped. */
  pauseMs: number;
}

export interface Fault {
  description: string;
  /** ms since the drill's start. */
  at: number;
  termBefore: number;
  notes: string[];
  /** Worker drills: resolves with when (epoch ms) the cluster was fully replicated again. */
  replicated?: Promise<number>;
  /** Epoch ms of the fault, for fullReplicationMs. */
  atEpoch: number;
}

export const DRILL_NAMES = [
  'leader-kill',
  'leader-pause',
  'follower-restart',
  'worker-kill',
  'worker-return',
  'manager-replace',
] as const;
export type DrillName = (typeof DRILL_NAMES)[number];

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, probe: () => Promise<T | null>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const v = await probe().catch(() => null);
    if (v !== null) return v;
    await sleep(100);
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
}

async function leaderAndTerm(ctx: FaultContext): Promise<{ leader: DrillProc; term: number }> {
  const leader = await ctx.cluster.leader(ctx.recoveryTimeoutMs);
  const view = await ctx.cluster.raftView(leader, 2_000);
  return { leader, term: view?.term ?? 0 };
}

function mark(ctx: FaultContext) {
  return { at: ctx.ledger.now(), atEpoch: Date.now() };
}

/** Until `m` answers and has applied everything the leader had committed when asked. */
async function caughtUp(ctx: FaultContext, m: DrillProc): Promise<void> {
  const target = await until(
    'a leader commit index',
    async () => (await ctx.cluster.raftView(await ctx.cluster.leader(2_000)))?.commit ?? null,
    ctx.recoveryTimeoutMs,
  );
  await until(
    `${m.id} caught up`,
    async () => {
      const v = await ctx.cluster.raftView(m);
      return v && v.applied >= target && v.leader !== null ? true : null;
    },
    ctx.recoveryTimeoutMs,
  );
}

async function leaderKill(ctx: FaultContext): Promise<Fault> {
  const { leader, term } = await leaderAndTerm(ctx);
  const t = mark(ctx);
  await ctx.cluster.kill(leader);
  const next = await ctx.cluster.leader(ctx.recoveryTimeoutMs);
  return {
    ...t,
    description: `kill -9 of leader ${leader.id}`,
    termBefore: term,
    notes: [`new leader ${next.id}`],
  };
}

/** Deletes up to `n` acknowledged images through `via`; the ids whose delete was acknowledged. */
async function deleteSome(ctx: FaultContext, via: DrillProc, n: number): Promise<string[]> {
  const deleted: string[] = [];
  for (let i = 0; i < n; i++) {
    // Picked and marked in one step: the load's clients never pick an image marked `deleting`.
    const id = ctx.ledger.idsIn('acked')[0];
    if (id === undefined) break;
    ctx.ledger.setState(id, 'deleting');
    const res = await drillRequest(
      `${via.url}/v1/images/${encodeURIComponent(id)}`,
      { method: 'DELETE' },
      5_000,
    );
    ctx.ledger.record('delete', res.status === 204, res.status);
    if (res.status === 404) {
      // The one delete ever sent for this acknowledged image found it gone: a loss, as in the load.
      ctx.ledger.setState(id, 'deleted');
      ctx.ledger.problems.push({ kind: 'missing', id, where: `delete via ${via.id}`, status: 404 });
      continue;
    }
    ctx.ledger.setState(id, res.status === 204 ? 'deleted' : 'uncertain');
    if (res.status === 204) deleted.push(id);
  }
  return deleted;
}

async function leaderPause(ctx: FaultContext): Promise<Fault> {
  const { leader: old, term } = await leaderAndTerm(ctx);
  const t = mark(ctx);
  ctx.cluster.pause(old);
  const next = await ctx.cluster.leader(ctx.recoveryTimeoutMs);
  const deleted = await deleteSome(ctx, next, 5);
  await sleep(Math.max(0, t.atEpoch + ctx.pauseMs - Date.now()));
  // Sent while the old leader is still stopped: they wait in its accept queue and are the first
  // thing it handles when it wakes, still believing it leads. No redirect is followed: its own answer counts.
  const reads = deleted.map((id) =>
    drillRequest(`${old.url}/v1/images/${encodeURIComponent(id)}`, { method: 'GET' }, 10_000, 0),
  );
  await sleep(200);
  const resumedAt = Date.now();
  ctx.cluster.resume(old);
  const steppedDown = until(
    `${old.id} to step down`,
    async () => ((await ctx.cluster.raftView(old))?.role === 'follower' ? Date.now() : null),
    ctx.recoveryTimeoutMs,
  );
  const answers = await Promise.all(reads);
  answers.forEach((res, i) => {
    if (res.status === 200)
      ctx.ledger.problems.push({ kind: 'stale', id: deleted[i]!, where: old.id, status: 200 });
  });
  const stepDownMs = (await steppedDown) - resumedAt;
  const statuses = answers.map((a) => String(a.status)).join(', ') || 'none (no delete was acknowledged)';
  return {
    ...t,
    description: `SIGSTOP of leader ${old.id} for ${ctx.pauseMs} ms, then SIGCONT`,
    termBefore: term,
    notes: [
      `new leader ${next.id}; ${deleted.length} images deleted through it while ${old.id} was stopped`,
      `reads of those ids through ${old.id} on waking answered: ${statuses}`,
      `${old.id} answered as a follower ${stepDownMs} ms after SIGCONT`,
    ],
  };
}

async function followerRestart(ctx: FaultContext): Promise<Fault> {
  const { leader, term } = await leaderAndTerm(ctx);
  const follower = ctx.cluster.running().find((m) => m !== leader)!;
  const t = mark(ctx);
  await ctx.cluster.stopGracefully(follower);
  await sleep(1_000);
  ctx.cluster.restartManager(follower);
  await caughtUp(ctx, follower);
  follower.serving = true;
  return {
    ...t,
    description: `stop (SIGTERM) and restart of follower ${follower.id}`,
    termBefore: term,
    notes: [],
  };
}

async function workerKill(ctx: FaultContext): Promise<Fault> {
  const { term } = await leaderAndTerm(ctx);
  const victim = ctx.cluster.workers[0]!;
  const t = mark(ctx);
  await ctx.cluster.kill(victim);
  const replicated = waitFullReplication(ctx.cluster, {
    avoid: [victim.id],
    physical: false,
    timeoutMs: ctx.recoveryTimeoutMs,
  });
  replicated.catch(() => {});
  return { ...t, description: `kill -9 of worker ${victim.id}`, termBefore: term, notes: [], replicated };
}

async function workerReturn(ctx: FaultContext): Promise<Fault> {
  const { term } = await leaderAndTerm(ctx);
  const victim = ctx.cluster.workers[0]!;
  const killedAt = Date.now();
  await ctx.cluster.kill(victim);
  const repaired = await waitFullReplication(ctx.cluster, {
    avoid: [victim.id],
    physical: false,
    timeoutMs: ctx.recoveryTimeoutMs,
  });
  const t = mark(ctx);
  ctx.cluster.startWorker(victim);
  const replicated = (async () => {
    await ctx.cluster.waitForWorkersUp(ctx.recoveryTimeoutMs);
    return waitFullReplication(ctx.cluster, { avoid: [], physical: true, timeoutMs: ctx.recoveryTimeoutMs });
  })();
  replicated.catch(() => {});
  return {
    ...t,
    description: `restart of worker ${victim.id}, killed with -9 and repaired around`,
    termBefore: term,
    notes: [`repair after the kill took ${repaired - killedAt} ms`],
    replicated,
  };
}

/** An admin call to the leader with the cluster secret, repeated while it cannot be answered. */
async function admin(ctx: FaultContext, method: string, path: string, body?: unknown): Promise<void> {
  await until(
    `${method} ${path}`,
    async () => {
      const leader = await ctx.cluster.leader(2_000);
      const res = await drillRequest(
        `${leader.url}${path}`,
        {
          method,
          headers: { [CLUSTER_SECRET_HEADER]: ctx.cluster.secret, 'content-type': 'application/json' },
          ...(body === undefined ? {} : { body: Buffer.from(JSON.stringify(body)) }),
        },
        30_000,
      );
      if (res.status === 200) return true;
      if (res.status === 503 || typeof res.status === 'string') return null;
      throw new Error(`${method} ${path} answered ${res.status}: ${res.body.toString('utf8').slice(0, 200)}`);
    },
    ctx.recoveryTimeoutMs,
  );
}

async function managerReplace(ctx: FaultContext): Promise<Fault> {
  const { term } = await leaderAndTerm(ctx);
  const lost = ctx.cluster.managers.find((m) => m.id === 'm3') ?? ctx.cluster.managers.at(-1)!;
  const t = mark(ctx);
  await ctx.cluster.kill(lost);
  await rm(lost.dataDir, { recursive: true, force: true });
  await admin(ctx, 'DELETE', `/v1/cluster/members/${lost.id}`);
  const fresh = await ctx.cluster.newManager('m4');
  ctx.cluster.startManager(fresh, peersSpec(ctx.cluster.running()), ['--join']);
  await admin(ctx, 'POST', '/v1/cluster/members', { id: fresh.id, url: fresh.url });
  await caughtUp(ctx, fresh);
  fresh.serving = true;
  return {
    ...t,
    description: `kill -9 of ${lost.id}, its folder wiped, removed; ${fresh.id} added with --join`,
    termBefore: term,
    notes: [`${fresh.id} at ${fresh.url} caught up ${Date.now() - t.atEpoch} ms after the kill`],
  };
}

export const FAULTS: Record<DrillName, (ctx: FaultContext) => Promise<Fault>> = {
  'leader-kill': leaderKill,
  'leader-pause': leaderPause,
  'follower-restart': followerRestart,
  'worker-kill': workerKill,
  'worker-return': workerReturn,
  'manager-replace': managerReplace,
};
