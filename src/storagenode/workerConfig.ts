import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { z } from 'zod';
import { readWorkerCredentials } from '../http/credentialFiles.ts';
import { loadTlsFiles, plainHttpProblem, TlsConfigError, type TlsSettings } from '../http/tls.ts';

/**
 * The storage worker's whole configuration, parsed and validated once at start-up.
 * Every field comes from a flag, else an environment variable, else its documented default
 * (see WORKER_CONFIG_FIELDS and docs/worker-protocol.md).
 */
export interface WorkerConfig {
  /** Stable node id the managers know this worker by. */
  id: string;
  /** Address to bind; port 0 picks a free port (the advertised URL then uses the real one). */
  listen: { host: string; port: number };
  /** Folder holding the blobs (absolute). */
  dataDir: string;
  /** Manager base URLs, tried in order to find the leader (never empty). */
  managers: string[];
  zone: string;
  /** What this worker presents to the managers: its worker credential, or the single cluster secret. */
  clusterSecret: string;
  /**
   * Per-role mode (--credentials-dir): the access credential managers present to this worker (its
   * copy credential derives from it). Undefined: the single cluster secret opens this worker.
   */
  accessCredential: string | undefined;
  maxBlobBytes: number;
  /** Bytes this worker may hold in total; undefined = limited only by the disk. */
  quotaBytes: number | undefined;
  /** Registration attempts at start-up (each tries every manager) before the process gives up. */
  registerAttempts: number;
  /** Delay before the first registration retry; doubles per retry, capped at 10 s. */
  registerBackoffMs: number;
  heartbeatIntervalMs: number;
  /** Timeout of one manager request (a heartbeat, or registration until the answer starts). */
  managerTimeoutMs: number;
  /** URL the managers and other workers use to reach this worker; undefined = http://<listen>. */
  advertiseUrl: string | undefined;
  /**
   * What a (re)starting worker does with the blobs it holds: `keep` registers with them and lets
   * the leader reconcile (approach 2 of docs/seed-flow.md); `wipe` deletes them all first and joins
   * empty (approach 1; repair restores any copy the tables still counted here).
   */
  rejoin: 'keep' | 'wipe';
  /** Read-back rate of the background scrubber, bytes per second; 0 turns it off. */
  scrubBytesPerSec: number;
  /** Pause between two full scrub passes. */
  scrubPauseMs: number;
  /** HTTPS on the listener and the CA internal calls trust (src/http/tls.ts); undefined = plain HTTP. */
  tls: TlsSettings | undefined;
}

/** The raw text values a caller (CLI flags) may pass; undefined means "not given". */
export interface WorkerFlags {
  id?: string | undefined;
  listen?: string | undefined;
  data?: string | undefined;
  managers?: string | undefined;
  zone?: string | undefined;
  secretFile?: string | undefined;
  credentialsDir?: string | undefined;
  maxBlobBytes?: string | undefined;
  quotaBytes?: string | undefined;
  registerAttempts?: string | undefined;
  registerBackoffMs?: string | undefined;
  heartbeatIntervalMs?: string | undefined;
  managerTimeoutMs?: string | undefined;
  advertiseUrl?: string | undefined;
  rejoin?: string | undefined;
  scrubBytesPerSec?: string | undefined;
  scrubPauseMs?: string | undefined;
  tlsCert?: string | undefined;
  tlsKey?: string | undefined;
  tlsCa?: string | undefined;
}

/** The three files behind `tls`, each with its own flag. */
type TlsFlagName = 'tlsCert' | 'tlsKey' | 'tlsCa';
type FieldName = Exclude<keyof WorkerConfig, 'tls'> | TlsFlagName | 'clusterSecret';

/** The secret may also come from a file named in the environment (what `imgvault cluster` passes). */
const SECRET_FILE_ENV = 'IMGVAULT_CLUSTER_SECRET_FILE';

interface FieldSource {
  flag: string;
  env: string;
  defaultText: string;
}

/** Where each field comes from; used for error messages and the CLI's help text. */
export const WORKER_CONFIG_FIELDS: Record<Exclude<FieldName, 'clusterSecret'>, FieldSource> & {
  clusterSecret: FieldSource;
} = {
  id: { flag: '--id', env: 'IMGVAULT_WORKER_ID', defaultText: 'required' },
  listen: { flag: '--listen', env: 'IMGVAULT_LISTEN', defaultText: '127.0.0.1:7101' },
  dataDir: { flag: '--data', env: 'IMGVAULT_DATA', defaultText: './data/<id>' },
  managers: { flag: '--managers', env: 'IMGVAULT_MANAGERS', defaultText: 'required' },
  zone: { flag: '--zone', env: 'IMGVAULT_ZONE', defaultText: 'default' },
  clusterSecret: {
    flag: '--secret-file',
    env: 'IMGVAULT_CLUSTER_SECRET',
    defaultText: 'required',
  },
  accessCredential: {
    flag: '--credentials-dir',
    env: 'IMGVAULT_CREDENTIALS_DIR',
    defaultText: 'none (the single cluster secret)',
  },
  maxBlobBytes: { flag: '--max-blob-bytes', env: 'IMGVAULT_MAX_BLOB_BYTES', defaultText: '1GiB' },
  quotaBytes: { flag: '--quota-bytes', env: 'IMGVAULT_QUOTA_BYTES', defaultText: 'none (the disk)' },
  registerAttempts: { flag: '--register-attempts', env: 'IMGVAULT_REGISTER_ATTEMPTS', defaultText: '10' },
  registerBackoffMs: {
    flag: '--register-backoff-ms',
    env: 'IMGVAULT_REGISTER_BACKOFF_MS',
    defaultText: '500',
  },
  heartbeatIntervalMs: {
    flag: '--heartbeat-interval-ms',
    env: 'IMGVAULT_HEARTBEAT_INTERVAL_MS',
    defaultText: '1000',
  },
  managerTimeoutMs: { flag: '--manager-timeout-ms', env: 'IMGVAULT_MANAGER_TIMEOUT_MS', defaultText: '5000' },
  advertiseUrl: {
    flag: '--advertise-url',
    env: 'IMGVAULT_ADVERTISE_URL',
    defaultText: 'http://<listen> (https:// with --tls-cert)',
  },
  rejoin: { flag: '--rejoin', env: 'IMGVAULT_REJOIN', defaultText: 'keep' },
  scrubBytesPerSec: {
    flag: '--scrub-bytes-per-sec',
    env: 'IMGVAULT_SCRUB_BYTES_PER_SEC',
    defaultText: '16MiB',
  },
  scrubPauseMs: { flag: '--scrub-pause-ms', env: 'IMGVAULT_SCRUB_PAUSE_MS', defaultText: '3600000' },
  tlsCert: { flag: '--tls-cert', env: 'IMGVAULT_TLS_CERT', defaultText: 'none (plain HTTP)' },
  tlsKey: { flag: '--tls-key', env: 'IMGVAULT_TLS_KEY', defaultText: 'none' },
  tlsCa: { flag: '--tls-ca', env: 'IMGVAULT_TLS_CA', defaultText: 'none (the system roots)' },
};

export class WorkerConfigError extends Error {
  readonly code = 'InvalidWorkerConfig';
  constructor(readonly problems: string[]) {
    super(`invalid worker configuration:\n  ${problems.join('\n  ')}`);
    this.name = 'WorkerConfigError';
  }
}

const SIZE_UNITS: Record<string, number> = {
  '': 1,
  b: 1,
  k: 1024,
  kib: 1024,
  kb: 1000,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  mb: 1000 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
  gb: 1000 ** 3,
  t: 1024 ** 4,
  tib: 1024 ** 4,
  tb: 1000 ** 4,
};

/** "67108864", "64MiB", "1.5 GiB", "10GB" -> bytes; undefined when the text is not a size. */
export function parseByteSize(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(text);
  if (!m) return undefined;
  const unit = SIZE_UNITS[m[2]!.toLowerCase()];
  if (unit === undefined) return undefined;
  const bytes = Number(m[1]) * unit;
  return Number.isSafeInteger(Math.round(bytes)) ? Math.round(bytes) : undefined;
}

const byteSize = z.string().transform((text, ctx) => {
  const n = parseByteSize(text);
  if (n === undefined) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a byte size (e.g. 67108864, 64MiB, 10GiB)` });
    return z.NEVER;
  }
  return n;
});

const intText = (min: number, max: number) =>
  z
    .string()
    .regex(/^\s*\d+\s*$/, 'must be a whole number')
    .transform(Number)
    .pipe(z.number().int().min(min).max(max));

const listenText = z.string().transform((text, ctx) => {
  // host:port, [v6]:port, or a bare port (binds 127.0.0.1: loopback is the safe default).
  const m = /^(?:\[([^\]]+)\]|([^:]*)):(\d+)$/.exec(text.trim()) ?? /^()()(\d+)$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || !Number.isInteger(port) || port < 0 || port > 65535) {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not host:port (e.g. 127.0.0.1:7101)` });
    return z.NEVER;
  }
  return { host: m[1] || m[2] || '127.0.0.1', port };
});

const httpUrl = z.string().transform((text, ctx) => {
  let url: URL;
  try {
    url = new URL(text.trim());
  } catch {
    ctx.addIssue({ code: 'custom', message: `"${text}" is not a URL` });
    return z.NEVER;
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    ctx.addIssue({ code: 'custom', message: `"${text}" must be an http:// or https:// URL` });
    return z.NEVER;
  }
  // Base URLs are joined with absolute paths later, so no trailing slash.
  return url.href.replace(/\/+$/, '');
});

const rawSchema = z.object({
  id: z
    .string({ error: 'is required' })
    .regex(
      /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/,
      'must be 1-64 characters: letters, digits, "_", "." or "-", starting with a letter or digit',
    ),
  listen: listenText,
  dataDir: z.string().min(1, 'must not be empty').optional(),
  managers: z
    .string({ error: 'is required (comma-separated manager URLs)' })
    .transform((text) =>
      text
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s.length > 0),
    )
    .pipe(z.array(httpUrl).min(1, 'needs at least one manager URL')),
  zone: z
    .string()
    .regex(/^[A-Za-z0-9_.-]{1,64}$/, 'must be 1-64 characters: letters, digits, "_", "." or "-"'),
  clusterSecret: z.string({ error: 'is required' }).min(1, 'must not be empty'),
  maxBlobBytes: byteSize.pipe(z.number().int().min(1, 'must be at least 1 byte')),
  quotaBytes: byteSize.pipe(z.number().int().min(1, 'must be at least 1 byte')).optional(),
  registerAttempts: intText(1, 1000),
  registerBackoffMs: intText(0, 60_000),
  heartbeatIntervalMs: intText(50, 60_000),
  managerTimeoutMs: intText(100, 600_000),
  advertiseUrl: httpUrl.optional(),
  rejoin: z.enum(['keep', 'wipe'], { error: 'must be keep or wipe' }),
  scrubBytesPerSec: byteSize.pipe(z.number().int().min(0, 'must be 0 (off) or more')),
  scrubPauseMs: intText(0, 7 * 24 * 3_600_000),
});

type RawInput = Partial<Record<keyof z.input<typeof rawSchema>, string>>;

function pick(flag: string | undefined, envValue: string | undefined): string | undefined {
  if (flag !== undefined) return flag;
  return envValue !== undefined && envValue !== '' ? envValue : undefined;
}

function describeField(field: string): string {
  const src = (WORKER_CONFIG_FIELDS as Record<string, FieldSource>)[field];
  return src ? `${field} (${src.flag} / ${src.env})` : field;
}

/**
 * Flags win over environment variables, which win over defaults. Throws WorkerConfigError
 * naming every bad field with the flag and variable it came from.
 */
export function parseWorkerConfig(flags: WorkerFlags, env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const problems: string[] = [];
  const F = WORKER_CONFIG_FIELDS;

  let clusterSecret: string | undefined;
  let accessCredential: string | undefined;
  let secretFileUnreadable = false;
  const credentialsDir = pick(flags.credentialsDir, env[F.accessCredential.env]);
  const secretFile = pick(flags.secretFile, env[SECRET_FILE_ENV]);
  if (credentialsDir !== undefined) {
    try {
      const credentials = readWorkerCredentials(credentialsDir, pick(flags.id, env[F.id.env]) ?? '');
      clusterSecret = credentials.own;
      accessCredential = credentials.access;
    } catch (err) {
      secretFileUnreadable = true;
      problems.push(`${describeField('accessCredential')}: ${(err as Error).message}`);
    }
  } else if (secretFile !== undefined) {
    try {
      // A trailing newline from `echo secret > file` is not part of the secret.
      clusterSecret = readFileSync(secretFile, 'utf8').trim();
    } catch (err) {
      secretFileUnreadable = true;
      problems.push(
        `clusterSecret (--secret-file / ${SECRET_FILE_ENV}): cannot read ${secretFile}: ${(err as Error).message}`,
      );
    }
  } else {
    clusterSecret = pick(undefined, env[F.clusterSecret.env]);
  }

  let tls: TlsSettings | undefined;
  try {
    tls = loadTlsFiles({
      certFile: pick(flags.tlsCert, env[F.tlsCert.env]),
      keyFile: pick(flags.tlsKey, env[F.tlsKey.env]),
      caFile: pick(flags.tlsCa, env[F.tlsCa.env]),
    });
  } catch (err) {
    if (!(err instanceof TlsConfigError)) throw err;
    problems.push(`tls: ${err.message}`);
  }

  const blobBytesGiven = pick(flags.maxBlobBytes, env[F.maxBlobBytes.env]);
  const raw: RawInput = {
    id: pick(flags.id, env[F.id.env]),
    listen: pick(flags.listen, env[F.listen.env]) ?? F.listen.defaultText,
    dataDir: pick(flags.data, env[F.dataDir.env]),
    managers: pick(flags.managers, env[F.managers.env]),
    zone: pick(flags.zone, env[F.zone.env]) ?? F.zone.defaultText,
    clusterSecret,
    maxBlobBytes: blobBytesGiven ?? F.maxBlobBytes.defaultText,
    quotaBytes: pick(flags.quotaBytes, env[F.quotaBytes.env]),
    registerAttempts:
      pick(flags.registerAttempts, env[F.registerAttempts.env]) ?? F.registerAttempts.defaultText,
    registerBackoffMs:
      pick(flags.registerBackoffMs, env[F.registerBackoffMs.env]) ?? F.registerBackoffMs.defaultText,
    heartbeatIntervalMs:
      pick(flags.heartbeatIntervalMs, env[F.heartbeatIntervalMs.env]) ?? F.heartbeatIntervalMs.defaultText,
    managerTimeoutMs:
      pick(flags.managerTimeoutMs, env[F.managerTimeoutMs.env]) ?? F.managerTimeoutMs.defaultText,
    advertiseUrl: pick(flags.advertiseUrl, env[F.advertiseUrl.env]),
    rejoin: pick(flags.rejoin, env[F.rejoin.env]) ?? F.rejoin.defaultText,
    scrubBytesPerSec:
      pick(flags.scrubBytesPerSec, env[F.scrubBytesPerSec.env]) ?? F.scrubBytesPerSec.defaultText,
    scrubPauseMs: pick(flags.scrubPauseMs, env[F.scrubPauseMs.env]) ?? F.scrubPauseMs.defaultText,
  };

  const parsed = rawSchema.safeParse(raw);
  if (!parsed.success) {
    for (const issue of parsed.error.issues) {
      const field = String(issue.path[0] ?? 'config');
      if (field === 'clusterSecret' && secretFileUnreadable) continue;
      problems.push(`${describeField(field)}: ${issue.message}`);
    }
  }
  if (problems.length > 0 || !parsed.success) throw new WorkerConfigError(problems);

  const v = parsed.data;
  // The default follows the managers' 1 GiB image limit; a smaller quota is not an error unless
  // the operator asked for blobs larger than it.
  if (blobBytesGiven === undefined && v.quotaBytes !== undefined) {
    v.maxBlobBytes = Math.min(v.maxBlobBytes, v.quotaBytes);
  }
  const wildcard = ['0.0.0.0', '::', ''].includes(v.listen.host);
  if (wildcard && v.advertiseUrl === undefined) {
    throw new WorkerConfigError([
      `${describeField('advertiseUrl')}: is required when listening on ${v.listen.host || '*'} ` +
        '(no one can reach a wildcard address)',
    ]);
  }
  // A worker serving TLS sends the cluster secret and blobs only over https.
  const plain = [
    ...v.managers.map((url) => plainHttpProblem(tls, describeField('managers'), url)),
    v.advertiseUrl === undefined ? '' : plainHttpProblem(tls, describeField('advertiseUrl'), v.advertiseUrl),
  ].filter(Boolean);
  if (plain.length > 0) throw new WorkerConfigError(plain);
  if (v.quotaBytes !== undefined && v.quotaBytes < v.maxBlobBytes) {
    throw new WorkerConfigError([
      `${describeField('quotaBytes')}: ${v.quotaBytes} is smaller than maxBlobBytes ${v.maxBlobBytes}`,
    ]);
  }
  return {
    id: v.id,
    listen: v.listen,
    dataDir: resolve(v.dataDir ?? `./data/${v.id}`),
    managers: [...new Set(v.managers)],
    zone: v.zone,
    clusterSecret: v.clusterSecret,
    accessCredential,
    maxBlobBytes: v.maxBlobBytes,
    quotaBytes: v.quotaBytes,
    registerAttempts: v.registerAttempts,
    registerBackoffMs: v.registerBackoffMs,
    heartbeatIntervalMs: v.heartbeatIntervalMs,
    managerTimeoutMs: v.managerTimeoutMs,
    advertiseUrl: v.advertiseUrl,
    rejoin: v.rejoin,
    scrubBytesPerSec: v.scrubBytesPerSec,
    scrubPauseMs: v.scrubPauseMs,
    tls,
  };
}

/** The URL others reach this worker at, once the real port is known. */
export function advertisedUrl(config: WorkerConfig, boundPort: number): string {
  if (config.advertiseUrl !== undefined) return config.advertiseUrl;
  const host = config.listen.host.includes(':') ? `[${config.listen.host}]` : config.listen.host;
  return `${config.tls?.server ? 'https' : 'http'}://${host}:${boundPort}`;
}
