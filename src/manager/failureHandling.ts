// The leader's failure-handling loops, built and started together: down verdicts
// (FailureDetector), repair and draining (RepairLoop), rejoin reconciliation (RejoinReconciler),
// their metrics, and the operator's drain route. Every loop runs on every manager and acts only
// while it leads.

import type { Hono } from 'hono';
import type { Registry } from 'prom-client';
import { credentialsOf, type ManagerCredentials } from '../http/credentials.ts';
import type { Logger } from '../logging.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import type { CopyLocks } from './copyLocks.ts';
import { FailureDetector } from './failureDetector.ts';
import { adminRoutes } from './http/adminRoutes.ts';
import type { RaftAccess } from './imageService.ts';
import { RejoinReconciler } from './rejoinReconciler.ts';
import { RepairLoop } from './repairLoop.ts';
import { RepairMetrics } from './repairMetrics.ts';
import type { WorkerClient } from './workerClient.ts';
import type { WorkerLiveness } from './workerLiveness.ts';

export interface FailureHandlingConfig {
  /** The single cluster secret; `credentials` wins when given. */
  secret?: string;
  credentials?: ManagerCredentials;
  downAfterMs: number;
  orphanGraceMs: number;
  repairConcurrency: number;
}

export class FailureHandling {
  readonly metrics: RepairMetrics;
  readonly detector: FailureDetector;
  readonly reconciler: RejoinReconciler;
  readonly repair: RepairLoop;
  readonly routes: Hono;

  constructor(deps: {
    config: FailureHandlingConfig;
    raft: RaftAccess;
    metadata: MetadataStateMachine;
    liveness: WorkerLiveness;
    workers: WorkerClient;
    log: Logger;
    registry: Registry;
    /** Shared with the upload path (ImageService): see copyLocks.ts. */
    copies: CopyLocks;
    /** True while this manager's own upload of the id runs (its copies precede its record). */
    uploading?: (id: string) => boolean;
  }) {
    const { config, raft, metadata, liveness, workers, log, copies } = deps;
    this.metrics = new RepairMetrics(deps.registry);
    this.detector = new FailureDetector({
      raft,
      metadata,
      liveness,
      log,
      metrics: this.metrics,
      downAfterMs: config.downAfterMs,
      onCondemned: () => this.repair.wake(),
    });
    this.reconciler = new RejoinReconciler({
      raft,
      metadata,
      workers,
      log,
      copies,
      metrics: this.metrics,
      orphanGraceMs: config.orphanGraceMs,
      // It reads inventories with the worker client's credentials, whichever mode they are in.
      inventorySweep: true,
      ...(deps.uploading ? { uploading: deps.uploading } : {}),
    });
    this.repair = new RepairLoop({
      raft,
      metadata,
      copies,
      liveness,
      workers,
      log,
      metrics: this.metrics,
      concurrency: config.repairConcurrency,
      reconcileBusy: () => this.reconciler.busy(),
      intervalMs: Math.min(1_000, Math.max(100, Math.floor(config.downAfterMs / 10))),
    });
    this.routes = adminRoutes({
      raft,
      metadata,
      credentials: credentialsOf(config),
      onDrain: () => this.repair.wake(),
    });
  }

  start(): void {
    this.detector.start();
    this.reconciler.start();
    this.repair.start();
  }

  async stop(): Promise<void> {
    this.detector.stop();
    this.reconciler.stop();
    await this.repair.stop();
  }
}
