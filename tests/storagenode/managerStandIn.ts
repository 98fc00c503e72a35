import type { AddressInfo } from 'node:net';
import { type ServerType, serve } from '@hono/node-server';
import { Hono } from 'hono';
import { requireClusterSecret } from '../../src/http/clusterAuth.ts';

/**
 * A minimal manager for worker tests and the worker benchmark: a real HTTP server on 127.0.0.1
 * that speaks the manager side of docs/worker-protocol.md and records what it receives. It can
 * play the leader, a follower (307 to the leader), or a manager with no leader yet (503). Every
 * role takes heartbeats, as a real manager does; only the leader says so and answers UnknownWorker.
 */

export interface RecordedRegistration {
  at: number;
  header: Record<string, unknown>;
  blobs: { id: string; size: number; sha256: string }[];
}

export interface RecordedHeartbeat {
  at: number;
  body: Record<string, unknown>;
}

export type StandInRole = { kind: 'leader' } | { kind: 'follower'; leaderUrl: string } | { kind: 'noLeader' };

export interface ManagerStandIn {
  url: string;
  role: StandInRole;
  registrations: RecordedRegistration[];
  heartbeats: RecordedHeartbeat[];
  /** Most heartbeats this manager was answering at the same time. */
  maxConcurrentHeartbeats: number;
  /** Requests answered with a redirect or 503, by path. */
  deflected: string[];
  /** Every member's URL, named in each heartbeat answer when set (as a real manager does). */
  managers?: string[];
  /** Answer the next heartbeat of these workers with 404 UnknownWorker (a manager that lost state). */
  forget(workerId: string): void;
  /** Stops listening and drops open connections: to the worker it looks like a dead process. */
  close(): Promise<void>;
}

export interface StandInOptions {
  role?: StandInRole;
  leaderId?: string;
  /** Returned in the registration answer (the manager may set the worker's period). */
  heartbeatIntervalMs?: number;
  /** Workers this manager knows without a registration (a new leader reading the tables). */
  knownWorkers?: string[];
  /** Delay before answering a heartbeat: shows whether beats overlap. */
  heartbeatDelayMs?: number;
}

export async function startManagerStandIn(
  secret: string,
  options: StandInOptions = {},
): Promise<ManagerStandIn> {
  const role = options.role ?? { kind: 'leader' };
  const forgotten = new Set<string>();
  const known = new Set<string>(options.knownWorkers ?? []);
  let activeHeartbeats = 0;
  const state: ManagerStandIn = {
    url: '',
    role,
    registrations: [],
    heartbeats: [],
    maxConcurrentHeartbeats: 0,
    deflected: [],
    forget: (id) => {
      forgotten.add(id);
      known.delete(id);
    },
    close: async () => {},
  };

  const app = new Hono();
  app.use('/internal/*', requireClusterSecret(secret));
  app.use('/internal/*', async (c, next) => {
    const r = state.role;
    if (c.req.path === '/internal/v1/workers/heartbeat') return next();
    if (r.kind === 'follower') {
      state.deflected.push(c.req.path);
      return c.redirect(`${r.leaderUrl}${c.req.path}`, 307);
    }
    if (r.kind === 'noLeader') {
      state.deflected.push(c.req.path);
      return c.json({ error: { code: 'NoLeader', message: 'no leader elected yet' } }, 503);
    }
    await next();
  });

  app.post('/internal/v1/workers/register', async (c) => {
    const text = await c.req.text();
    const lines = text.split('\n').filter((l) => l.length > 0);
    const header = JSON.parse(lines[0] ?? '{}') as Record<string, unknown>;
    const blobs = lines.slice(1).map((l) => JSON.parse(l) as RecordedRegistration['blobs'][number]);
    state.registrations.push({ at: performance.now(), header, blobs });
    known.add(String(header.id));
    forgotten.delete(String(header.id));
    return c.json({
      leaderId: options.leaderId ?? 'm-standin',
      heartbeatIntervalMs: options.heartbeatIntervalMs,
    });
  });

  app.post('/internal/v1/workers/heartbeat', async (c) => {
    const body = (await c.req.json()) as Record<string, unknown>;
    const id = String(body.id);
    const leader = state.role.kind === 'leader';
    if (leader && (forgotten.has(id) || !known.has(id))) {
      return c.json({ error: { code: 'UnknownWorker', message: `worker ${id} is not registered` } }, 404);
    }
    activeHeartbeats += 1;
    state.maxConcurrentHeartbeats = Math.max(state.maxConcurrentHeartbeats, activeHeartbeats);
    state.heartbeats.push({ at: performance.now(), body });
    try {
      if (options.heartbeatDelayMs) await new Promise((r) => setTimeout(r, options.heartbeatDelayMs));
      const r = state.role;
      return c.json({
        leaderId: options.leaderId ?? 'm-standin',
        leader,
        ...(r.kind === 'follower' ? { leaderUrl: r.leaderUrl } : {}),
        ...(state.managers ? { managers: state.managers } : {}),
      });
    } finally {
      activeHeartbeats -= 1;
    }
  });

  const server: ServerType = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: '127.0.0.1' }, () => resolve(s));
  });
  const { port } = server.address() as AddressInfo;
  state.url = `http://127.0.0.1:${port}`;
  state.close = () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      (server as import('node:http').Server).closeAllConnections();
    });
  return state;
}
