// docs/seed-flow.md's "fires metrics (success, failure, etc.)" for the image pipeline: what a Prometheus
// scrape of a manager says about uploads, downloads and deletes it served while leader (downloads on
// any manager). Outcomes are ImageError codes, so an alert can tell a full cluster (NoLiveWorker)
// from a client mistake (NotAnImage) or a consensus hiccup (CommitFailed).

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import { SLAB_BYTES } from './heldBodies.ts';

/** An upload's outcome label: `created`, `existing` (same id, same bytes) or an error code. */
export type UploadOutcomeLabel = 'created' | 'existing' | string;

export class UploadMetrics {
  private readonly uploads: Counter<'outcome'>;
  private readonly uploadBytes: Counter;
  private readonly uploadSeconds: Histogram<'outcome'>;
  private readonly phaseSeconds: Histogram<'phase'>;
  private readonly fallbacks: Counter;
  private readonly downloads: Counter<'outcome'>;
  private readonly downloadSeconds: Histogram<'outcome'>;
  private readonly downloadBytes: Counter;
  private readonly deletes: Counter<'outcome'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.uploads = new Counter({
      name: 'imgvault_uploads_total',
      help: 'Uploads answered by this manager as leader, by outcome (created, existing, or the error code).',
      labelNames: ['outcome'] as const,
      registers,
    });
    this.uploadBytes = new Counter({
      name: 'imgvault_upload_bytes_total',
      help: 'Bytes of images stored by uploads that created a new object.',
      registers,
    });
    this.uploadSeconds = new Histogram({
      name: 'imgvault_upload_duration_seconds',
      help: 'Upload time from the request reaching the service to the answer (body transfer included), by outcome.',
      labelNames: ['outcome'] as const,
      // From a tiny image on an idle cluster (a few ms) to a large one on a busy disk.
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers,
    });
    this.phaseSeconds = new Histogram({
      name: 'imgvault_upload_phase_seconds',
      help: 'Time of each step of an upload: stage (body to the staging file, or in whole when forwarded as it arrives), replicate (both worker copies confirmed, after that), commit (the Raft record).',
      labelNames: ['phase'] as const,
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.fallbacks = new Counter({
      name: 'imgvault_upload_fallbacks_total',
      help: 'Worker targets that refused or failed a copy during an upload and were replaced by another.',
      registers,
    });
    this.downloads = new Counter({
      name: 'imgvault_downloads_total',
      help: 'Downloads (GET and HEAD) opened by this manager, by outcome (ok or the error code).',
      labelNames: ['outcome'] as const,
      registers,
    });
    this.downloadSeconds = new Histogram({
      name: 'imgvault_download_duration_seconds',
      help: 'Download time until the bytes start to flow (record read and a worker answering), by outcome.',
      labelNames: ['outcome'] as const,
      // Not the body transfer: its pace is the client's, not the cluster's.
      buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers,
    });
    this.downloadBytes = new Counter({
      name: 'imgvault_download_bytes_total',
      help: 'Image bytes of GET downloads whose body was sent to the end (ranges count their length).',
      registers,
    });
    this.deletes = new Counter({
      name: 'imgvault_deletes_total',
      help: 'Deletes answered by this manager as leader, by outcome (deleted or the error code).',
      labelNames: ['outcome'] as const,
      registers,
    });
    // Zero series from the start, so a rate() over a fresh manager is 0 rather than absent.
    for (const outcome of ['created', 'existing']) this.uploads.inc({ outcome }, 0);
    this.downloads.inc({ outcome: 'ok' }, 0);
    this.deletes.inc({ outcome: 'deleted' }, 0);
  }

  upload(outcome: UploadOutcomeLabel, seconds: number, bytes: number): void {
    this.uploads.inc({ outcome });
    this.uploadSeconds.observe({ outcome }, seconds);
    if (outcome === 'created') this.uploadBytes.inc(bytes);
  }

  phase(phase: 'stage' | 'replicate' | 'commit', seconds: number): void {
    this.phaseSeconds.observe({ phase }, seconds);
  }

  fallback(): void {
    this.fallbacks.inc();
  }

  download(outcome: string, seconds: number): void {
    this.downloads.inc({ outcome });
    this.downloadSeconds.observe({ outcome }, seconds);
  }

  downloadSent(bytes: number): void {
    this.downloadBytes.inc(bytes);
  }

  delete(outcome: string): void {
    this.deletes.inc({ outcome });
  }
}

/** What the staging memory gauges read of the staging area (StagingArea) at each scrape. */
export interface StagingMemoryView {
  readonly heldInMemory: number;
  readonly spareSlabs: number;
}

/**
 * The memory the leader holds upload bodies in (stagingArea.ts, heldBodies.ts): held against its
 * limit tells how close uploads are to being staged in files instead, and the spare slabs are
 * memory the leader keeps in its RSS while no upload holds it.
 */
export function registerStagingMemoryMetrics(
  registry: Registry,
  staging: StagingMemoryView,
  limitBytes: number,
): void {
  const registers = [registry];
  new Gauge({
    name: 'imgvault_staging_memory_bytes',
    help: 'Bytes of upload bodies held in memory now (whole 256 KiB slabs, reserved for the Content-Length when the upload starts), for a copy that must be sent again.',
    registers,
    collect() {
      this.set(staging.heldInMemory);
    },
  });
  new Gauge({
    name: 'imgvault_staging_memory_limit_bytes',
    help: 'The most upload bodies held in memory at once (--staging-memory-bytes); a body that does not fit goes to a staged file.',
    registers,
  }).set(limitBytes);
  new Gauge({
    name: 'imgvault_staging_memory_spare_bytes',
    help: 'Slabs no upload holds now, kept for the next bodies: memory in the RSS, not in imgvault_staging_memory_bytes.',
    registers,
    collect() {
      this.set(staging.spareSlabs * SLAB_BYTES);
    },
  });
}
