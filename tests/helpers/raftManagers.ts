// Raft managers in the test's own process, with real parts: each keeps its LevelDB log and its
// state machine under its own folder, and a cluster's managers talk over real HTTP on 127.0.0.1.

import { randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { type ServerType, serve } from '@hono/node-server';
import { Registry } from 'prom-client';
import type { RaftLogStore } from '../../src/consensus/api.ts';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { RaftNode, type RaftNodeOptions, type RaftTransport } from '../../src/consensus/raftNode.ts';
import { SnapshotFolder } from '../../src/consensus/snapshotFiles.ts';
import type { StateMachine } from '../../src/consensus/stateMachine.ts';
import { HttpTransport } from '../../src/consensus/transport/httpTransport.ts';
import type { ReplySink } from '../../src/consensus/transport/inboundStream.ts';
import { raftRoutes } from '../../src/consensus/transport/raftRoutes.ts';
import { snapshotRoutes } from '../../src/consensus/transport/snapshotRoutes.ts';
import { SnapshotSender } from '../../src/consensus/transport/snapshotSender.ts';
import type { Message } from '../../src/consensus/types.ts';
import type { Command } from '../../src/metadata/commands.ts';
import { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import type { TableDigest } from '../../src/metadata/tables.ts';
import { until } from './until.ts';

/** The file a clean stop leaves in the tables' folder (src/metadata/cleanStop.ts). */
export const CLEAN_STOP_MARKER = 'IMGVAULT-CLEAN-STOP';

type ClosableStateMachine = StateMachine & { close(): Promise<void> };

/** What every manager of one cluster shares. */
export interface ClusterSetup<SM extends ClosableStateMachine> {
  secret: string;
  /** Each manager keeps its files under root/<id>. */
  root: string;
  /** Opens the state machine in a manager's folder. */
  openStateMachine(dir: string): Promise<SM>;
  /** Passed to every RaftNode.start (tickMs, snapshotThreshold, onFatal...). */
  node?: Partial<Omit<RaftNodeOptions, 'id' | 'store' | 'stateMachine' | 'transport' | 'initialMembers'>>;
  /** Snapshots as files, streamed on their own route in pieces of this size (else inline). */
  snapshotPieceBytes?: number;
  /** False drops a message on arrival (a test's network cut). */
  accept?: (to: string, msg: Message) => boolean;
  /**
   * Wired as managerProcess wires it: a peer's stream to this manager carries this manager's
   * messages back to that peer (attachReplySink), and what comes back on our own requests'
   * responses is delivered to the node (onReply).
   */
  replies?: boolean;
  /** A fresh metrics registry for each start. */
  metrics?: boolean;
  /** The log store each start's node writes to, around the manager's real one (a test holding a write). */
  wrapStore?: (id: string, store: LevelLogStore) => RaftLogStore;
}

/** One manager: its server listens from creation, its node runs between start() and stop(). */
export class InProcessManager<SM extends ClosableStateMachine> {
  url = '';
  server: ServerType | null = null;
  /** The snapshot pieces (PUTs on the snapshot route) this manager received. */
  snapshotPieces = 0;
  /** Between start() and stop(). */
  running = false;
  /** Messages that reached this manager in the response to one of its own requests. */
  repliesReceived = 0;
  private parts: {
    node: RaftNode;
    sm: SM;
    store: LevelLogStore;
    transport: HttpTransport;
    sender: SnapshotSender | null;
    metrics: Registry | undefined;
  } | null = null;

  private constructor(
    readonly id: string,
    readonly dir: string,
    private readonly setup: ClusterSetup<SM>,
    /** One folder for the routes and the node, as in a manager process. */
    private readonly folder: SnapshotFolder | null,
  ) {}

  /** A manager whose server listens on a free port: its URL is known before any node starts. */
  static async listen<SM extends ClosableStateMachine>(
    id: string,
    setup: ClusterSetup<SM>,
  ): Promise<InProcessManager<SM>> {
    const dir = join(setup.root, id);
    const folder =
      setup.snapshotPieceBytes === undefined ? null : await SnapshotFolder.open(join(dir, 'snapshots'));
    const m = new InProcessManager(id, dir, setup, folder);
    // The routes answer 403 when the node refuses (false); a message the cut drops is answered as taken.
    const cut = (msg: Message) => setup.accept !== undefined && !setup.accept(id, msg);
    const onMessage = (msg: Message) => (cut(msg) || !m.running ? undefined : m.parts?.node.receive(msg));
    const attachReplySink = (from: string, sink: ReplySink) =>
      m.running ? m.started.transport.attachReplySink(from, sink) : null;
    const app = raftRoutes({
      secret: setup.secret,
      selfId: id,
      onMessage,
      ...(setup.replies ? { attachReplySink } : {}),
    });
    if (folder) {
      app.use('/raft/snapshot', async (c, next) => {
        if (c.req.method === 'PUT') m.snapshotPieces += 1;
        await next();
      });
      app.route(
        '/',
        snapshotRoutes({
          secret: setup.secret,
          selfId: id,
          folder,
          onMessage: (msg) => (cut(msg) ? undefined : m.running ? m.parts!.node.receive(msg) : false),
        }),
      );
    }
    await new Promise<void>((resolve) => {
      m.server = serve({ fetch: app.fetch, hostname: '127.0.0.1', port: 0 }, (info: AddressInfo) => {
        m.url = `http://127.0.0.1:${info.port}`;
        resolve();
      });
    });
    return m;
  }

  /** The parts of the last start: a stopped node still answers status() with what it last knew. */
  private get started() {
    if (this.parts === null) throw new Error(`manager ${this.id} was never started`);
    return this.parts;
  }

  get node(): RaftNode {
    return this.started.node;
  }

  get sm(): SM {
    return this.started.sm;
  }

  get store(): LevelLogStore {
    return this.started.store;
  }

  get metrics(): Registry {
    const { metrics } = this.started;
    if (!metrics) throw new Error(`manager ${this.id} was started without metrics`);
    return metrics;
  }

  /** Opens its log and state machine and starts its node: a founder, or a joiner (null). */
  async start(initialMembers: Record<string, string> | null, contactPeers?: Record<string, string>) {
    const { setup, folder } = this;
    const store = await LevelLogStore.open(join(this.dir, 'raft'));
    const sm = await setup.openStateMachine(this.dir);
    const metrics = setup.metrics ? new Registry() : undefined;
    // The transport's callbacks reach the node of this start once it exists.
    let node: RaftNode | null = null;
    const reportSnapshot = (peer: string, ok: boolean) => node?.reportSnapshot(peer, ok);
    const sender = folder
      ? new SnapshotSender({
          id: this.id,
          folder,
          secret: setup.secret,
          pieceBytes: setup.snapshotPieceBytes,
          onSnapshotStatus: reportSnapshot,
        })
      : null;
    const transport = new HttpTransport({
      id: this.id,
      secret: setup.secret,
      onUnreachable: (peer) => node?.reportUnreachable(peer),
      onSnapshotStatus: reportSnapshot,
      ...(sender ? { sendSnapshot: (msg: Message, url: string) => sender.send(msg, url) } : {}),
      ...(setup.replies
        ? {
            onReply: (msg: Message) => {
              this.repliesReceived += 1;
              node?.receive(msg);
            },
          }
        : {}),
    });
    node = await RaftNode.start({
      ...setup.node,
      id: this.id,
      store: setup.wrapStore ? setup.wrapStore(this.id, store) : store,
      stateMachine: sm,
      transport,
      initialMembers,
      ...(contactPeers ? { contactPeers } : {}),
      ...(folder ? { snapshotFolder: folder } : {}),
      ...(metrics ? { metrics } : {}),
    });
    this.parts = { node, sm, store, transport, sender, metrics };
    this.running = true;
  }

  /** Stops its node and closes its files; the server keeps listening (a restart keeps the URL). */
  async stop(): Promise<void> {
    const parts = this.parts;
    if (!this.running || parts === null) return;
    this.running = false;
    await parts.node.stop();
    parts.sender?.close();
    await parts.transport.close();
    await parts.store.close();
    await parts.sm.close();
  }

  /** Stops it and closes its server. */
  async close(): Promise<void> {
    await this.stop();
    const server = this.server;
    if (!server) return;
    // A peer's Raft stream is a request in progress, which close() waits for (as managerProcess does).
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      (server as Server).closeAllConnections();
    });
  }
}

/** Managers that listen, then start together as the founders of one cluster. */
export async function startCluster<SM extends ClosableStateMachine>(
  ids: string[],
  setup: ClusterSetup<SM>,
): Promise<InProcessManager<SM>[]> {
  const managers = await Promise.all(ids.map((id) => InProcessManager.listen(id, setup)));
  const founders = memberUrls(managers);
  await Promise.all(managers.map((m) => m.start(founders)));
  return managers;
}

/** id -> URL of the managers given. */
export function memberUrls(managers: InProcessManager<ClosableStateMachine>[]): Record<string, string> {
  return Object.fromEntries(managers.map((m) => [m.id, m.url]));
}

export async function closeAll(managers: InProcessManager<ClosableStateMachine>[]): Promise<void> {
  for (const m of managers) await m.close();
}

/** Waits until exactly one running manager leads and every running one follows it. */
export function stableLeader<SM extends ClosableStateMachine>(
  managers: readonly InProcessManager<SM>[],
): Promise<InProcessManager<SM>> {
  return until('a leader every node agrees on', () => {
    const running = managers.filter((m) => m.running);
    const leaders = running.filter((m) => m.node.isLeader());
    if (leaders.length !== 1) return null;
    const leader = leaders[0]!;
    return running.every((m) => m.node.leaderInfo()?.id === leader.id) ? leader : null;
  });
}

/** Proposes a put of the KV state machine on `node`: its apply result, once applied there. */
export function proposePut(node: RaftNode, key: string, value: string): Promise<unknown> {
  const requestId = randomUUID();
  return node.propose(JSON.stringify({ op: 'put', key, value, requestId }), requestId);
}

/** The KV state machine (the test's stand-in for the tables) in a manager's folder. */
export const openKv = (dir: string) => KvStateMachine.open(join(dir, 'kv'));

/** A cluster of KV managers as the driver tests run it: 20 ms ticks, replies wired, a fatal error thrown. */
export function kvCluster(root: string, secret: string): ClusterSetup<KvStateMachine> {
  return {
    secret,
    root,
    openStateMachine: openKv,
    node: {
      tickMs: 20,
      onFatal: (err) => {
        throw err;
      },
    },
    replies: true,
  };
}

/** The metadata state machine in a manager's folder. */
export const openMetadata = (dir: string) => MetadataStateMachine.open(join(dir, 'metadata'));

/**
 * Waits until every manager's tables are at the same applied index and returns their digests, read
 * together (a manager still applying would be compared at another index). The caller asserts they
 * agree: one sha256 for all.
 */
export function agreedDigests(
  managers: readonly InProcessManager<MetadataStateMachine>[],
  timeoutMs = 60_000,
): Promise<TableDigest[]> {
  return until(
    'every manager at the same applied index',
    async () => {
      const all = await Promise.all(managers.map((m) => m.sm.tableDigest()));
      return all.every((d) => d.appliedIndex === all[0]!.appliedIndex) ? all : null;
    },
    timeoutMs,
  );
}

/** The running manager that leads now, waiting up to 30 s for one. */
export function runningLeader<SM extends ClosableStateMachine>(
  managers: readonly InProcessManager<SM>[],
): Promise<InProcessManager<SM>> {
  return until('a leader', () => managers.find((m) => m.running && m.node.isLeader()) ?? null, 30_000);
}

/**
 * Starts manager `id` with no state, has `leader` add it to the cluster, and waits until it has
 * applied what the leader had committed by then (a joiner of a compacted log: from a snapshot).
 */
export async function joinCaughtUp<SM extends ClosableStateMachine>(
  managers: InProcessManager<SM>[],
  setup: ClusterSetup<SM>,
  founders: Record<string, string>,
  leader: InProcessManager<SM>,
  id = 'm4',
): Promise<InProcessManager<SM>> {
  const joiner = await InProcessManager.listen(id, setup);
  managers.push(joiner);
  await joiner.start(null, founders);
  await leader.node.addMember(id, joiner.url);
  const target = leader.node.status().commit;
  await until('the new manager caught up', () => joiner.sm.appliedIndex() >= target, 120_000);
  return joiner;
}

/** Proposes on the current leader, again on the next one if leadership moved meanwhile (a loaded machine). */
export async function proposeOnLeader(
  managers: readonly InProcessManager<MetadataStateMachine>[],
  command: Command,
): Promise<void> {
  for (let attempt = 0; ; attempt++) {
    try {
      await proposeCommand((await runningLeader(managers)).node, command);
      return;
    } catch (err) {
      if (attempt === 20) throw err;
      await new Promise((resolve) => setTimeout(resolve, 100 * Math.min(attempt + 1, 10)));
    }
  }
}

/** A one-manager cluster: it leads alone and never sends a message. */
const noPeers: RaftTransport = { send: () => {}, setPeer: () => {}, removePeer: () => {} };

/** The member map of a one-manager cluster; its URL is never contacted. */
export const SOLE_MEMBERS = { m1: 'http://127.0.0.1:1' };

export interface SoleManager<SM extends ClosableStateMachine = MetadataStateMachine> {
  node: RaftNode;
  store: LevelLogStore;
  sm: SM;
}

export interface SoleManagerOptions<SM extends ClosableStateMachine> {
  openStateMachine(dir: string): Promise<SM>;
  /** Passed to RaftNode.start (snapshotThreshold, metrics, maxPendingProposals...); tickMs 10 unless given. */
  node?: Partial<Omit<RaftNodeOptions, 'id' | 'store' | 'stateMachine' | 'transport' | 'initialMembers'>>;
  /** Snapshots as files in dir/snapshots (else inline). */
  snapshotFiles?: boolean;
}

/** Starts a one-manager cluster on the log and state machine in `dir`. */
export async function startSoleManager<SM extends ClosableStateMachine>(
  dir: string,
  options: SoleManagerOptions<SM>,
): Promise<SoleManager<SM>> {
  const store = await LevelLogStore.open(join(dir, 'raft'));
  const sm = await options.openStateMachine(dir);
  const node = await RaftNode.start({
    tickMs: 10,
    ...options.node,
    id: 'm1',
    store,
    stateMachine: sm,
    transport: noPeers,
    initialMembers: SOLE_MEMBERS,
    ...(options.snapshotFiles ? { snapshotFolder: await SnapshotFolder.open(join(dir, 'snapshots')) } : {}),
  });
  return { node, store, sm };
}

/** The store's next compaction fails as a failing disk's would; the ones after it run as usual. */
export function refuseNextCompaction(store: LevelLogStore): void {
  const compact = store.compact.bind(store);
  let refused = false;
  store.compact = (snapshot) => {
    if (refused) return compact(snapshot);
    refused = true;
    return Promise.reject(new Error('EIO: the disk refused the write'));
  };
}

/** imgvault_raft_compaction_failures_total of `kind` in `registry`. */
export async function compactionFailures(registry: Registry, kind: 'snapshot' | 'truncate'): Promise<number> {
  const series = (await registry.getMetricsAsJSON()).find(
    (m) => m.name === 'imgvault_raft_compaction_failures_total',
  );
  return series?.values.find((v) => v.labels.kind === kind)?.value ?? 0;
}

export async function stopSoleManager(m: SoleManager<ClosableStateMachine>): Promise<void> {
  await m.node.stop();
  await m.store.close();
  await m.sm.close();
}
