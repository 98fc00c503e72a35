// A manager's configuration: one typed object, parsed and validated once at start-up from
// command-line flags, falling back to IMGVAULT_* environment variables, then to defaults.

import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { readManagerKeys } from '../http/credentialFiles.ts';
import { ManagerCredentials } from '../http/credentials.ts';
import { loadTlsFiles, plainHttpProblem, tlsSettingsSchema } from '../http/tls.ts';
import { DEFAULT_READ_FIRST_BYTE_TIMEOUT_MS } from './workerClient.ts';

export const memberIdSchema = z
  .string()
  .regex(
    /^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$/,
    'a member id is 1-32 letters, digits, _ or -, starting alphanumeric',
  );

export const memberUrlSchema = z
  .string()
  .regex(
    /^https?:\/\/[^\s/]+$/,
    'a member URL is scheme://host:port with no path, e.g. http://127.0.0.1:7001',
  );

/** Parses `m1=http://127.0.0.1:7001,m2=http://127.0.0.1:7002` into an id -> URL map. */
export function parsePeers(spec: string): Record<string, string> {
  const peers: Record<string, string> = {};
  for (const part of spec
    .split(',')
    .map((p) => p.trim())
    .filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq <= 0) throw new Error(`peer "${part}" is not id=url`);
    const id = memberIdSchema.parse(part.slice(0, eq));
    if (id in peers) throw new Error(`peer ${id} is listed twice`);
    peers[id] = memberUrlSchema.parse(part.slice(eq + 1));
  }
  return peers;
}

export const managerConfigSchema = z
  .object({
    id: memberIdSchema,
    host: z.string().min(1).default('127.0.0.1'),
    port: z.number().int().min(0).max(65_535),
    /** The URL peers and clients use to reach this manager (default http://host:port). */
    url: memberUrlSchema,
    dataDir: z.string().min(1),
    /** Founding members (this one included), or, with join, the members to contact. */
    peers: z.record(memberIdSchema, memberUrlSchema),
    /** Start with an empty configuration and wait to be added by the leader (addMember). */
    join: z.boolean().default(false),
    /** The single cluster secret (every role one key); absent with --credentials-dir. */
    secret: z.string().min(16, 'the cluster secret must be at least 16 characters').optional(),
    /** What this manager checks and presents: per role (--credentials-dir), else the single secret. */
    credentials: z.custom<ManagerCredentials>(
      (v) => v instanceof ManagerCredentials,
      'credentials are required',
    ),
    /**
     * What the managers replicate: `images` (the object and node tables, the public image API and
     * the worker protocol) or `kv` (a bare key -> value register, for the consensus benchmark and
     * Raft drills without workers).
     */
    mode: z.enum(['images', 'kv']).default('images'),
    /** Bearer tokens clients must present on every route but /healthz and the secret's; empty = open. */
    clientTokens: z.array(z.string().min(16, 'a client token must be at least 16 characters')).default([]),
    /** Bearer tokens that open GET and HEAD requests only. */
    readOnlyTokens: z
      .array(z.string().min(16, 'a read-only token must be at least 16 characters'))
      .default([]),
    /** Bearer tokens that open /metrics and nothing else (a Prometheus scrape credential). */
    metricsTokens: z.array(z.string().min(16, 'a metrics token must be at least 16 characters')).default([]),
    /** Largest image accepted by an upload: 1 GiB holds photographers' RAW and medium-format files. */
    maxImageBytes: z
      .number()
      .int()
      .min(1)
      .default(1024 * 1024 * 1024),
    /**
     * Bytes of uploads the leader holds in memory at once instead of writing them to a staged file
     * (a body forwarded as it arrives, kept for a replacement target; stagingArea.ts). 0: files only.
     */
    stagingMemoryBytes: z
      .number()
      .int()
      .min(0)
      .default(64 * 1024 * 1024),
    /** Upload admission (uploadAdmission.ts, docs/security.md): uploads in progress, all clients. */
    maxUploads: z.number().int().min(1).default(64),
    /** Uploads in progress for one client (its token with tokens on, else its address). */
    maxUploadsPerClient: z.number().int().min(1).default(16),
    /**
     * How long an upload over a cap waits for room, its body unread, before its 503: a burst is
     * served at the caps' pace instead of spending the leader on refusals (uploadAdmission.ts).
     */
    uploadWaitMs: z.number().int().min(0).default(5_000),
    /** Uploads waiting for room at once, all clients; each holds a socket, not a slot. */
    maxWaitingUploads: z.number().int().min(0).default(256),
    /** Staged bytes reserved by uploads in progress (Content-Length, else maxImageBytes each). */
    maxStagedBytes: z
      .number()
      .int()
      .min(1)
      .default(2 * 1024 * 1024 * 1024),
    /**
     * One client may stage one image of the default maxImageBytes (1 GiB) at a time; with the total
     * at 2 GiB, two clients can each send their largest image at once.
     */
    maxStagedBytesPerClient: z
      .number()
      .int()
      .min(1)
      .default(1024 * 1024 * 1024),
    /**
     * An upload body averaging less than this over a window is cut with 408. 1 KiB/s over a minute
     * lets the slowest mobile link through and holds a slow-loris connection a minute or two.
     */
    minUploadBytesPerSecond: z.number().int().min(0).default(1024),
    uploadRateWindowMs: z.number().int().min(100).default(60_000),
    /** A worker silent this long is no longer given new copies or asked for reads. */
    suspectAfterMs: z.number().int().min(100).default(3_000),
    /**
     * A read waits this long for a worker's response headers before trying the next replica: a
     * worker cut off the network answers nothing, not even a refusal. Headers follow a stat and an
     * open on the worker, whatever the image's size; 3 s (the suspect timeout) leaves a busy worker
     * on a loaded machine ample room. The body, once it flows, has the long idle timeout.
     */
    readFirstByteTimeoutMs: z.number().int().min(100).default(DEFAULT_READ_FIRST_BYTE_TIMEOUT_MS),
    /** A worker silent this long is marked down (committed) and its objects are repaired elsewhere. */
    downAfterMs: z.number().int().min(200).default(30_000),
    /** Blobs a rejoining worker holds that no record knows are deleted only once seen this long. */
    // An upload writes its copies before its record commits; a grace shorter than an upload is unsafe.
    orphanGraceMs: z.number().int().min(1_000, '--orphan-grace-ms must be at least 1000').default(3_600_000),
    /**
     * Worker-to-worker copies the leader keeps in flight: one per batch, a holder streaming up to 32
     * objects to one target (docs/operations.md has the measurements). 32 restores redundancy fast
     * while leaving the workers room for uploads.
     */
    repairConcurrency: z.number().int().min(1).max(256).default(32),
    /** Heartbeat period the leader asks workers to keep. */
    heartbeatIntervalMs: z.number().int().min(50).max(60_000).default(1_000),
    /** How often the leader commits the usage figures heard from workers (one log entry for all). */
    usageSummaryMs: z.number().int().min(100).default(5_000),
    tickMs: z.number().int().min(1).max(10_000).default(50),
    electionTick: z.number().int().min(2).max(1_000).default(10),
    heartbeatTick: z.number().int().min(1).max(1_000).default(1),
    snapshotThreshold: z.number().int().min(1).default(10_000),
    /**
     * How long a request that needs the leader waits, its body unread, for a leader known to be
     * alive before its 503 (leaderWait.ts): a failover's election takes well under a second.
     */
    leaderWaitMs: z.number().int().min(0).max(60_000).default(2_500),
    /** Requests waiting for a live leader at once, all clients; past it a 503 at once. */
    maxWaitingForLeader: z.number().int().min(0).default(256),
    /** HTTPS on the one listener and the CA internal calls trust (src/http/tls.ts); none = plain HTTP. */
    tls: tlsSettingsSchema.optional(),
    /** Port of the S3-compatible endpoint on `host` (docs/s3.md); none when unset. */
    s3Port: z.number().int().min(0).max(65_535).optional(),
    /**
     * Serves POST /v1/cluster/bulk-records (operator credential): image records committed without
     * their bytes, for `npm run bench:scale`. Never on in service: such records name copies no
     * worker holds.
     */
    bulkRecordLoad: z.boolean().default(false),
  })
  .refine((c) => c.heartbeatTick < c.electionTick, { message: 'heartbeatTick must be below electionTick' })
  .refine((c) => c.downAfterMs > c.suspectAfterMs, { message: 'downAfterMs must exceed suspectAfterMs' })
  .refine((c) => c.join || c.id in c.peers, { message: 'a founding manager must be listed in --peers' })
  .superRefine((c, ctx) => {
    // A manager serving TLS sends the cluster secret and Raft entries only over https.
    const problems = [
      plainHttpProblem(c.tls, "this manager's URL", c.url),
      ...Object.entries(c.peers).map(([id, url]) => plainHttpProblem(c.tls, `peer ${id}`, url)),
    ].filter(Boolean);
    for (const message of problems) ctx.addIssue({ code: 'custom', message, path: ['tls'] });
  });

export type ManagerConfig = z.infer<typeof managerConfigSchema>;

/** Flag values as commander hands them over (strings), before validation. */
export interface ManagerFlags {
  id?: string;
  listen?: string;
  url?: string;
  data?: string;
  peers?: string;
  join?: boolean;
  secret?: string;
  secretFile?: string;
  tickMs?: string;
  electionTick?: string;
  heartbeatTick?: string;
  snapshotThreshold?: string;
  leaderWaitMs?: string;
  maxWaitingForLeader?: string;
  mode?: string;
  clientTokensFile?: string;
  metricsTokenFile?: string;
  maxImageBytes?: string;
  maxUploads?: string;
  maxUploadsPerClient?: string;
  uploadWaitMs?: string;
  maxWaitingUploads?: string;
  maxStagedBytes?: string;
  maxStagedBytesPerClient?: string;
  stagingMemoryBytes?: string;
  minUploadRate?: string;
  uploadRateWindowMs?: string;
  suspectAfterMs?: string;
  readFirstByteTimeoutMs?: string;
  downAfterMs?: string;
  orphanGraceMs?: string;
  repairConcurrency?: string;
  heartbeatIntervalMs?: string;
  usageSummaryMs?: string;
  credentialsDir?: string;
  readOnlyTokensFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  tlsCa?: string;
  s3Port?: string;
  bulkRecordLoad?: boolean;
}

/** One token per line; blank lines and lines starting with # are ignored. */
function readTokens(file: string | undefined): string[] {
  if (!file) return [];
  return readFileSync(file, 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l.length > 0 && !l.startsWith('#'));
}

function toInt(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  if (!Number.isInteger(n)) throw new Error(`"${v}" is not an integer`);
  return n;
}

/**
 * Flags with no environment variable: a switch only a benchmark may turn on must not reach a
 * manager by inheritance (local clusters pass their environment to every child).
 */
export const MANAGER_FLAG_ONLY = ['bulkRecordLoad'] as const;
type ManagerFlagOnly = (typeof MANAGER_FLAG_ONLY)[number];

/**
 * The environment variable behind each flag (flags win over it). `imgvault manager --help` names
 * them from this table, and loadManagerConfig reads them from it, so the two cannot drift.
 */
export const MANAGER_ENV = {
  id: 'IMGVAULT_MANAGER_ID',
  listen: 'IMGVAULT_MANAGER_LISTEN',
  url: 'IMGVAULT_MANAGER_URL',
  data: 'IMGVAULT_DATA',
  peers: 'IMGVAULT_PEERS',
  join: 'IMGVAULT_JOIN',
  secret: 'IMGVAULT_CLUSTER_SECRET',
  secretFile: 'IMGVAULT_CLUSTER_SECRET_FILE',
  tickMs: 'IMGVAULT_RAFT_TICK_MS',
  electionTick: 'IMGVAULT_RAFT_ELECTION_TICK',
  heartbeatTick: 'IMGVAULT_RAFT_HEARTBEAT_TICK',
  snapshotThreshold: 'IMGVAULT_RAFT_SNAPSHOT_THRESHOLD',
  leaderWaitMs: 'IMGVAULT_LEADER_WAIT_MS',
  maxWaitingForLeader: 'IMGVAULT_MAX_WAITING_FOR_LEADER',
  mode: 'IMGVAULT_MANAGER_MODE',
  clientTokensFile: 'IMGVAULT_CLIENT_TOKENS_FILE',
  metricsTokenFile: 'IMGVAULT_METRICS_TOKEN_FILE',
  maxImageBytes: 'IMGVAULT_MAX_IMAGE_BYTES',
  maxUploads: 'IMGVAULT_MAX_UPLOADS',
  maxUploadsPerClient: 'IMGVAULT_MAX_UPLOADS_PER_CLIENT',
  uploadWaitMs: 'IMGVAULT_UPLOAD_WAIT_MS',
  maxWaitingUploads: 'IMGVAULT_MAX_WAITING_UPLOADS',
  maxStagedBytes: 'IMGVAULT_MAX_STAGED_BYTES',
  maxStagedBytesPerClient: 'IMGVAULT_MAX_STAGED_BYTES_PER_CLIENT',
  stagingMemoryBytes: 'IMGVAULT_STAGING_MEMORY_BYTES',
  minUploadRate: 'IMGVAULT_MIN_UPLOAD_RATE',
  uploadRateWindowMs: 'IMGVAULT_UPLOAD_RATE_WINDOW_MS',
  suspectAfterMs: 'IMGVAULT_SUSPECT_AFTER_MS',
  readFirstByteTimeoutMs: 'IMGVAULT_READ_FIRST_BYTE_TIMEOUT_MS',
  downAfterMs: 'IMGVAULT_DOWN_AFTER_MS',
  orphanGraceMs: 'IMGVAULT_ORPHAN_GRACE_MS',
  repairConcurrency: 'IMGVAULT_REPAIR_CONCURRENCY',
  heartbeatIntervalMs: 'IMGVAULT_HEARTBEAT_INTERVAL_MS',
  usageSummaryMs: 'IMGVAULT_USAGE_SUMMARY_MS',
  credentialsDir: 'IMGVAULT_CREDENTIALS_DIR',
  readOnlyTokensFile: 'IMGVAULT_READ_ONLY_TOKENS_FILE',
  tlsCert: 'IMGVAULT_TLS_CERT',
  tlsKey: 'IMGVAULT_TLS_KEY',
  tlsCa: 'IMGVAULT_TLS_CA',
  s3Port: 'IMGVAULT_S3_PORT',
} as const satisfies Record<Exclude<keyof ManagerFlags, ManagerFlagOnly>, string>;

/**
 * Per-role keys from --credentials-dir (docs/security.md), which win; else the single cluster
 * secret, which gives every role the same key.
 */
function managerCredentials(
  flags: ManagerFlags,
  env: NodeJS.ProcessEnv,
): { secret: string | undefined; credentials: ManagerCredentials } {
  const E = MANAGER_ENV;
  const dir = flags.credentialsDir ?? env[E.credentialsDir];
  if (dir) {
    try {
      return { secret: undefined, credentials: ManagerCredentials.perRole(readManagerKeys(dir)) };
    } catch (err) {
      throw new Error(
        `cannot read the manager credentials in ${dir} (--credentials-dir): ${(err as Error).message}`,
      );
    }
  }
  const secretFile = flags.secretFile ?? env[E.secretFile];
  const secret =
    flags.secret ?? env[E.secret] ?? (secretFile ? readFileSync(secretFile, 'utf8').trim() : undefined);
  if (secret === undefined) {
    throw new Error(
      `credentials are required: --credentials-dir (per role), or a single cluster secret (--secret-file, --secret or ${E.secret})`,
    );
  }
  // An empty secret fails the schema below with its message; this object is then never used.
  return { secret, credentials: ManagerCredentials.singleSecret(secret || '-') };
}

/** Flags win over the environment (MANAGER_ENV); `IMGVAULT_JOIN=1` is --join. */
export function loadManagerConfig(flags: ManagerFlags, env: NodeJS.ProcessEnv = process.env): ManagerConfig {
  const E = MANAGER_ENV;
  const int = (name: keyof ManagerFlags & keyof typeof E) =>
    toInt((flags[name] as string | undefined) ?? env[E[name]]);
  const id = flags.id ?? env[E.id];
  const peers = parsePeers(flags.peers ?? env[E.peers] ?? '');
  let listen = flags.listen ?? env[E.listen];
  if (listen === undefined && id !== undefined && peers[id] !== undefined) listen = new URL(peers[id]).host;
  if (listen === undefined)
    throw new Error('--listen host:port is required when this manager is not in --peers');
  const colon = listen.lastIndexOf(':');
  if (colon <= 0) throw new Error(`--listen "${listen}" is not host:port`);
  const host = listen.slice(0, colon);
  const port = toInt(listen.slice(colon + 1));
  const { secret, credentials } = managerCredentials(flags, env);
  const tls = loadTlsFiles({
    certFile: flags.tlsCert ?? env[E.tlsCert],
    keyFile: flags.tlsKey ?? env[E.tlsKey],
    caFile: flags.tlsCa ?? env[E.tlsCa],
  });
  const scheme = tls?.server ? 'https' : 'http';
  const raw = {
    id,
    host,
    port,
    url: flags.url ?? env[E.url] ?? (id !== undefined ? peers[id] : undefined) ?? `${scheme}://${listen}`,
    dataDir: flags.data ?? env[E.data],
    peers,
    join: flags.join ?? env[E.join] === '1',
    secret,
    credentials,
    mode: flags.mode ?? env[E.mode],
    clientTokens: readTokens(flags.clientTokensFile ?? env[E.clientTokensFile]),
    readOnlyTokens: readTokens(flags.readOnlyTokensFile ?? env[E.readOnlyTokensFile]),
    metricsTokens: readTokens(flags.metricsTokenFile ?? env[E.metricsTokenFile]),
    maxImageBytes: int('maxImageBytes'),
    maxUploads: int('maxUploads'),
    maxUploadsPerClient: int('maxUploadsPerClient'),
    uploadWaitMs: int('uploadWaitMs'),
    maxWaitingUploads: int('maxWaitingUploads'),
    maxStagedBytes: int('maxStagedBytes'),
    maxStagedBytesPerClient: int('maxStagedBytesPerClient'),
    stagingMemoryBytes: int('stagingMemoryBytes'),
    minUploadBytesPerSecond: int('minUploadRate'),
    uploadRateWindowMs: int('uploadRateWindowMs'),
    suspectAfterMs: int('suspectAfterMs'),
    readFirstByteTimeoutMs: int('readFirstByteTimeoutMs'),
    downAfterMs: int('downAfterMs'),
    orphanGraceMs: int('orphanGraceMs'),
    repairConcurrency: int('repairConcurrency'),
    heartbeatIntervalMs: int('heartbeatIntervalMs'),
    usageSummaryMs: int('usageSummaryMs'),
    tickMs: int('tickMs'),
    electionTick: int('electionTick'),
    heartbeatTick: int('heartbeatTick'),
    snapshotThreshold: int('snapshotThreshold'),
    leaderWaitMs: int('leaderWaitMs'),
    maxWaitingForLeader: int('maxWaitingForLeader'),
    tls,
    s3Port: int('s3Port'),
    bulkRecordLoad: flags.bulkRecordLoad ?? false,
  };
  const parsed = managerConfigSchema.safeParse(raw);
  if (!parsed.success) {
    throw new Error(`invalid manager configuration: ${z.prettifyError(parsed.error)}`);
  }
  return parsed.data;
}
