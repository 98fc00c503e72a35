// A manager with an empty Raft store that is not told to --join founds the cluster: it bootstraps
// as one of its first voters. Right on a cluster's first start; wrong after the manager's data
// folder was lost, when it would come back as a voter with no memory of its votes or its log. A
// user's try did exactly that: m3's folder wiped and every manager down, m3 started first, found no
// peer to ask and bootstrapped; with m1 it then elected a leader that lacked the 30 uploads m2 and
// m3 had acknowledged, and they were gone.
//
// So an empty founder founds only on evidence (bootstrapGuard.ts, foundingDecision): a leader's
// word that it acknowledged nothing, or every other member answering with an empty log. Until
// then it waits, asking every second, and answers its own (empty) Raft view on its port, so that
// founders starting together find each other before any of them has a node running.

import type { Socket } from 'node:net';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { RAFT_MESSAGES_PATH } from '../consensus/transport/raftRoutes.ts';
import { requireCredential } from '../http/clusterAuth.ts';
import type { ManagerCredentials } from '../http/credentials.ts';
import { httpsServeOptions, type TlsSettings } from '../http/tls.ts';
import type { Logger } from '../logging.ts';
import type { RaftView } from '../protocol/raftView.ts';
import { foundingDecision, identifyPeers, listening } from './bootstrapGuard.ts';

/** Between two rounds of asking the peers. */
const ASK_EVERY_MS = 250;
/** A reason to wait is logged when it changes, and again this often while it holds. */
const LOG_AGAIN_MS = 15_000;
/** Founders starting together wait a moment for each other: only a longer wait is a warning. */
const WARN_AFTER_MS = 5_000;

export interface FoundingWaitOptions {
  selfId: string;
  host: string;
  port: number;
  tls: TlsSettings | undefined;
  peers: Record<string, string>;
  credentials: ManagerCredentials;
  /** What to present to `peer` (a raft credential names its receiver). */
  credentialFor: (peer: string) => string;
  /** Per-role credentials rather than the single secret: names what a refusal means. */
  perRole: boolean;
  log: Logger;
  /** Bound on one peer's answer. */
  askTimeoutMs?: number;
  /** Ends the wait (a stop of the process): waitToFound rejects with the signal's reason. */
  signal?: AbortSignal;
}

/** What a waiting founder answers as its Raft view: no term, no log, the members it was given. */
export function foundingView(selfId: string, peers: Record<string, string>): RaftView {
  return {
    id: selfId,
    role: 'follower',
    term: 0,
    leader: null,
    commit: 0,
    applied: 0,
    firstIndex: 1,
    lastIndex: 0,
    snapshotIndex: 0,
    confState: { voters: Object.keys(peers), learners: [] },
    members: { ...peers },
  };
}

/** The waiting founder's listener: its Raft view and the credential check its peers make. */
export async function serveFoundingView(opts: FoundingWaitOptions): Promise<() => Promise<void>> {
  const app = new Hono();
  const peerOrOperator = requireCredential(opts.credentials, ['raft', 'operator'], opts.selfId);
  app.get('/v1/cluster/raft', peerOrOperator, (c) => c.json(foundingView(opts.selfId, opts.peers)));
  app.get(RAFT_MESSAGES_PATH, requireCredential(opts.credentials, ['raft'], opts.selfId), (c) =>
    c.body(null, 204),
  );
  app.all('*', (c) =>
    c.json(
      {
        error: {
          code: 'Founding',
          message: `manager ${opts.selfId} has an empty data folder and waits for its peers before it founds the cluster`,
        },
      },
      503,
      { 'retry-after': '1' },
    ),
  );
  const server = serve({
    fetch: app.fetch,
    hostname: opts.host,
    port: opts.port,
    ...httpsServeOptions(opts.tls),
  });
  // Every socket, from its first byte: with TLS, one still in its handshake is no HTTP connection
  // yet, closeAllConnections leaves it, and close() would wait for it (up to the 120 s handshake
  // timeout) while the real server waits for the port and the peers for this manager.
  const sockets = new Set<Socket>();
  server.on('connection', (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  });
  await listening(server, opts.host, opts.port);
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => resolve());
      for (const socket of sockets) socket.destroy();
    });
}

/**
 * Returns once this empty founder may bootstrap; throws StartRefused when a leader says its data
 * was lost (or does not count it). Waits as long as it takes: a founder that may not found has
 * nothing else to do, and a supervisor restarting it would only ask again. Only `opts.signal` ends
 * it early (rejecting with its reason): the wait may be for peers that never come, and a stop must
 * not wait for them.
 */
export async function waitToFound(opts: FoundingWaitOptions): Promise<void> {
  opts.signal?.throwIfAborted();
  const close = await serveFoundingView(opts);
  const memberIds = Object.keys(opts.peers);
  const started = Date.now();
  let logged = { why: '', at: 0 };
  try {
    for (;;) {
      const answers = await unlessAborted(
        identifyPeers(opts.selfId, opts.peers, opts.credentialFor, opts.askTimeoutMs ?? 2_000, opts.perRole),
        opts.signal,
      );
      const decision = foundingDecision(opts.selfId, memberIds, answers);
      if (decision.found) {
        opts.log.info({ event: 'raft.founding', why: decision.why }, `founding the cluster: ${decision.why}`);
        return;
      }
      const now = Date.now();
      if (decision.why !== logged.why || now - logged.at >= LOG_AGAIN_MS) {
        const level = now - started >= WARN_AFTER_MS ? 'warn' : 'info';
        opts.log[level]({ event: 'raft.founding_wait', why: decision.why }, decision.why);
        logged = { why: decision.why, at: now };
      }
      await unlessAborted(new Promise((r) => setTimeout(r, ASK_EVERY_MS)), opts.signal);
    }
  } finally {
    await close();
  }
}

/**
 * `work`'s outcome, or a rejection with the signal's reason as soon as it is aborted. The work
 * itself goes on (a peer's answer is bounded by askTimeoutMs) and what it settles with is dropped.
 */
function unlessAborted<T>(work: Promise<T>, signal: AbortSignal | undefined): Promise<T> {
  if (!signal) return work;
  signal.throwIfAborted();
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
