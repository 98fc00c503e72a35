import { Command } from 'commander';
import {
  parseWorkerConfig,
  WORKER_CONFIG_FIELDS,
  WorkerConfigError,
  type WorkerFlags,
} from '../storagenode/workerConfig.ts';
import { createDrainCommand, createRemoveCommand, createUndrainCommand } from './adminCommands.ts';

const F = WORKER_CONFIG_FIELDS;
const help = (what: string, f: { env: string; defaultText: string }) =>
  `${what} [env ${f.env}; default ${f.defaultText}]`;

/**
 * `imgvault worker`: runs one storage worker until SIGTERM/SIGINT. Exit status 0 after a clean
 * stop, 1 when start-up fails (no manager answered within the registration attempts, port taken,
 * unusable data folder), 2 when the configuration is refused (the message names each bad field),
 * 3 when the managers say its id was removed from the cluster (`imgvault worker remove`).
 */
export function createWorkerCommand(): Command {
  return new Command('worker')
    .description('run a storage worker: stores blobs on local disk and registers with the managers')
    .option('--id <id>', help('node id of this worker', F.id))
    .option('--listen <host:port>', help('address to listen on (port 0 = any free port)', F.listen))
    .option('--data <dir>', help('data folder', F.dataDir))
    .option('--managers <urls>', help('comma-separated manager URLs', F.managers))
    .option('--zone <zone>', help('failure zone', F.zone))
    .option(
      '--secret-file <file>',
      'file holding the single cluster secret [or env IMGVAULT_CLUSTER_SECRET_FILE, or the secret itself in IMGVAULT_CLUSTER_SECRET; required without --credentials-dir]',
    )
    .option(
      '--credentials-dir <dir>',
      help(
        "this worker's folder from `imgvault credentials init` (worker.credential, access.credential); wins over the secret",
        F.accessCredential,
      ),
    )
    .option('--max-blob-bytes <size>', help('largest blob accepted (e.g. 64MiB)', F.maxBlobBytes))
    .option('--quota-bytes <size>', help('total bytes this worker may hold', F.quotaBytes))
    .option('--register-attempts <n>', help('registration attempts before giving up', F.registerAttempts))
    .option(
      '--register-backoff-ms <ms>',
      help('first registration retry delay, doubling', F.registerBackoffMs),
    )
    .option('--heartbeat-interval-ms <ms>', help('heartbeat period', F.heartbeatIntervalMs))
    .option('--manager-timeout-ms <ms>', help('bound on one manager request', F.managerTimeoutMs))
    .option('--advertise-url <url>', help('URL others reach this worker at', F.advertiseUrl))
    .option(
      '--rejoin <mode>',
      help(
        'keep: register with the blobs held and let the leader reconcile; wipe: delete them all first',
        F.rejoin,
      ),
    )
    .option(
      '--scrub-bytes-per-sec <size>',
      help('read-back rate of the background scrubber (0 = off)', F.scrubBytesPerSec),
    )
    .option('--scrub-pause-ms <ms>', help('pause between two full scrub passes', F.scrubPauseMs))
    .option(
      '--tls-cert <file>',
      help('PEM certificate (chain) to serve HTTPS with; needs --tls-key', F.tlsCert),
    )
    .option('--tls-key <file>', help('PEM private key of --tls-cert', F.tlsKey))
    .option(
      '--tls-ca <file>',
      help('PEM CA bundle trusted by calls to managers and to other workers', F.tlsCa),
    )
    .action(async (opts: WorkerFlags) => {
      // Loaded here, not at the top: `imgvault worker --help` need not load the whole worker.
      const { EXIT_BAD_CONFIG, runWorkerProcess } = await import('../storagenode/workerProcess.ts');
      let config: ReturnType<typeof parseWorkerConfig>;
      try {
        config = parseWorkerConfig(opts, process.env);
      } catch (err) {
        if (!(err instanceof WorkerConfigError)) throw err;
        process.stderr.write(`imgvault worker: ${err.message}\n`);
        process.exit(EXIT_BAD_CONFIG);
      }
      const status = await runWorkerProcess(config);
      // Stray handles (a half-open socket) must not keep a stopped worker alive.
      process.exit(status);
    });
}

/** `imgvault worker drain <id>`, kept here under its old name; it lives with the other admin commands. */
export { createDrainCommand };

/** Adds `worker` to the `imgvault` program, like the other register*Command functions. */
export function registerWorkerCommand(program: Command): void {
  program.addCommand(
    createWorkerCommand()
      .addCommand(createDrainCommand())
      .addCommand(createUndrainCommand())
      .addCommand(createRemoveCommand()),
  );
}
