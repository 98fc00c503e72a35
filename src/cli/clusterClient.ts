// The CLI's way to the cluster: several managers, any of which may be down, redirecting to the
// leader, or between leaders. One request is tried on one manager at a time; a refused connection,
// a reset, a timeout or a 503 moves it on to the next manager after a bounded backoff (longer when
// the manager asked for it with Retry-After), within a bound on attempts and on total time. A
// client command's request also moves on when the manager it waits on stops answering while
// another leads (silentManager.ts).

import { existsSync, readFileSync } from 'node:fs';
import type { Readable } from 'node:stream';
import type { Command } from 'commander';
import pRetry, { AbortError } from 'p-retry';
import { type Dispatcher, request } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../http/clusterAuth.ts';
import { TlsConfigError, trustCaFile } from '../http/tls.ts';
import {
  type LeaderMoved,
  SILENT_MANAGER,
  type SilentManagerTiming,
  watchSilentManager,
} from './silentManager.ts';

/** The embedded cluster's managers (`imgvault cluster`). */
export const DEFAULT_MANAGER_URLS = [
  'http://127.0.0.1:7001',
  'http://127.0.0.1:7002',
  'http://127.0.0.1:7003',
];
/** Where `imgvault cluster` keeps the operator credential, relative to the folder it runs in. */
export const DEFAULT_OPERATOR_CREDENTIAL_FILE = './data/credentials/operator/operator.credential';
/** Where `imgvault cluster` kept the single cluster secret before per-role credentials. */
export const DEFAULT_SECRET_FILE = './data/cluster-secret';

const MAX_REDIRECTS = 3;
/** Connection-level failures after which the same request may go to another manager. */
const RETRYABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);

export interface RetryPolicy {
  /** Attempts of one request in all (each on one manager, redirects included). */
  attempts: number;
  /** Bound on the time one request may take, retries included. */
  totalMs: number;
  /** First backoff; doubles up to maxDelayMs. */
  minDelayMs: number;
  maxDelayMs: number;
  /** Longest Retry-After honoured. */
  maxRetryAfterMs: number;
  /** Bound on the wait for a manager's response headers. */
  headersTimeoutMs: number;
  /**
   * Give up a request whose manager stopped answering while another leads (silentManager.ts); null
   * for requests that must not be sent twice on a guess (a leader transfer, a key created).
   */
  silentManager: SilentManagerTiming | null;
}

export const DEFAULT_RETRY: RetryPolicy = {
  attempts: 12,
  totalMs: 60_000,
  minDelayMs: 100,
  maxDelayMs: 2_000,
  maxRetryAfterMs: 5_000,
  headersTimeoutMs: 30_000,
  silentManager: null,
};

/** Client commands: each of their requests may be repeated (uploads go to ids chosen here). */
export const CLIENT_RETRY: RetryPolicy = { ...DEFAULT_RETRY, silentManager: SILENT_MANAGER };

export interface ClientRequest {
  /** Called once per attempt and per redirect hop: a stream can only be sent once. */
  body?: () => Readable | string;
  headers?: Record<string, string>;
  /** Statuses that end the request successfully (the response is handed back unread). */
  expect: number[];
}

export interface ClientResponse {
  res: Dispatcher.ResponseData;
  /** 1 when the first attempt answered; more when the request was retried. */
  attempts: number;
  /** The manager that answered (after redirects). */
  url: string;
}

/** A request refused for good (a 4xx, or retries exhausted): the message names every answer seen. */
export class ClusterRequestFailed extends Error {
  constructor(
    message: string,
    /** The last HTTP status received, if any. */
    readonly status: number | null,
    readonly code: string | null,
  ) {
    super(message);
    this.name = 'ClusterRequestFailed';
  }
}

/** One attempt that may be repeated elsewhere. */
class Retryable extends Error {
  constructor(
    message: string,
    readonly retryAfterMs: number,
    readonly status: number | null,
    readonly code: string | null,
    /** Where the next attempt goes, when known (a leader the others named). */
    readonly nextUrl: string | null = null,
  ) {
    super(message);
  }
}

export function parseUrls(list: string | undefined): string[] {
  const urls = (list ?? '')
    .split(',')
    .map((u) => u.trim().replace(/\/+$/, ''))
    .filter(Boolean);
  for (const u of urls) {
    const parsed = URL.canParse(u) ? new URL(u) : null;
    if (!parsed || (parsed.protocol !== 'http:' && parsed.protocol !== 'https:')) {
      throw new Error(`not an http(s) URL: ${u}`);
    }
  }
  return urls;
}

/** `--url`, else IMGVAULT_URL, else the embedded cluster's managers. */
export function managerUrls(flag: string | undefined, env = process.env): string[] {
  const urls = parseUrls(flag ?? env.IMGVAULT_URL);
  return urls.length > 0 ? urls : DEFAULT_MANAGER_URLS;
}

/**
 * `--ca` / IMGVAULT_CA: every request of this process (ClusterClient, the status probes) trusts
 * this CA bundle, and only it, for https:// URLs. Exits 2 with the reason when the file is unusable.
 */
export function trustCa(file: string): void {
  try {
    trustCaFile(file);
  } catch (err) {
    if (!(err instanceof TlsConfigError)) throw err;
    process.stderr.write(`imgvault: --ca: ${err.message}\n`);
    process.exit(2);
  }
}

export function bearerHeaders(token: string | undefined, env = process.env): Record<string, string> {
  const t = token ?? env.IMGVAULT_TOKEN;
  return t ? { authorization: `Bearer ${t}` } : {};
}

/**
 * The operator's credential (or the single cluster secret): `--secret-file`, else
 * IMGVAULT_CLUSTER_SECRET_FILE, else the secret itself in IMGVAULT_CLUSTER_SECRET, else the
 * embedded cluster's operator credential, else its single secret from before per-role credentials.
 */
export function secretHeaders(secretFile: string | undefined, env = process.env): Record<string, string> {
  const file = secretFile ?? env.IMGVAULT_CLUSTER_SECRET_FILE;
  let secret: string | undefined;
  if (file) secret = readSecret(file);
  else if (env.IMGVAULT_CLUSTER_SECRET) secret = env.IMGVAULT_CLUSTER_SECRET;
  else if (existsSync(DEFAULT_OPERATOR_CREDENTIAL_FILE))
    secret = readSecret(DEFAULT_OPERATOR_CREDENTIAL_FILE);
  else secret = readSecret(DEFAULT_SECRET_FILE);
  if (!secret) throw new Error('the cluster secret is empty');
  return { [CLUSTER_SECRET_HEADER]: secret };
}

function readSecret(file: string): string {
  try {
    return readFileSync(file, 'utf8').trim();
  } catch (err) {
    throw new Error(
      `cannot read the operator credential from ${file} (${(err as NodeJS.ErrnoException).code ?? (err as Error).message}): pass --secret-file or set IMGVAULT_CLUSTER_SECRET_FILE`,
    );
  }
}

function errorCode(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown } };
  if (typeof e?.code === 'string') return e.code;
  if (typeof e?.cause?.code === 'string') return e.cause.code;
  return undefined;
}

/** Retry-After as seconds or an HTTP date, in ms; 0 when absent or unreadable. */
export function retryAfterMs(value: string | string[] | undefined, now = Date.now()): number {
  const v = Array.isArray(value) ? value[0] : value;
  if (!v) return 0;
  const seconds = Number(v);
  if (Number.isFinite(seconds)) return Math.max(0, seconds * 1000);
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.max(0, at - now) : 0;
}

async function describeAnswer(res: Dispatcher.ResponseData): Promise<{ text: string; code: string | null }> {
  const raw = await res.body.text().catch(() => '');
  try {
    const body = JSON.parse(raw) as { error?: { code?: string; message?: string } };
    if (body.error?.code) {
      return { text: `${res.statusCode} ${body.error.code}: ${body.error.message}`, code: body.error.code };
    }
  } catch {}
  return { text: `${res.statusCode} ${raw.slice(0, 200)}`.trim(), code: null };
}

export class ClusterClient {
  /** Where the next request starts: the manager that last answered. */
  private current = 0;

  constructor(
    readonly urls: string[],
    /** Sent on every request: a bearer token or the cluster secret. */
    readonly headers: Record<string, string> = {},
    private readonly policy: RetryPolicy = DEFAULT_RETRY,
  ) {
    if (urls.length === 0) throw new Error('no manager URL');
  }

  async request(method: Dispatcher.HttpMethod, path: string, req: ClientRequest): Promise<ClientResponse> {
    const answers = new Map<string, string>();
    const p = this.policy;
    let last: { status: number | null; code: string | null } = { status: null, code: null };
    let nextUrl: string | null = null;
    try {
      return await pRetry((attempt) => this.attempt(method, path, req, attempt, answers, nextUrl), {
        retries: p.attempts - 1,
        minTimeout: p.minDelayMs,
        maxTimeout: p.maxDelayMs,
        factor: 2,
        maxRetryTime: p.totalMs,
        onFailedAttempt: async ({ error, retriesConsumed, retriesLeft }) => {
          if (!(error instanceof Retryable)) return;
          last = { status: error.status, code: error.code };
          nextUrl = error.nextUrl;
          this.current = (this.current + 1) % this.urls.length;
          // p-retry's own backoff follows; wait the rest of what the manager asked for.
          const backoff = Math.min(p.maxDelayMs, p.minDelayMs * 2 ** retriesConsumed);
          const extra = Math.min(p.maxRetryAfterMs, error.retryAfterMs) - backoff;
          if (retriesLeft > 0 && extra > 0) await new Promise((r) => setTimeout(r, extra));
        },
      });
    } catch (err) {
      if (err instanceof ClusterRequestFailed) throw err;
      const seen = [...answers].map(([url, answer]) => `  ${url}: ${answer}`).join('\n');
      throw new ClusterRequestFailed(
        `${method} ${path}: no manager could serve it (${answers.size} tried):\n${seen}`,
        last.status,
        last.code,
      );
    }
  }

  private async attempt(
    method: Dispatcher.HttpMethod,
    path: string,
    req: ClientRequest,
    attempt: number,
    answers: Map<string, string>,
    startUrl: string | null,
  ): Promise<ClientResponse> {
    let url = new URL(path, startUrl ?? this.urls[this.current]);
    for (let hop = 0; hop <= MAX_REDIRECTS; hop++) {
      const here = url.origin;
      let res: Dispatcher.ResponseData;
      const gaveUp = new AbortController();
      const watch = this.policy.silentManager;
      const stopWatch = watch
        ? watchSilentManager(here, this.urls, this.headers, watch, (moved) => gaveUp.abort(moved))
        : () => {};
      try {
        res = await request(url, {
          method,
          headers: { ...this.headers, ...req.headers },
          body: req.body ? req.body() : null,
          headersTimeout: this.policy.headersTimeoutMs,
          bodyTimeout: this.policy.headersTimeoutMs,
          signal: gaveUp.signal,
        });
      } catch (err) {
        if (gaveUp.signal.aborted) {
          const { leaderUrl, reason } = gaveUp.signal.reason as LeaderMoved;
          answers.set(here, reason);
          throw new Retryable(`${here}: ${reason}`, 0, null, 'LeaderMoved', leaderUrl);
        }
        const code = errorCode(err);
        answers.set(here, `${code ?? 'error'}: ${(err as Error).message}`);
        if (code && RETRYABLE_CODES.has(code)) throw new Retryable((err as Error).message, 0, null, code);
        throw new AbortError(
          new ClusterRequestFailed(`${method} ${url}: ${(err as Error).message}`, null, null),
        );
      } finally {
        stopWatch();
      }
      if (res.statusCode === 307 || res.statusCode === 308) {
        const location = res.headers.location;
        await res.body.dump();
        answers.set(here, `${res.statusCode} to ${location ?? '(no location)'}`);
        if (typeof location !== 'string')
          throw new Retryable(`${url} redirected without a location`, 0, null, null);
        url = new URL(location, url);
        continue;
      }
      if (req.expect.includes(res.statusCode)) return { res, attempts: attempt, url: here };
      const { text, code } = await describeAnswer(res);
      answers.set(here, text);
      if (res.statusCode === 503 || res.statusCode === 502 || res.statusCode === 504) {
        throw new Retryable(text, retryAfterMs(res.headers['retry-after']), res.statusCode, code);
      }
      throw new AbortError(new ClusterRequestFailed(text, res.statusCode, code));
    }
    throw new Retryable(`more than ${MAX_REDIRECTS} redirects: is leadership changing?`, 0, null, null);
  }
}

/** The client of a client command: the managers of --url, the bearer token of --token. */
export function tokenClient(flags: { url?: string; token?: string }): ClusterClient {
  return new ClusterClient(managerUrls(flags.url), bearerHeaders(flags.token), CLIENT_RETRY);
}

/** The flags every client command takes: which managers, and the bearer token (bearerHeaders). */
export function withClientOptions(cmd: Command): Command {
  return cmd
    .option(
      '--url <urls>',
      'managers of the cluster, comma-separated; tried in turn when one is down [env IMGVAULT_URL; default http://127.0.0.1:7001,7002,7003]',
    )
    .option('--token <token>', 'bearer token, when the cluster requires one [env IMGVAULT_TOKEN]');
}

/** The flags every operator command takes: which managers, and the operator credential (secretHeaders). */
export function withOperatorOptions(cmd: Command): Command {
  return cmd
    .option(
      '--url <urls>',
      'managers, comma-separated [env IMGVAULT_URL; default http://127.0.0.1:7001,7002,7003]',
    )
    .option(
      '--secret-file <file>',
      'file holding the operator credential (credentials init: operator/operator.credential) or the single cluster secret [env IMGVAULT_CLUSTER_SECRET_FILE, or the secret in IMGVAULT_CLUSTER_SECRET; default ./data/credentials/operator/operator.credential, else ./data/cluster-secret]',
    );
}

/** An operator command's action: its error becomes one line naming the command, and exit status 1. */
export function runOperatorAction<A extends unknown[]>(name: string, body: (...args: A) => Promise<void>) {
  return async (...args: A) => {
    try {
      await body(...args);
    } catch (err) {
      console.error(`imgvault ${name}: ${err instanceof Error ? err.message : String(err)}`);
      process.exit(1);
    }
  };
}
