// Gauges read from the replicated tables at each scrape: every manager (followers too) reports the
// same figures, as of its applied index, so a dashboard keeps them while any one manager answers,
// and per-worker disk survives the worker itself being down (its last committed report).

import { Gauge, type Registry } from 'prom-client';
import { NODE_STATES, type NodeView } from '../metadata/commands.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';

type NodeFigure = (n: NodeView) => number;

export function registerClusterMetrics(registry: Registry, metadata: MetadataStateMachine): void {
  const registers = [registry];
  const perWorker = (name: string, help: string, figure: NodeFigure) =>
    new Gauge({
      name,
      help,
      labelNames: ['worker'] as const,
      registers,
      async collect() {
        const nodes = await metadata.listNodes();
        // A worker removed from the table must not keep its last value.
        this.reset();
        for (const n of nodes) this.set({ worker: n.nodeId }, figure(n));
      },
    });
  perWorker(
    'imgvault_cluster_worker_disk_used_bytes',
    'Disk used on each worker, as last reported in a heartbeat and committed (the quota when it has one).',
    (n) => n.diskUsed,
  );
  perWorker(
    'imgvault_cluster_worker_disk_free_bytes',
    'Disk still free for images on each worker, as last committed; placement needs room here.',
    (n) => n.diskFree,
  );
  perWorker(
    'imgvault_cluster_worker_blobs',
    'Blobs each worker reported holding, as last committed.',
    (n) => n.objectCount,
  );
  new Gauge({
    name: 'imgvault_cluster_worker_state',
    help: "1 for each worker's committed state (up, suspect, down, draining, drained), 0 for the others.",
    labelNames: ['worker', 'state'] as const,
    registers,
    async collect() {
      const nodes = await metadata.listNodes();
      this.reset();
      for (const n of nodes) {
        for (const state of NODE_STATES) this.set({ worker: n.nodeId, state }, n.state === state ? 1 : 0);
      }
    },
  });
  registerTotals(registry, metadata);
}

function registerTotals(registry: Registry, metadata: MetadataStateMachine): void {
  const registers = [registry];
  new Gauge({
    name: 'imgvault_cluster_objects',
    help: 'Images recorded in the object table.',
    registers,
    async collect() {
      this.set((await metadata.stats()).objects);
    },
  });
  new Gauge({
    name: 'imgvault_cluster_object_bytes',
    help: 'Bytes of the recorded images, one copy each (the disks hold two).',
    registers,
    async collect() {
      this.set((await metadata.stats()).bytes);
    },
  });
}
