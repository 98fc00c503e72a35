import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { serve } from '@hono/node-server';
import { onLauncherStop } from '../childControl.ts';
import { keepNewFilesPrivate } from '../fileWrites.ts';
import { httpsServeOptions, type TlsSettings, useInternalTls } from '../http/tls.ts';
import { createLogger, type Logger } from '../logging.ts';
import { describeStorageFailure, isDiskFull, messageWithCauses } from '../storageFailure.ts';
import { BlobStore, RESERVE_BYTES } from './blobStore.ts';
import { errnoCode } from './errors.ts';
import { LostCopyReporter } from './lostCopyReporter.ts';
import {
  ManagerClient,
  NoManagerAnsweredError,
  WorkerRemovedError,
  type WorkerUsage,
} from './managerClient.ts';
import { Scrubber } from './scrubber.ts';
import { createWorkerApp } from './workerApp.ts';
import { advertisedUrl, type WorkerConfig } from './workerConfig.ts';
import { EXIT_REMOVED } from './workerExit.ts';

/** In-flight requests (a PUT being fsynced) get this long to finish at shutdown before being cut. */
const DRAIN_TIMEOUT_MS = 10_000;
/** Blob ids per wipe check; the leader accepts up to 1,000 (MAX_BLOB_LIST_IDS). */
const WIPE_BATCH = 500;

export const EXIT_OK = 0;
/** Start-up failed: no manager answered, the port is taken, the data folder is unusable... */
export const EXIT_START_FAILED = 1;
/** The configuration was refused (see workerConfig.ts); nothing was started. */
export const EXIT_BAD_CONFIG = 2;
export { EXIT_REMOVED } from './workerExit.ts';

/**
 * What a heartbeat reports. With a quota, the disk the leader ranks is the quota: used is what the
 * blobs take, free is what the quota (or the filesystem, if fuller) still allows, so a worker at
 * its quota looks full rather than as empty as the filesystem it shares.
 */
export async function usageOf(store: BlobStore): Promise<WorkerUsage> {
  const s = await store.stats();
  const counts = { blobCount: s.blobCount, blobBytes: s.blobBytes };
  if (s.quotaBytes === null) return { diskUsed: s.diskUsedBytes, diskFree: s.diskFreeBytes, ...counts };
  return {
    diskUsed: s.blobBytes,
    diskFree: Math.max(0, Math.min(s.diskFreeBytes, s.quotaBytes - s.blobBytes)),
    ...counts,
  };
}

/**
 * One storage worker: config -> BlobStore.open (its start-up check) -> HTTP app -> listen ->
 * (`--rejoin wipe`: the wipe, asking the leader first) -> register with the managers (bounded
 * retries; the caller exits if none answers) -> heartbeats and the scrubber. `stop()` undoes
 * whatever was started, in reverse order, and may be called at any stage.
 */
export class WorkerProcess {
  private store: BlobStore | undefined;
  private server: Server | undefined;
  private client: ManagerClient | undefined;
  private scrubber: Scrubber | undefined;
  private lostCopies: LostCopyReporter | undefined;
  private stopping: Promise<void> | undefined;
  private starting: Promise<void> | undefined;
  private boundUrl: string | undefined;
  private markRemoved!: (err: WorkerRemovedError) => void;
  /** Settles once a manager says this worker was removed from the cluster (it then has to stop). */
  readonly removed = new Promise<WorkerRemovedError>((resolve) => {
    this.markRemoved = resolve;
  });

  constructor(
    readonly config: WorkerConfig,
    private readonly log: Logger = createLogger('worker', { nodeId: config.id }),
  ) {}

  /** The advertised URL, once listening. */
  get url(): string | undefined {
    return this.boundUrl;
  }

  get managerClient(): ManagerClient | undefined {
    return this.client;
  }

  start(): Promise<void> {
    this.starting ??= this.startInOrder();
    return this.starting;
  }

  /** Checks `stopping` after every await, so a stop during start-up closes exactly what was opened. */
  private async startInOrder(): Promise<void> {
    const { config, log } = this;
    // Before any internal client (manager client, copy-batch) is built.
    useInternalTls(config.tls);
    log.info(
      { event: 'worker.starting', dataDir: config.dataDir, managers: config.managers, zone: config.zone },
      'worker starting',
    );
    this.store = await BlobStore.open(config.dataDir, {
      ...(config.quotaBytes !== undefined ? { quotaBytes: config.quotaBytes } : {}),
      logger: log,
      diskReserveBytes: RESERVE_BYTES,
    });
    if (this.stopping) return;

    const { app, metrics } = createWorkerApp({
      store: this.store,
      secret: config.clusterSecret,
      accessCredential: config.accessCredential,
      maxBlobBytes: config.maxBlobBytes,
      logger: log,
      // One app per process here, so process metrics (CPU, heap, event loop lag) belong to it.
      collectDefaultMetrics: true,
    });
    this.server = await listen(app.fetch, config.listen.host, config.listen.port, config.tls);
    const port = (this.server.address() as AddressInfo).port;
    this.boundUrl = advertisedUrl(config, port);
    log.info({ event: 'worker.listening', url: this.boundUrl, port }, 'worker listening');
    if (this.stopping) return;

    const store = this.store;
    this.client = new ManagerClient({
      workerId: config.id,
      url: this.boundUrl,
      zone: config.zone,
      managers: config.managers,
      clusterSecret: config.clusterSecret,
      registerAttempts: config.registerAttempts,
      registerBackoffMs: config.registerBackoffMs,
      heartbeatIntervalMs: config.heartbeatIntervalMs,
      requestTimeoutMs: config.managerTimeoutMs,
      inventory: () => store.inventory(),
      usage: () => usageOf(store),
      logger: log,
      onRemoved: (err) => this.markRemoved(err),
    });
    const client = this.client;
    const lostCopies = new LostCopyReporter({ report: (ids) => client.reportLostCopies(ids), log });
    this.lostCopies = lostCopies;
    store.onLost((id) => lostCopies.note(id));
    if (config.rejoin === 'wipe') await this.wipe(store, this.client);
    if (this.stopping) return;
    await this.client.register();
    if (this.stopping) return;
    this.client.startHeartbeats();
    if (config.scrubBytesPerSec > 0) {
      this.scrubber = new Scrubber({
        store,
        bytesPerSecond: config.scrubBytesPerSec,
        pauseMs: config.scrubPauseMs,
        log,
        // What it removes is counted with every other lost copy (the store's onLost, workerApp.ts).
        onBlob: (_outcome, bytes) => metrics.scrubbedBytes.inc(bytes),
      });
      this.scrubber.start();
    }
    log.info(
      {
        event: 'worker.started',
        url: this.boundUrl,
        leader: this.client.leaderUrl,
        blobCount: store.startupReport.blobCount,
      },
      'worker started',
    );
  }

  /**
   * `--rejoin wipe` (approach 1 of docs/seed-flow.md): before it registers, the worker deletes what
   * it holds, so it joins empty. The leader is asked first, a batch at a time: a blob whose every
   * other copy is on a worker that is down right now is kept (deleting it would lose the image) and
   * rejoins as with `--rejoin keep`. If no manager answers, start-up fails before anything more is deleted.
   */
  private async wipe(store: BlobStore, client: ManagerClient): Promise<void> {
    let deleted = 0;
    let kept = 0;
    let batch: string[] = [];
    const flush = async () => {
      const keep = await client.wipeCheck(batch);
      for (const id of batch) {
        if (this.stopping) return;
        if (keep.has(id)) kept += 1;
        else if ((await store.delete(id)).ok) deleted += 1;
      }
      batch = [];
    };
    // The inventory reads a LevelDB snapshot, so deleting while it runs is safe.
    for await (const entry of store.inventory()) {
      if (this.stopping) return;
      batch.push(entry.id);
      if (batch.length >= WIPE_BATCH) await flush();
    }
    if (batch.length > 0) await flush();
    this.log.warn(
      { event: 'worker.wiped', deleted, kept },
      `rejoin wipe: deleted ${deleted} blobs, kept ${kept} that had no other readable copy`,
    );
  }

  /** Idempotent: heartbeats stop first (the leader then notices), then the server drains, then the store closes. */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      this.log.info({ event: 'worker.stopping' }, 'worker stopping');
      // Stopping the client aborts a registration in progress, which lets start() settle.
      await this.client?.stop();
      await this.starting?.catch(() => {});
      await this.scrubber?.stop();
      await this.lostCopies?.stop();
      if (this.server) await closeServer(this.server, DRAIN_TIMEOUT_MS);
      await this.store?.close();
      this.log.info({ event: 'worker.stopped' }, 'worker stopped');
    })();
    return this.stopping;
  }
}

function listen(
  fetch: Parameters<typeof serve>[0]['fetch'],
  hostname: string,
  port: number,
  tls: TlsSettings | undefined,
): Promise<Server> {
  return new Promise((resolve, reject) => {
    const server = serve({ fetch, hostname, port, ...httpsServeOptions(tls) }, () => {
      server.off('error', reject);
      resolve(server as Server);
    });
    server.once('error', reject);
  });
}

function closeServer(server: Server, drainMs: number): Promise<void> {
  return new Promise((resolve) => {
    const cut = setTimeout(() => server.closeAllConnections(), drainMs);
    server.close(() => {
      clearTimeout(cut);
      resolve();
    });
    // Idle keep-alive sockets would hold close() open until their timeout; busy ones finish first.
    server.closeIdleConnections();
  });
}

/**
 * Runs a worker until SIGTERM/SIGINT and returns the process exit status: 0 after a clean stop,
 * EXIT_START_FAILED when start-up fails (after the bounded registration attempts, the error names
 * every manager URL tried). The message goes to stderr as well as to the log, for operators
 * reading a terminal or a container's output.
 */
export async function runWorkerProcess(config: WorkerConfig, log?: Logger): Promise<number> {
  keepNewFilesPrivate();
  const logger = log ?? createLogger('worker', { nodeId: config.id });
  const worker = new WorkerProcess(config, logger);
  let signalled: string | undefined;
  let onStopRequested!: () => void;
  const stopRequested = new Promise<void>((resolve) => (onStopRequested = resolve));
  const onSignal = (signal: NodeJS.Signals | 'cluster-stop' | 'launcher-gone') => {
    if (signalled) {
      if (signal === 'cluster-stop' || signal === 'launcher-gone') return;
      // A second signal means the operator will not wait for the drain.
      logger.warn({ event: 'worker.forced_exit', signal }, 'second signal: exiting without draining');
      process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
    }
    signalled = signal;
    logger.info({ event: 'worker.signal', signal }, 'stop requested');
    onStopRequested();
    void worker.stop();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  onLauncherStop(onSignal);
  try {
    try {
      await worker.start();
    } catch (err) {
      await worker.stop();
      if (signalled) return EXIT_OK;
      if (err instanceof WorkerRemovedError) return exitRemoved(err.message, config, logger);
      const message =
        err instanceof NoManagerAnsweredError
          ? err.message
          : `start-up failed: ${describeStartError(err, config)}`;
      logger.error({ event: 'worker.start_failed', err: message }, 'worker could not start');
      process.stderr.write(`imgvault worker ${config.id}: ${message}\n`);
      return EXIT_START_FAILED;
    }
    const gone = await Promise.race([worker.removed, stopRequested.then(() => null)]);
    await worker.stop();
    if (gone !== null && !signalled) return exitRemoved(gone.message, config, logger);
    return EXIT_OK;
  } finally {
    process.off('SIGTERM', onSignal);
    process.off('SIGINT', onSignal);
  }
}

function exitRemoved(message: string, config: WorkerConfig, logger: Logger): number {
  logger.error({ event: 'worker.exit_removed', err: message }, 'worker stopped: removed from the cluster');
  process.stderr.write(`imgvault worker ${config.id}: ${message}\n`);
  return EXIT_REMOVED;
}

function describeStartError(err: unknown, config: WorkerConfig): string {
  if (errnoCode(err) === 'EADDRINUSE') {
    const { host, port } = config.listen;
    return `port ${port} on ${host} is in use by another process (another imgvault cluster?)`;
  }
  if (isDiskFull(err)) return describeStorageFailure(err, config.dataDir);
  return describeError(err);
}

/** The message with its causes (LevelDB's "Database failed to open" keeps its reason there). */
function describeError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const code = errnoCode(err);
  const message = messageWithCauses(err);
  return code !== undefined && !message.includes(code) ? `${code}: ${message}` : message;
}
