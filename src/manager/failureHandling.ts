// The leader's failure-handling loops, built and started together: down verdicts
// (FailureDetector), placement (PlacementReconciler: repair, draining, rejoin), their metrics, and
// the operator's drain route. Every loop runs on every manager and acts only while it leads; a
// down verdict or a drain only wakes the placement loop.

import type { Hono } from 'hono';
import type { Registry } from 'prom-client';
import { credentialsOf, type ManagerCredentials } from '../http/credentials.ts';
import type { Logger } from '../logging.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { FailureDetector } from './failureDetector.ts';
import { adminRoutes } from './http/adminRoutes.ts';
import type { RaftAccess } from './imageService.ts';
import type { ObjectSlots } from './placement/execute.ts';
import { PlacementReconciler } from './placement/reconciler.ts';
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
  readonly reconciler: PlacementReconciler;
  readonly routes: Hono;

  constructor(deps: {
    config: FailureHandlingConfig;
    raft: RaftAccess;
    metadata: MetadataStateMachine;
    liveness: WorkerLiveness;
    workers: WorkerClient;
    log: Logger;
    registry: Registry;
    /** Shared with the upload and delete paths (ImageService): see placement/execute.ts. */
    slots: ObjectSlots;
  }) {
    const { config, raft, metadata, liveness, workers, log, slots } = deps;
    this.metrics = new RepairMetrics(deps.registry);
    this.detector = new FailureDetector({
      raft,
      metadata,
      liveness,
      log,
      metrics: this.metrics,
      downAfterMs: config.downAfterMs,
      onCondemned: () => this.reconciler.wake(),
    });
    this.reconciler = new PlacementReconciler({
      raft,
      metadata,
      liveness,
      workers,
      log,
      slots,
      metrics: this.metrics,
      concurrency: config.repairConcurrency,
      orphanGraceMs: config.orphanGraceMs,
      intervalMs: Math.min(1_000, Math.max(100, Math.floor(config.downAfterMs / 10))),
    });
    this.routes = adminRoutes({
      raft,
      metadata,
      credentials: credentialsOf(config),
      onDrain: () => this.reconciler.wake(),
    });
  }

  start(): void {
    this.detector.start();
    this.reconciler.start();
  }

  async stop(): Promise<void> {
    this.detector.stop();
    await this.reconciler.stop();
  }
}
