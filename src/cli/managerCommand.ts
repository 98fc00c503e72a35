// `imgvault manager`: run one manager in the foreground.

import type { Command } from 'commander';
import { loadManagerConfig, type ManagerFlags } from '../manager/managerConfig.ts';
import { runManagerProcess } from '../manager/managerProcess.ts';

export function registerManagerCommand(program: Command): void {
  program
    .command('manager')
    .description('run one manager (Raft replica + API); flags fall back to IMGVAULT_* environment variables')
    .option('--id <id>', 'this manager id, e.g. m1 (IMGVAULT_MANAGER_ID)')
    .option('--listen <host:port>', 'address to listen on (default: this id in --peers)')
    .option('--url <url>', 'URL peers and clients reach this manager at (default: from --peers or --listen)')
    .option('--data <dir>', 'data directory (IMGVAULT_DATA)')
    .option('--peers <list>', 'founding members, e.g. m1=http://127.0.0.1:7001,m2=... (IMGVAULT_PEERS)')
    .option('--join', 'start with no membership and wait to be added to an existing cluster')
    .option('--secret <secret>', 'cluster secret (prefer --secret-file or IMGVAULT_CLUSTER_SECRET)')
    .option('--secret-file <file>', 'file holding the cluster secret (IMGVAULT_CLUSTER_SECRET_FILE)')
    .option('--tick-ms <ms>', 'Raft tick interval in ms (default 50)')
    .option('--election-tick <n>', 'ticks before an election (default 10)')
    .option('--heartbeat-tick <n>', 'ticks between heartbeats (default 1)')
    .option('--snapshot-threshold <n>', 'snapshot and compact every n applied entries (default 10000)')
    .option(
      '--mode <mode>',
      'images (default) or kv: a bare replicated register for Raft benchmarks and drills',
    )
    .option('--client-tokens-file <file>', 'bearer tokens (one a line) clients must present; none = open API')
    .option('--max-image-bytes <n>', 'largest accepted image in bytes (default 67108864 = 64 MiB)')
    .option('--max-uploads <n>', 'uploads in progress at once (IMGVAULT_MAX_UPLOADS, default 64)')
    .option(
      '--max-uploads-per-client <n>',
      'uploads in progress for one token or address (IMGVAULT_MAX_UPLOADS_PER_CLIENT, default 16)',
    )
    .option(
      '--max-staged-bytes <n>',
      'bytes staged by uploads in progress (IMGVAULT_MAX_STAGED_BYTES, default 2 GiB)',
    )
    .option(
      '--max-staged-bytes-per-client <n>',
      'bytes staged for one token or address (IMGVAULT_MAX_STAGED_BYTES_PER_CLIENT, default 512 MiB)',
    )
    .option(
      '--min-upload-rate <bytes/s>',
      'slower upload bodies are cut with 408; 0 = never (IMGVAULT_MIN_UPLOAD_RATE, default 1024)',
    )
    .option(
      '--upload-rate-window-ms <ms>',
      'window --min-upload-rate is averaged over (IMGVAULT_UPLOAD_RATE_WINDOW_MS, default 60000)',
    )
    .option('--suspect-after-ms <ms>', 'a worker silent this long gets no new copies or reads (default 3000)')
    .option('--down-after-ms <ms>', 'a worker silent this long is marked down and repaired (default 30000)')
    .option(
      '--orphan-grace-ms <ms>',
      'unknown blobs on a rejoining worker are deleted after this long (default 3600000)',
    )
    .option('--repair-concurrency <n>', 'worker-to-worker repair copies at once (default 32)')
    .option('--heartbeat-interval-ms <ms>', 'heartbeat period asked of workers (default 1000)')
    .option('--usage-summary-ms <ms>', 'how often worker usage is committed (default 5000)')
    .action(async (flags: ManagerFlags) => {
      let config: ReturnType<typeof loadManagerConfig>;
      try {
        config = loadManagerConfig(flags);
      } catch (err) {
        console.error(`imgvault manager: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(2);
      }
      await runManagerProcess(config);
    });
}
