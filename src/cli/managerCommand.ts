// `imgvault manager`: run one manager in the foreground; `manager add` / `manager remove` change
// the membership of a running cluster (adminCommands.ts).

import type { Command } from 'commander';
import { loadManagerConfig, MANAGER_ENV, type ManagerFlags } from '../manager/managerConfig.ts';
import { addMembershipCommands } from './adminCommands.ts';

/** A flag's help with the environment variable it falls back to. */
const help = (what: string, flag: keyof typeof MANAGER_ENV) => `${what} [env ${MANAGER_ENV[flag]}]`;

export function registerManagerCommand(program: Command): void {
  const manager = program
    .command('manager')
    .description('run one manager (Raft replica + API); flags fall back to IMGVAULT_* environment variables')
    .option('--id <id>', help('this manager id, e.g. m1', 'id'))
    .option('--listen <host:port>', help('address to listen on (default: this id in --peers)', 'listen'))
    .option(
      '--url <url>',
      help('URL peers and clients reach this manager at (default: from --peers or --listen)', 'url'),
    )
    .option('--data <dir>', help('data directory', 'data'))
    .option('--peers <list>', help('founding members, e.g. m1=http://127.0.0.1:7001,m2=...', 'peers'))
    .option(
      '--join',
      help('start with no membership and wait to be added to an existing cluster (env: 1 = on)', 'join'),
    )
    .option(
      '--secret <secret>',
      help('the cluster secret itself (prefer --secret-file: a flag shows in ps)', 'secret'),
    )
    .option(
      '--secret-file <file>',
      help(
        'file holding the single cluster secret (every role one key; see --credentials-dir)',
        'secretFile',
      ),
    )
    .option(
      '--credentials-dir <dir>',
      help(
        "the managers' folder of `imgvault credentials init` (raft, workers, access and operator keys): a credential per role; wins over the secret",
        'credentialsDir',
      ),
    )
    .option('--tick-ms <ms>', help('Raft tick interval in ms (default 50)', 'tickMs'))
    .option('--election-tick <n>', help('ticks before an election (default 10)', 'electionTick'))
    .option('--heartbeat-tick <n>', help('ticks between heartbeats (default 1)', 'heartbeatTick'))
    .option(
      '--snapshot-threshold <n>',
      help(
        'compact the Raft log every n applied entries, or at 64 MiB of entries (a snapshot file is written only for a follower that needs one; default 10000)',
        'snapshotThreshold',
      ),
    )
    .option(
      '--leader-wait-ms <ms>',
      help(
        'how long a follower holds a request that needs the leader, while no leader is known to be alive (an election), before its 503; then it redirects it to the new leader or serves it; 0: at once (default 2500)',
        'leaderWaitMs',
      ),
    )
    .option(
      '--max-waiting-for-leader <n>',
      help('requests waiting for a live leader at once, all clients (default 256)', 'maxWaitingForLeader'),
    )
    .option(
      '--mode <mode>',
      help('images (default) or kv: a bare replicated register for Raft benchmarks and drills', 'mode'),
    )
    .option(
      '--client-tokens-file <file>',
      help(
        'bearer tokens (one a line) clients must present on every route but /healthz; none = open',
        'clientTokensFile',
      ),
    )
    .option(
      '--read-only-tokens-file <file>',
      help(
        'bearer tokens (one a line) that open GET and HEAD only: any write gets 403',
        'readOnlyTokensFile',
      ),
    )
    .option(
      '--metrics-token-file <file>',
      help('bearer tokens (one a line) that open /metrics and nothing else', 'metricsTokenFile'),
    )
    .option(
      '--max-image-bytes <n>',
      help('largest accepted image in bytes (default 1073741824 = 1 GiB)', 'maxImageBytes'),
    )
    .option(
      '--suspect-after-ms <ms>',
      help('a worker silent this long gets no new copies or reads (default 3000)', 'suspectAfterMs'),
    )
    .option(
      '--read-first-byte-timeout-ms <ms>',
      help(
        "a read waits this long for a worker's response headers, then tries the other replica (default 3000)",
        'readFirstByteTimeoutMs',
      ),
    )
    .option(
      '--down-after-ms <ms>',
      help('a worker silent this long is marked down and repaired (default 30000)', 'downAfterMs'),
    )
    .option('--max-uploads <n>', help('uploads in progress at once (default 64)', 'maxUploads'))
    .option(
      '--max-uploads-per-client <n>',
      help('uploads in progress for one token or address (default 16)', 'maxUploadsPerClient'),
    )
    .option(
      '--upload-wait-ms <ms>',
      help(
        'how long an upload over a cap waits for room before its 503; 0: at once (default 5000)',
        'uploadWaitMs',
      ),
    )
    .option(
      '--max-waiting-uploads <n>',
      help('uploads waiting for room at once, all clients (default 256)', 'maxWaitingUploads'),
    )
    .option(
      '--max-staged-bytes <n>',
      help('bytes staged by uploads in progress (default 2147483648 = 2 GiB)', 'maxStagedBytes'),
    )
    .option(
      '--max-staged-bytes-per-client <n>',
      help('bytes staged for one token or address (default 1073741824 = 1 GiB)', 'maxStagedBytesPerClient'),
    )
    .option(
      '--staging-memory-bytes <n>',
      help(
        'bytes of uploads held in memory instead of staged files (default 67108864 = 64 MiB; 0: files only)',
        'stagingMemoryBytes',
      ),
    )
    .option(
      '--min-upload-rate <bytes/s>',
      help('slower upload bodies are cut with 408; 0 = never (default 1024)', 'minUploadRate'),
    )
    .option(
      '--upload-rate-window-ms <ms>',
      help('window --min-upload-rate is averaged over (default 60000)', 'uploadRateWindowMs'),
    )
    .option(
      '--orphan-grace-ms <ms>',
      help(
        'unknown blobs on a rejoining worker are deleted after this long (default 3600000)',
        'orphanGraceMs',
      ),
    )
    .option(
      '--repair-concurrency <n>',
      help('worker-to-worker repair copies at once (default 32)', 'repairConcurrency'),
    )
    .option(
      '--heartbeat-interval-ms <ms>',
      help('heartbeat period asked of workers (default 1000)', 'heartbeatIntervalMs'),
    )
    .option(
      '--usage-summary-ms <ms>',
      help('how often worker usage is committed (default 5000)', 'usageSummaryMs'),
    )
    .option(
      '--tls-cert <file>',
      help('PEM certificate (chain) to serve HTTPS with; needs --tls-key (default: plain HTTP)', 'tlsCert'),
    )
    .option('--tls-key <file>', help('PEM private key of --tls-cert', 'tlsKey'))
    .option(
      '--tls-ca <file>',
      help(
        'PEM CA bundle trusted by calls to other managers and to workers (default: the system roots)',
        'tlsCa',
      ),
    )
    .option(
      '--s3-port <port>',
      help('serve the S3-compatible endpoint on this port of the --listen host (default: none)', 's3Port'),
    )
    .option(
      '--bulk-record-load',
      'benchmarks only: accept image records without their bytes at POST /v1/cluster/bulk-records (operator credential); a flag only, no environment variable sets it',
    )
    .action(async (flags: ManagerFlags) => {
      let config: ReturnType<typeof loadManagerConfig>;
      try {
        config = loadManagerConfig(flags);
      } catch (err) {
        console.error(`imgvault manager: ${err instanceof Error ? err.message : String(err)}`);
        process.exit(2);
      }
      // Loaded here, not at the top: `imgvault manager --help` need not load the whole manager.
      const { runManagerProcess } = await import('../manager/managerProcess.ts');
      await runManagerProcess(config);
    });
  addMembershipCommands(manager);
}
