// What the placement tests share: a real metadata state machine (a one-member log in place of
// Raft, applying in order as the node driver does), real workers in-process on 127.0.0.1, and the
// placement reconciler over them with an injected clock.

import { randomBytes } from 'node:crypto';
import { stat, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { Registry } from 'prom-client';
import { expect } from 'vitest';
import { createLogger } from '../../src/logging.ts';
import { FailureDetector } from '../../src/manager/failureDetector.ts';
import type { RaftAccess } from '../../src/manager/imageService.ts';
import { ObjectSlots } from '../../src/manager/placement/execute.ts';
import { PlacementReconciler, type PlacementReconcilerDeps } from '../../src/manager/placement/reconciler.ts';
import { RepairMetrics } from '../../src/manager/repairMetrics.ts';
import { WorkerClient } from '../../src/manager/workerClient.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import { type Command, decodeCommand } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { EntryLog, MetadataFixture } from '../metadata/metadataFixture.ts';
import {
  makeDataDir,
  type RunningWorker,
  removeDir,
  SECRET,
  sha256Of,
  startWorker,
} from '../storagenode/workerHarness.ts';

export const log = createLogger('placement-test');
const fx = new MetadataFixture();
const cleanups: (() => Promise<void>)[] = [];

/** Runs `c` at the end of the current test. */
export function onCleanup(c: () => Promise<void>): void {
  cleanups.push(c);
}

/** Stops what a test started; every test file of the placement calls it after each test. */
export async function cleanup(): Promise<void> {
  for (const c of cleanups.splice(0).reverse()) await c();
  await fx.cleanup();
}

/** One member that is always leader: append, apply in order, hand back the result. */
export function singleMemberRaft(sm: MetadataStateMachine): RaftAccess {
  const entries = new EntryLog();
  let tail: Promise<unknown> = Promise.resolve();
  return {
    isLeader: () => true,
    leaderInfo: () => ({ id: 'm1', url: null }),
    readIndex: async () => {},
    propose(data, requestId) {
      expect(decodeCommand(data).ok).toBe(true);
      const run = tail.then(async () => {
        const results = await sm.apply([entries.raw(data)]);
        return results.find((r) => r.requestId === requestId)?.result;
      });
      tail = run.catch(() => {});
      return run;
    },
  };
}

export interface Setup {
  sm: MetadataStateMachine;
  raft: RaftAccess;
  client: WorkerClient;
  liveness: WorkerLiveness;
  metrics: RepairMetrics;
  registry: Registry;
  workers: Map<string, RunningWorker>;
  clock: { now: number };
  slots: ObjectSlots;
}

export async function setup(specs: { id: string; zone?: string; quotaBytes?: number }[]): Promise<Setup> {
  const sm = await fx.machine();
  const raft = singleMemberRaft(sm);
  const client = new WorkerClient({ secret: SECRET, idleTimeoutMs: 5_000 });
  const clock = { now: Date.now() };
  const liveness = new WorkerLiveness({ suspectAfterMs: 1_000, now: () => clock.now });
  const registry = new Registry();
  const metrics = new RepairMetrics(registry);
  const workers = new Map<string, RunningWorker>();
  cleanups.push(() => client.close());
  for (const spec of specs) {
    const dir = await makeDataDir();
    const w = await startWorker(dir, spec.quotaBytes ? { quotaBytes: spec.quotaBytes } : {});
    workers.set(spec.id, w);
    cleanups.push(async () => {
      await w.stop().catch(() => {});
      await removeDir(dir);
    });
    await proposeCommand(raft, {
      type: 'registerWorker',
      nodeId: spec.id,
      url: w.url,
      zone: spec.zone ?? `zone-${spec.id}`,
      at: clock.now,
    });
  }
  return { sm, raft, client, liveness, metrics, registry, workers, clock, slots: new ObjectSlots() };
}

/** Every worker heard just now; `diskUsed` (of 1 MB, default 10%) per worker decides the placement order. */
export function hearAll(s: Setup, diskUsed: Record<string, number> = {}): void {
  for (const id of s.workers.keys()) {
    const used = diskUsed[id] ?? 100_000;
    s.liveness.heard({
      nodeId: id,
      diskUsed: used,
      diskFree: 1_000_000 - used,
      objectCount: 0,
      lastSeen: s.clock.now,
    });
  }
}

export async function putObject(s: Setup, id: string, replicas: string[], size = 2_000): Promise<Buffer> {
  const bytes = randomBytes(size);
  for (const nodeId of replicas) {
    await s.client.putBlob(s.workers.get(nodeId)!.url, id, sha256Of(bytes), size, Readable.from([bytes]));
  }
  const recorded = await proposeCommand(s.raft, {
    type: 'recordObject',
    id,
    size,
    sha256: sha256Of(bytes),
    contentType: 'image/png',
    createdAt: s.clock.now - 60_000,
    replicas,
  });
  expect(recorded.ok).toBe(true);
  return bytes;
}

export async function propose(s: Setup, c: Command) {
  const r = await proposeCommand(s.raft, c);
  expect(r.ok).toBe(true);
}

export async function metric(s: Setup, name: string): Promise<number> {
  const m = await s.registry.getSingleMetric(name)?.get();
  return m?.values.reduce((t, v) => t + v.value, 0) ?? 0;
}

/** The placement reconciler over the setup's Raft, tables, workers and clock; `deps` replaces any of them. */
export function placementFor(s: Setup, deps: Partial<PlacementReconcilerDeps> = {}): PlacementReconciler {
  return new PlacementReconciler({
    raft: s.raft,
    metadata: s.sm,
    slots: s.slots,
    liveness: s.liveness,
    workers: s.client,
    log,
    metrics: s.metrics,
    concurrency: 8,
    orphanGraceMs: 10_000,
    intervalMs: 500,
    now: () => s.clock.now,
    ...deps,
  });
}

/** The repair half of a placement reconciler (see placementFor). */
export function placementLoop(s: Setup, deps: Partial<PlacementReconcilerDeps> = {}) {
  return placementFor(s, deps).repair;
}

/** Condemns after 5 s of silence on the setup's clock. */
export function failureDetector(s: Setup, onCondemned?: (nodeId: string) => void): FailureDetector {
  return new FailureDetector({
    raft: s.raft,
    metadata: s.sm,
    liveness: s.liveness,
    log,
    metrics: s.metrics,
    downAfterMs: 5_000,
    now: () => s.clock.now,
    ...(onCondemned ? { onCondemned } : {}),
  });
}

/** Overwrites a blob's bytes on disk, same length, leaving the worker's index (and its claim) alone. */
export async function rot(w: RunningWorker, id: string): Promise<void> {
  const file = w.store.blobPath(id);
  const { size } = await stat(file);
  await writeFile(file, randomBytes(size));
}
