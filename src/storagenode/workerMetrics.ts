import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { StoreStats } from './blobStore.ts';

export interface WorkerMetrics {
  registry: Registry;
  requests: Counter<'method' | 'route' | 'status'>;
  requestSeconds: Histogram<'method' | 'route'>;
  bytesIn: Counter;
  bytesOut: Counter;
  errors: Counter<'kind'>;
  fsyncSeconds: Histogram<'target'>;
  scrubbedBytes: Counter;
  scrubLost: Counter;
}

export interface WorkerMetricsOptions {
  /** Read at every scrape; the counters the blob store keeps anyway. */
  readCounters: () => { blobCount: number; blobBytes: number };
  /** Read at every scrape for the filesystem figures; absent = no disk gauges. */
  readStats?: () => Promise<StoreStats>;
  /** Process metrics (CPU, memory, event loop lag); off by default so tests can build many apps. */
  collectDefault?: boolean;
}

/** A registry per app instance, so several workers in one process (tests) never share series. */
export function createWorkerMetrics(options: WorkerMetricsOptions): WorkerMetrics {
  const registry = new Registry();
  if (options.collectDefault) collectDefaultMetrics({ register: registry, prefix: 'imgvault_worker_' });
  const registers = [registry];
  const { readCounters } = options;
  new Gauge({
    name: 'imgvault_worker_blobs',
    help: 'Blobs stored on this worker.',
    registers,
    collect() {
      this.set(readCounters().blobCount);
    },
  });
  new Gauge({
    name: 'imgvault_worker_blob_bytes',
    help: 'Bytes of all blobs stored on this worker.',
    registers,
    collect() {
      this.set(readCounters().blobBytes);
    },
  });
  if (options.readStats) registerDiskGauges(registry, options.readStats);
  return {
    registry,
    requests: new Counter({
      name: 'imgvault_worker_requests_total',
      help: 'HTTP requests answered, by method, route pattern and status.',
      labelNames: ['method', 'route', 'status'] as const,
      registers,
    }),
    requestSeconds: new Histogram({
      name: 'imgvault_worker_request_duration_seconds',
      help: 'Time to the response headers, by method and route pattern.',
      labelNames: ['method', 'route'] as const,
      buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 30],
      registers,
    }),
    bytesIn: new Counter({
      name: 'imgvault_worker_bytes_received_total',
      help: 'Blob body bytes received by PUT /blobs/:id.',
      registers,
    }),
    bytesOut: new Counter({
      name: 'imgvault_worker_bytes_sent_total',
      help: 'Blob bytes sent, by GET /blobs/:id and by copy-batch.',
      registers,
    }),
    errors: new Counter({
      name: 'imgvault_worker_errors_total',
      help: 'Error answers by kind (the error code).',
      labelNames: ['kind'] as const,
      registers,
    }),
    fsyncSeconds: new Histogram({
      name: 'imgvault_worker_fsync_seconds',
      help: 'fsync latency of blob files and folders.',
      labelNames: ['target'] as const,
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers,
    }),
    scrubbedBytes: new Counter({
      name: 'imgvault_worker_scrubbed_bytes_total',
      help: 'Blob bytes read back and checked by the scrubber.',
      registers,
    }),
    scrubLost: new Counter({
      name: 'imgvault_worker_scrub_lost_total',
      help: 'Blobs found missing, short or not matching their checksum and removed, by the scrubber or by a read (GET, verify, copy batch).',
      registers,
    }),
  };
}

/** The filesystem under the data folder; a quota (if any) is in the worker's heartbeat, not here. */
function registerDiskGauges(registry: Registry, readStats: () => Promise<StoreStats>): void {
  const registers = [registry];
  new Gauge({
    name: 'imgvault_worker_disk_total_bytes',
    help: 'Size of the filesystem holding the data folder.',
    registers,
    async collect() {
      this.set((await readStats()).diskTotalBytes);
    },
  });
  new Gauge({
    name: 'imgvault_worker_disk_free_bytes',
    help: 'Bytes of that filesystem still available to the worker.',
    registers,
    async collect() {
      this.set((await readStats()).diskFreeBytes);
    },
  });
}
