// One manager process: config -> durable log + state machine + Raft driver + transport + HTTP.

import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { collectDefaultMetrics, Registry } from 'prom-client';
import { onLauncherStop } from '../childControl.ts';
import { LevelLogStore } from '../consensus/levelLogStore.ts';
import { RaftNode } from '../consensus/raftNode.ts';
import { SnapshotFolder } from '../consensus/snapshotFiles.ts';
import { HttpTransport } from '../consensus/transport/httpTransport.ts';
import { raftRoutes } from '../consensus/transport/raftRoutes.ts';
import { snapshotRoutes } from '../consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../consensus/transport/snapshotSender.ts';
import { keepNewFilesPrivate, makePrivateDir } from '../fileWrites.ts';
import { httpsServeOptions, useInternalTls } from '../http/tls.ts';
import { createLogger, type Logger } from '../logging.ts';
import { KvStateMachine } from '../metadata/kvStateMachine.ts';
import { describeStorageFailure, isDiskFull } from '../storageFailure.ts';
import {
  checkPeersBeforeStart,
  checkPortFree,
  checkStoredMembership,
  listening,
  StartRefused,
} from './bootstrapGuard.ts';
import { waitToFound } from './foundingWait.ts';
import { openImagesMode } from './imagesMode.ts';
import { LeaderWait, liveLeaderOf } from './leaderWait.ts';
import type { ManagerConfig } from './managerConfig.ts';
import { ManagerDisk } from './managerDisk.ts';
import { createManagerApp } from './managerServer.ts';

export interface RunningManager {
  node: RaftNode;
  url: string;
  /**
   * Hands leadership over if it leads (unless `handOver` is false: the whole cluster is stopping,
   * and the followers it would wait for are stopping too), stops serving, lets the Raft loop
   * finish its Ready, closes every store.
   */
  close(opts?: { handOver?: boolean }): Promise<void>;
}

/**
 * `signal` ends a founder's wait for its peers (foundingWait.ts), the one step of a start that may
 * last indefinitely: startManager then rejects with the signal's reason, its stores closed.
 */
export async function startManager(
  config: ManagerConfig,
  opts: { signal?: AbortSignal } = {},
): Promise<RunningManager> {
  const log = createLogger('manager', { nodeId: config.id });
  // Before any internal client (worker client, Raft transport, peer checks) is built.
  useInternalTls(config.tls);
  // Before anything else: with the port taken, any answer from "peers" may be another cluster's.
  await checkPortFree(config.host, config.port);
  await makePrivateDir(config.dataDir);
  // Every store below writes as it opens: on a full disk, the first that fails releases the reserve.
  const disk = new ManagerDisk(config.dataDir, log);
  const { reserve } = disk;
  const store = await reserve.openReleasing('the Raft log', () => openLogStore(config.dataDir));
  // Snapshot files beside the log (src/consensus/snapshotFiles.ts); the log holds their descriptors.
  const snapshotFolder = await reserve.openReleasing('the snapshot folder', () =>
    SnapshotFolder.open(join(config.dataDir, 'snapshots')),
  );
  const metrics = new Registry();
  collectDefaultMetrics({ register: metrics });
  const kv =
    config.mode === 'kv'
      ? await reserve.openReleasing('the kv map', () =>
          KvStateMachine.open(join(config.dataDir, 'kv'), createLogger('kv', { nodeId: config.id })),
        )
      : null;
  const images = config.mode === 'images' ? await openImagesMode(config, log, metrics, disk) : null;
  await disk.start();
  const stateMachine = kv ?? images?.metadata;
  if (!stateMachine) throw new Error(`unknown manager mode ${config.mode}`);

  // The transport and the node refer to each other; messages that arrive before the node exists
  // are dropped (Raft retransmits).
  let node: RaftNode | null = null;
  const snapshotSender = new SnapshotSender({
    id: config.id,
    folder: snapshotFolder,
    secret: config.credentials.raftCredential(config.id, config.id),
    credentialFor: (peer) => config.credentials.raftCredential(config.id, peer),
    onSnapshotStatus: (peer, ok) => node?.reportSnapshot(peer, ok),
  });
  // Two of the longest election timeouts: a peer that still listens answers heartbeats well within.
  const idleTimeoutMs = 4 * config.electionTick * config.tickMs;
  const transport = new HttpTransport({
    idleTimeoutMs,
    id: config.id,
    // What it presents to its peers: its raft credential naming that peer (or the single secret).
    secret: config.credentials.raftCredential(config.id, config.id),
    credentialFor: (peer) => config.credentials.raftCredential(config.id, peer),
    onUnreachable: (peer) => {
      node?.reportUnreachable(peer);
      node?.notePeerLost(peer);
    },
    onSnapshotStatus: (peer, ok) => node?.reportSnapshot(peer, ok),
    sendSnapshot: (msg, url) => snapshotSender.send(msg, url),
    onReply: (msg) => node?.receive(msg),
  });
  const raftApp = raftRoutes({
    credentials: config.credentials,
    selfId: config.id,
    idleTimeoutMs,
    peerHeard: { note: (from) => transport.noteHeard(from), count: (from) => transport.heardCount(from) },
    onMessage: (msg) => node?.receive(msg),
    onStreamEnd: (from) => node?.notePeerLost(from),
    // A peer's stream to us is also our way back to it (a follower answers on its leader's stream).
    attachReplySink: (from, sink) => transport.attachReplySink(from, sink),
  });
  raftApp.route(
    '/',
    snapshotRoutes({
      credentials: config.credentials,
      selfId: config.id,
      folder: snapshotFolder,
      onMessage: (msg) => node?.receive(msg) ?? false,
    }),
  );

  // A founder with an empty store bootstraps only on evidence that it lost nothing (foundingWait.ts).
  const emptyStore = store.lastIndex() === 0;
  const credentialFor = (peer: string) => config.credentials.raftCredential(config.id, peer);
  try {
    if (!config.join && emptyStore) {
      await waitToFound({
        selfId: config.id,
        host: config.host,
        port: config.port,
        tls: config.tls,
        peers: config.peers,
        credentials: config.credentials,
        credentialFor,
        perRole: config.credentials.single === undefined,
        log,
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    } else {
      await checkPeersBeforeStart({
        selfId: config.id,
        peers: config.peers,
        secret: config.credentials.raftCredential(config.id, config.id),
        credentialFor,
        perRole: config.credentials.single === undefined,
      });
    }
  } catch (err) {
    await disk.stop();
    await store.close();
    await kv?.close();
    await images?.close();
    throw err;
  }
  node = await RaftNode.start({
    id: config.id,
    store,
    stateMachine,
    transport,
    initialMembers: config.join ? null : config.peers,
    contactPeers: config.peers,
    tickMs: config.tickMs,
    electionTick: config.electionTick,
    heartbeatTick: config.heartbeatTick,
    snapshotThreshold: config.snapshotThreshold,
    snapshotFolder,
    metrics,
    onFatal: (err) => {
      log.fatal({ event: 'manager.raft_fatal', err }, 'raft loop failed; exiting');
      // The launcher names this line when it restarts us: a full disk must be read there, not guessed.
      console.error(`imgvault manager ${config.id}: ${describeStorageFailure(err, config.dataDir)}`);
      process.exit(1);
    },
  });
  const running = node;
  if (!emptyStore) {
    try {
      checkStoredMembership({
        selfId: config.id,
        url: config.url,
        dataDir: config.dataDir,
        members: running.status().members,
      });
    } catch (err) {
      await disk.stop();
      await running.stop();
      await transport.close();
      await store.close();
      await kv?.close();
      await images?.close();
      throw err;
    }
  }

  const leaderWait = new LeaderWait(
    () => liveLeaderOf(running, running.leaderQuietMs),
    { waitMs: config.leaderWaitMs, maxWaiting: config.maxWaitingForLeader },
    metrics,
    () => running.isMember(),
  );
  const app = createManagerApp({
    node: running,
    ...(kv ? { kv } : {}),
    surfaces: images?.attach(running, leaderWait) ?? [],
    leaderWait,
    clientTokens: config.clientTokens,
    readOnlyTokens: config.readOnlyTokens,
    metricsTokens: config.metricsTokens,
    credentials: config.credentials,
    raftApp,
    metrics,
    httpsOnly: config.tls?.server !== undefined,
    disk,
  });
  const server = serve({
    fetch: app.fetch,
    hostname: config.host,
    port: config.port,
    ...httpsServeOptions(config.tls),
  });
  await listening(server, config.host, config.port);
  const s3Url = (await images?.startS3()) ?? null;
  log.info(
    { event: 'manager.ready', url: config.url, dataDir: config.dataDir, s3Url },
    `manager ${config.id} ready on ${config.url}${s3Url ? `, S3 on ${s3Url}` : ''}`,
  );

  let closing: Promise<void> | null = null;
  return {
    node: running,
    url: config.url,
    close(opts = {}) {
      closing ??= (async () => {
        // Before the server closes: the handover needs Raft traffic in both directions.
        if (opts.handOver !== false) await handOverLeadership(running, log);
        // Held requests get their 503 while their sockets are still open, and nothing polls on.
        leaderWait.close();
        await new Promise<void>((resolve) => {
          server.close(() => resolve());
          // Keep-alive connections would hold close() open; the node is stopping anyway.
          (server as { closeAllConnections?: () => void }).closeAllConnections?.();
        });
        await disk.stop();
        await running.stop();
        snapshotSender.close();
        await transport.close();
        await store.close();
        await kv?.close();
        await images?.close();
        log.info({ event: 'manager.stopped' }, `manager ${config.id} stopped`);
      })();
      return closing;
    },
  };
}

/**
 * A leader that stops on purpose hands over to its most up-to-date voter first, so the cluster
 * does not sit out an election timeout. Bounded: a stuck transfer never holds up shutdown.
 */
async function handOverLeadership(node: RaftNode, log: Logger): Promise<void> {
  if (!node.isLeader()) return;
  const status = node.status();
  const candidates = Object.entries(status.progress ?? {})
    .filter(([id]) => id !== node.id && status.confState.voters.includes(id))
    .sort(([, a], [, b]) => b.match - a.match);
  const to = candidates[0]?.[0];
  if (to === undefined) return;
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), 2_000);
  });
  try {
    if (await Promise.race([node.transferLeadership(to).then(() => true), timeout])) {
      log.info({ event: 'manager.leadership_handed_over', to }, `handed leadership to ${to} before stopping`);
    } else {
      log.warn({ event: 'manager.handover_timed_out', to }, 'leadership handover timed out; stopping anyway');
    }
  } catch (err) {
    log.warn({ event: 'manager.handover_failed', to, err }, 'leadership handover failed; stopping anyway');
  } finally {
    clearTimeout(timer);
  }
}

interface StopRequest {
  why: string;
  handOver: boolean;
}

/**
 * Runs a manager until SIGTERM/SIGINT (or its launcher's stop message), then shuts down cleanly
 * and exits 0. A start-up failure prints one plain line to stderr (the launcher shows it) and exits 1.
 * The stop is heard from the first moment: a founder may wait indefinitely for its peers before the
 * manager proper runs, and a stop then ends that wait (exit 0) rather than being ignored until the
 * launcher's SIGKILL, or killing it by the signal's default action.
 */
export async function runManagerProcess(config: ManagerConfig): Promise<void> {
  keepNewFilesPrivate();
  const log = createLogger('manager', { nodeId: config.id });
  const startAborted = new AbortController();
  let manager: RunningManager | null = null;
  let stop: StopRequest | null = null;
  const closeAndExit = (running: RunningManager, handOver: boolean) => {
    running.close({ handOver }).then(
      () => process.exit(0),
      (err) => {
        log.error({ event: 'manager.shutdown_failed', err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  const shutdown = (why: string, handOver: boolean) => {
    if (stop) return;
    stop = { why, handOver };
    log.info({ event: 'manager.shutdown', signal: why, handOver }, `${why}: shutting down`);
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    if (manager) closeAndExit(manager, handOver);
    else startAborted.abort(new Error(`${why} during start-up`));
  };
  process.once('SIGTERM', () => shutdown('SIGTERM', true));
  process.once('SIGINT', () => shutdown('SIGINT', true));
  onLauncherStop((why) => shutdown(why, false));
  try {
    manager = await startManager(config, { signal: startAborted.signal });
  } catch (err) {
    if (stop && err === startAborted.signal.reason) {
      log.info(
        { event: 'manager.stopped', before: 'start' },
        `manager ${config.id} stopped before it started`,
      );
      process.exit(0);
    }
    const reason = err instanceof StartRefused ? err.reason : isDiskFull(err) ? 'disk_full' : 'error';
    log.fatal({ event: 'manager.start_failed', reason, err }, 'manager could not start');
    const line = err instanceof StartRefused ? err.message : describeStorageFailure(err, config.dataDir);
    console.error(`imgvault manager ${config.id}: ${line}`);
    process.exit(1);
  }
  // A stop during the rest of the start (bounded steps) is carried out now that there is a manager
  // (TypeScript cannot see that the handlers above may have set it meanwhile).
  const requested = stop as StopRequest | null;
  if (requested) closeAndExit(manager, requested.handOver);
}

/** Opens the Raft log, naming the usual cause when LevelDB's lock is held by another process. */
async function openLogStore(dataDir: string): Promise<LevelLogStore> {
  try {
    return await LevelLogStore.open(join(dataDir, 'raft'));
  } catch (err) {
    const cause = (err as { cause?: { code?: string } }).cause;
    if (cause?.code === 'LEVEL_LOCKED') {
      throw new StartRefused(
        'data_in_use',
        `data folder ${dataDir} is in use by another running manager (wrong --data, or it is still running)`,
      );
    }
    throw err;
  }
}
