import { readFileSync } from 'node:fs';
import { Command } from 'commander';
import { CLUSTER_SECRET_HEADER } from '../api/clusterAuth.ts';
import {
  parseWorkerConfig,
  WORKER_CONFIG_FIELDS,
  WorkerConfigError,
  type WorkerFlags,
} from '../storagenode/workerConfig.ts';
import { EXIT_BAD_CONFIG, runWorkerProcess } from '../storagenode/workerProcess.ts';

const F = WORKER_CONFIG_FIELDS;
const help = (what: string, f: { env: string; defaultText: string }) =>
  `${what} [env ${f.env}; default ${f.defaultText}]`;

/**
 * `imgvault worker`: runs one storage worker until SIGTERM/SIGINT. Exit status 0 after a clean
 * stop, 1 when start-up fails (no manager answered within the registration attempts, port taken,
 * unusable data folder), 2 when the configuration is refused (the message names each bad field).
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
      'file holding the cluster secret [or env IMGVAULT_CLUSTER_SECRET_FILE, or the secret itself in IMGVAULT_CLUSTER_SECRET; required]',
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
    .action(async (opts: WorkerFlags) => {
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

/**
 * `imgvault worker drain <id>`: asks the leader to move every object off a worker. Follows the
 * followers' 307 to the leader (a bounded number of hops), keeping the cluster secret on the way.
 */
export function createDrainCommand(): Command {
  return new Command('drain')
    .description(
      'mark a worker draining: the leader moves every object it holds elsewhere, then marks it drained',
    )
    .argument('<id>', 'node id of the worker to drain')
    .option('--managers <urls>', 'comma-separated manager URLs [env IMGVAULT_MANAGERS]')
    .option('--secret-file <file>', 'file holding the cluster secret [or env IMGVAULT_CLUSTER_SECRET_FILE]')
    .action(async (id: string, _opts: unknown, command: Command) => {
      // `worker` itself declares --managers and --secret-file, so commander may hand them to it.
      const opts = command.optsWithGlobals<{ managers?: string; secretFile?: string }>();
      const managers = (opts.managers ?? process.env.IMGVAULT_MANAGERS ?? 'http://127.0.0.1:7001')
        .split(',')
        .map((m) => m.trim())
        .filter(Boolean);
      const secretFile = opts.secretFile ?? process.env.IMGVAULT_CLUSTER_SECRET_FILE;
      const secret = secretFile
        ? readFileSync(secretFile, 'utf8').trim()
        : process.env.IMGVAULT_CLUSTER_SECRET;
      if (!secret) {
        process.stderr.write('imgvault worker drain: a cluster secret is required (--secret-file)\n');
        process.exit(2);
      }
      const failures: string[] = [];
      for (const manager of managers) {
        let url = new URL(`/v1/cluster/nodes/${encodeURIComponent(id)}/drain`, manager).toString();
        try {
          for (let hop = 0; hop < 4; hop++) {
            const res = await fetch(url, {
              method: 'POST',
              headers: { [CLUSTER_SECRET_HEADER]: secret },
              redirect: 'manual',
              signal: AbortSignal.timeout(10_000),
            });
            const location = res.headers.get('location');
            if (res.status === 307 && location) {
              url = location;
              continue;
            }
            const text = await res.text();
            if (res.ok) {
              process.stdout.write(`${text}\n`);
              process.exit(0);
            }
            if (res.status < 500) {
              process.stderr.write(`imgvault worker drain: ${res.status} ${text}\n`);
              process.exit(1);
            }
            failures.push(`${manager}: ${res.status} ${text}`);
            break;
          }
        } catch (err) {
          failures.push(`${manager}: ${(err as Error).message}`);
        }
      }
      process.stderr.write(
        `imgvault worker drain: no manager accepted the request:\n  ${failures.join('\n  ')}\n`,
      );
      process.exit(1);
    });
}

/** Adds `worker` to the `imgvault` program, like the other register*Command functions. */
export function registerWorkerCommand(program: Command): void {
  program.addCommand(createWorkerCommand().addCommand(createDrainCommand()));
}
