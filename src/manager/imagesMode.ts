// What a manager runs in `images` mode beside Raft: the replicated object and node tables, the
// upload pipeline and the worker protocol, and the HTTP surfaces that expose them.

import { join } from 'node:path';
import type { Hono } from 'hono';
import type { Registry } from 'prom-client';
import type { RaftNode } from '../consensus/raftNode.ts';
import type { Logger } from '../logging.ts';
import { BatchProposer } from '../metadata/batchProposer.ts';
import type { NodeView } from '../metadata/commands.ts';
import { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { registerClusterMetrics } from './clusterMetrics.ts';
import { FailureHandling } from './failureHandling.ts';
import { bulkRecordRoutes } from './http/bulkRecordRoutes.ts';
import { clusterRoutes } from './http/clusterRoutes.ts';
import { dashboardRoutes } from './http/dashboardRoutes.ts';
import { nameRoutes } from './http/nameRoutes.ts';
import { publicRoutes } from './http/publicRoutes.ts';
import { workerRoutes } from './http/workerRoutes.ts';
import { ImageService, type RaftAccess } from './imageService.ts';
import { InventorySpool } from './inventorySpool.ts';
import type { LeaderWait } from './leaderWait.ts';
import type { ManagerConfig } from './managerConfig.ts';
import type { ManagerDisk } from './managerDisk.ts';
import { NameService } from './nameService.ts';
import { ObjectSlots } from './placement/execute.ts';
import { s3KeyRoutes } from './s3/s3KeyRoutes.ts';
import { listenS3, type S3EndpointDeps, s3ForwardRoutes } from './s3/s3Server.ts';
import { S3Spool } from './s3/s3Spool.ts';
import { StagingArea } from './stagingArea.ts';
import { ThumbnailCache } from './thumbnails.ts';
import { UploadAdmission } from './uploadAdmission.ts';
import { registerStagingMemoryMetrics, UploadMetrics } from './uploadMetrics.ts';
import { WorkerClient } from './workerClient.ts';
import { WorkerLiveness } from './workerLiveness.ts';
import { WorkerRegistry } from './workerRegistry.ts';

/** How often the leader looks for named content no name took (NameService.sweepUnnamedContent). */
const UNNAMED_SWEEP_MS = 10 * 60 * 1000;

export interface ImagesMode {
  metadata: MetadataStateMachine;
  /**
   * Called once the Raft node exists: builds the service layer and its HTTP surfaces. `leaderWait`:
   * the S3 endpoint of a follower forwards only to a live leader (leaderWait.ts).
   */
  attach(node: RaftNode, leaderWait?: LeaderWait): Hono[];
  /** Starts the S3 endpoint when configured (after attach); its URL, or null. */
  startS3(): Promise<string | null>;
  close(): Promise<void>;
}

/**
 * The worker a URL names. A URL names one worker (WorkerUrlConflict: a worker's URL never moves on
 * its own word, and a new id takes a URL only from a drained worker or a down one with no copies),
 * so among several the one still in service is meant; with none or several in service, no one is:
 * never guess, a wrong guess sends one worker's credential to another.
 */
export function workerAtUrl(nodes: readonly NodeView[], url: string): string | undefined {
  const at = nodes.filter((n) => n.url === url);
  if (at.length <= 1) return at[0]?.nodeId;
  const serving = at.filter((n) => n.state !== 'drained' && n.state !== 'down');
  return serving.length === 1 ? serving[0]?.nodeId : undefined;
}

/**
 * `metrics` is the manager's Prometheus registry: image and worker metrics register there.
 * `disk`: the manager's (managerDisk.ts); its reserve is released by the first folder that cannot
 * open on a full disk, and while the disk is full the leader takes no upload.
 */
export async function openImagesMode(
  config: ManagerConfig,
  log: Logger,
  metrics: Registry,
  disk: ManagerDisk,
): Promise<ImagesMode> {
  const { reserve } = disk;
  const uploadMetrics = new UploadMetrics(metrics);
  // Synced writes: the Raft log is compacted without writing the tables to a snapshot file.
  const metadata = await reserve.openReleasing('the metadata tables', () =>
    MetadataStateMachine.open(join(config.dataDir, 'metadata'), undefined, { syncedWrites: true }),
  );
  registerClusterMetrics(metrics, metadata);
  const staging = await reserve.openReleasing('the staging folder', () =>
    StagingArea.open(join(config.dataDir, 'staging'), { memoryBytes: config.stagingMemoryBytes }),
  );
  registerStagingMemoryMetrics(metrics, staging, config.stagingMemoryBytes);
  const spoolDir = join(config.dataDir, 'inventory-spool');
  await reserve.openReleasing('the inventory spool', () => InventorySpool.prepare(spoolDir));
  const { credentials } = config;
  const workers = new WorkerClient({
    credentialsFor: async (url) => {
      if (credentials.single !== undefined) return { access: credentials.single, copy: credentials.single };
      const nodeId = workerAtUrl(await metadata.listNodes(), url);
      if (nodeId === undefined) return undefined;
      return {
        access: credentials.accessCredential(nodeId),
        copy: credentials.copyCredential(nodeId),
      };
    },
    credentialsVersion: () => metadata.nodeTableVersion(),
    readFirstByteTimeoutMs: config.readFirstByteTimeoutMs,
  });
  const liveness = new WorkerLiveness({ suspectAfterMs: config.suspectAfterMs });
  // One set for every path of this manager that records or deletes copies on workers.
  const slots = new ObjectSlots();
  let registry: WorkerRegistry | null = null;
  let failures: FailureHandling | null = null;
  const s3Spool = await reserve.openReleasing('the S3 spool', () =>
    S3Spool.open(join(config.dataDir, 's3-spool')),
  );
  let s3Deps: S3EndpointDeps | null = null;
  let s3Listener: { close: () => Promise<void> } | null = null;
  let sweepTimer: NodeJS.Timeout | null = null;
  const s3Endpoint = config.s3Port === undefined ? null : `http://${config.host}:${config.s3Port}`;

  return {
    metadata,
    attach(node, leaderWait) {
      // Uploads', names' and repair's commands that arrive together share a Raft entry (batchProposer.ts).
      const batcher = new BatchProposer(node);
      const grouped: RaftAccess = {
        propose: (data, requestId) => batcher.propose(data, requestId),
        isLeader: () => node.isLeader(),
        leaderInfo: () => node.leaderInfo(),
        readIndex: () => node.readIndex(),
        memberUrls: () => node.memberUrls(),
      };
      const images = new ImageService({
        raft: grouped,
        metadata,
        staging,
        workers,
        liveness,
        log,
        slots,
        maxImageBytes: config.maxImageBytes,
        metrics: uploadMetrics,
        disk,
        admission: new UploadAdmission(
          {
            maxUploads: config.maxUploads,
            maxUploadsPerClient: config.maxUploadsPerClient,
            maxStagedBytes: config.maxStagedBytes,
            maxStagedBytesPerClient: config.maxStagedBytesPerClient,
          },
          { waitMs: config.uploadWaitMs, maxWaiting: config.maxWaitingUploads },
        ),
        ...(config.minUploadBytesPerSecond > 0
          ? {
              minUploadRate: {
                bytesPerSecond: config.minUploadBytesPerSecond,
                windowMs: config.uploadRateWindowMs,
              },
            }
          : {}),
      });
      failures = new FailureHandling({
        config,
        raft: grouped,
        metadata,
        liveness,
        workers,
        log,
        slots,
        registry: metrics,
      });
      failures.start();
      registry = new WorkerRegistry({
        raft: node,
        metadata,
        liveness,
        log,
        reconciler: failures.reconciler,
        spoolDir,
        uploading: (id) => images.isUploading(id),
        heartbeatIntervalMs: config.heartbeatIntervalMs,
        summaryIntervalMs: config.usageSummaryMs,
      });
      registry.start();
      const names = new NameService({ images, raft: grouped, metadata, log });
      s3Deps = {
        names,
        images,
        spool: s3Spool,
        log,
        raft: node,
        metadata,
        credentials,
        selfId: config.id,
        ...(leaderWait ? { leaderWait } : {}),
      };
      // Content uploaded for a name whose name commit never happened, and multipart uploads their
      // clients gave up on: swept on the leader, after the orphan grace (an upload in progress is
      // younger than that).
      sweepTimer = setInterval(() => {
        if (!node.isLeader()) return;
        void names.sweepUnnamedContent(config.orphanGraceMs).catch((err: unknown) => {
          log.warn({ event: 'name.sweep_failed', err }, 'unnamed content sweep failed');
        });
        void s3Spool.sweep().catch(() => {});
      }, UNNAMED_SWEEP_MS);
      sweepTimer.unref();
      if (config.bulkRecordLoad) {
        log.warn(
          { event: 'bulk_records.enabled' },
          '--bulk-record-load is on: an operator can commit image records whose bytes no worker holds (benchmarks only)',
        );
      }
      return [
        ...(config.bulkRecordLoad ? [bulkRecordRoutes({ raft: grouped, credentials })] : []),
        s3ForwardRoutes(s3Deps),
        s3KeyRoutes({ raft: node, metadata, credentials, endpoint: s3Endpoint }),
        publicRoutes(images, { clientsByToken: config.clientTokens.length > 0 }),
        nameRoutes(names, images, { clientsByToken: config.clientTokens.length > 0 }),
        workerRoutes({
          registry,
          credentials,
          heartbeatIntervalMs: config.heartbeatIntervalMs,
          httpsOnly: config.tls?.server !== undefined,
        }),
        clusterRoutes({
          metadata,
          liveness,
          isLeader: () => node.isLeader(),
          repairMetrics: failures.metrics,
        }),
        failures.routes,
        dashboardRoutes({
          thumbnails: new ThumbnailCache(join(config.dataDir, 'thumbnails'), images),
        }),
      ];
    },
    async startS3() {
      if (config.s3Port === undefined || s3Deps === null) return null;
      s3Listener = await listenS3(s3Deps, config.host, config.s3Port);
      return s3Endpoint;
    },
    async close() {
      if (sweepTimer) clearInterval(sweepTimer);
      await s3Listener?.close();
      registry?.stop();
      await failures?.stop();
      await workers.close();
      await metadata.close();
    },
  };
}
