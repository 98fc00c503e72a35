import { Readable } from 'node:stream';
import pRetry, { AbortError } from 'p-retry';
import { Agent, request } from 'undici';
import { CLUSTER_SECRET_HEADER } from '../http/clusterAuth.ts';
import { internalConnect } from '../http/tls.ts';
import type { Logger } from '../logging.ts';
import { NDJSON_CONTENT_TYPE } from '../protocol/workerHeaders.ts';
import { HEARTBEAT_PATH, LOST_COPIES_PATH, REGISTER_PATH, WIPE_CHECK_PATH } from '../protocol/workerPaths.ts';
import {
  type DiskUsage,
  type InventoryLine,
  type RegisterAnswer,
  registerAnswerSchema,
  wipeCheckAnswerSchema,
} from '../protocol/workerSchemas.ts';

/**
 * The worker's side of the worker <-> manager protocol (docs/worker-protocol.md): registration
 * with the full inventory at start-up (to the leader), then heartbeats to every configured manager,
 * so a follower that becomes leader already knows which workers live (as HDFS DataNodes report to
 * the active and the standby NameNode). Requests that need the leader go to the known leader
 * first; a follower answers them 307 with the leader's URL in `Location`.
 */

/** Heartbeat loops at most: the configured managers and leaders learnt since. */
const MAX_BEAT_LOOPS = 16;

/**
 * Blob ids per lost-copies report (the leader accepts up to 1,000, MAX_BLOB_LIST_IDS). Small: the
 * leader asks this worker and commits for each id before it answers, within our request timeout.
 */
const LOST_REPORT_BATCH = 100;
/** Redirect hops followed for one request: follower -> leader is one; more means churn. */
const MAX_REDIRECTS = 3;
const MAX_BACKOFF_MS = 10_000;
/** Inventory lines are batched into chunks of about this size before they reach the socket. */
const NDJSON_CHUNK_BYTES = 64 * 1024;

export type InventoryEntry = InventoryLine;
export type WorkerUsage = DiskUsage;

export interface ManagerClientOptions {
  workerId: string;
  /** This worker's advertised URL. */
  url: string;
  zone: string;
  managers: string[];
  clusterSecret: string;
  /** Start-up registration attempts, each trying every manager, before `register()` throws. */
  registerAttempts: number;
  /** Delay before the first registration retry; doubles each retry, capped at 10 s. */
  registerBackoffMs: number;
  heartbeatIntervalMs: number;
  /** Bound on one manager request: connect, and silence while sending or awaiting the answer. */
  requestTimeoutMs: number;
  /** Streams every blob the worker holds; called again for each registration try. */
  inventory: () => AsyncIterable<InventoryEntry>;
  usage: () => Promise<WorkerUsage>;
  logger: Logger;
  /**
   * Called once when a manager answers that this worker was removed from the cluster for good
   * (`imgvault worker remove`): no registration will ever be taken again, so the worker stops.
   */
  onRemoved?: (err: WorkerRemovedError) => void;
}

export type { RegisterAnswer };

/** Registration (or a wipe check) gave up: no manager answered within the configured attempts. */
export class NoManagerAnsweredError extends Error {
  override readonly name = 'NoManagerAnsweredError';
  readonly code = 'NoManagerAnswered';
  constructor(
    readonly attempts: number,
    /** Last failure seen at each manager URL. */
    readonly lastFailures: ReadonlyMap<string, string>,
    what = 'the registration',
  ) {
    const detail = [...lastFailures].map(([url, why]) => `${url} (${why})`).join(', ');
    super(`no manager answered ${what} after ${attempts} attempt(s): ${detail}`);
  }
}

/** A manager refused this worker's id for good: it was removed from the cluster. Never retried. */
export class WorkerRemovedError extends Error {
  override readonly name = 'WorkerRemovedError';
  readonly code = 'WorkerRemoved';
}

/** One manager request that did not end in 2xx; `url` is the URL that failed. */
class ManagerRequestError extends Error {
  override readonly name = 'ManagerRequestError';
  constructor(
    readonly url: string,
    message: string,
    readonly status?: number,
    readonly errorCode?: string,
  ) {
    super(message);
  }
}

/** A registration round in which every manager failed; carries each one's reason. */
class RoundFailedError extends Error {
  override readonly name = 'RoundFailedError';
  constructor(readonly failures: Map<string, string>) {
    super([...failures].map(([u, w]) => `${u}: ${w}`).join('; '));
  }
}

interface BeatLoop {
  base: string;
  timer?: NodeJS.Timeout;
  inFlight?: Promise<void>;
  /** When this manager stopped accepting beats; undefined while it accepts them. */
  failingSince?: number;
}

interface ManagerAnswer {
  status: number;
  json: unknown;
  /** The base URL of the manager that answered (the leader, after redirects). */
  managerBase: string;
}

/** Where a manager redirected us: the base is the Location minus the path we asked for. */
function baseOf(location: URL, requestPath: string): string {
  const href = `${location.origin}${location.pathname}`;
  return href.endsWith(requestPath) ? href.slice(0, -requestPath.length) : location.origin;
}

function describe(err: unknown): string {
  if (err instanceof ManagerRequestError) return err.message;
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e.cause?.code ?? e.code;
  const message = e.cause?.message ?? e.message ?? String(err);
  return code && !message.includes(code) ? `${code}: ${message}` : message;
}

async function* ndjsonChunks(
  header: Record<string, unknown>,
  entries: AsyncIterable<InventoryEntry>,
  onProgress: () => void,
): AsyncGenerator<Buffer> {
  let pending = `${JSON.stringify(header)}\n`;
  for await (const e of entries) {
    pending += `${JSON.stringify({ id: e.id, size: e.size, sha256: e.sha256 })}\n`;
    if (pending.length >= NDJSON_CHUNK_BYTES) {
      yield Buffer.from(pending);
      pending = '';
      onProgress();
    }
  }
  if (pending.length > 0) yield Buffer.from(pending);
  onProgress();
}

export class ManagerClient {
  private readonly opts: ManagerClientOptions;
  private readonly log: Logger;
  private readonly agent: Agent;
  /** Base URL of the manager believed to lead; tried first by every request. */
  private leader: string;
  private intervalMs: number;
  private registered = false;
  private stopped = false;
  private removed: WorkerRemovedError | undefined;
  /** One heartbeat loop per manager, each on its own timer: a slow manager delays no other. */
  private beats: BeatLoop[] = [];
  /** The registration round in progress after a leader forgot this worker, shared by every loop. */
  private reregistering: Promise<void> | undefined;
  private usageCache: { at: number; value: Promise<WorkerUsage> } | undefined;
  private readonly stopController = new AbortController();

  constructor(opts: ManagerClientOptions) {
    if (opts.managers.length === 0) throw new Error('ManagerClient needs at least one manager URL');
    this.opts = opts;
    this.log = opts.logger;
    this.leader = opts.managers[0]!;
    this.intervalMs = opts.heartbeatIntervalMs;
    this.agent = new Agent({
      connect: internalConnect({ timeout: opts.requestTimeoutMs }),
      keepAliveTimeout: 10_000,
    });
  }

  get leaderUrl(): string {
    return this.leader;
  }

  get heartbeatIntervalMs(): number {
    return this.intervalMs;
  }

  /**
   * Registers with the inventory, retrying with backoff up to `registerAttempts` times; each
   * attempt tries the known leader first, then every other manager. Throws NoManagerAnsweredError
   * when all attempts fail (the caller exits: a worker no manager knows must not sit idle).
   */
  async register(): Promise<RegisterAnswer> {
    return this.withRetries('the registration', 'worker.register', () => this.registerRound());
  }

  /**
   * Asks the leader which of `ids` a `--rejoin wipe` must keep because no other copy can be read
   * right now, with the retries of registration. Throws NoManagerAnsweredError when no manager
   * answers: then nothing may be deleted.
   */
  async wipeCheck(ids: string[]): Promise<Set<string>> {
    const body = JSON.stringify({ id: this.opts.workerId, blobs: ids });
    return this.withRetries('the wipe check', 'worker.wipe_check', async () => {
      const answer = await this.jsonRound(WIPE_CHECK_PATH, body);
      const parsed = wipeCheckAnswerSchema.safeParse(answer.json);
      if (!parsed.success) {
        throw new RoundFailedError(new Map([[answer.managerBase, 'answer is not { keep: [...] }']]));
      }
      return new Set(parsed.data.keep);
    });
  }

  /**
   * Tells the leader that these blobs failed their read-back and were removed here (the
   * scrubber), so their records stop counting this copy and repair makes new ones. One try at
   * every manager, leader first; throws if none took it (the caller keeps the ids for later).
   */
  async reportLostCopies(ids: string[]): Promise<void> {
    for (let i = 0; i < ids.length; i += LOST_REPORT_BATCH) {
      const blobs = ids.slice(i, i + LOST_REPORT_BATCH);
      await this.jsonRound(LOST_COPIES_PATH, JSON.stringify({ id: this.opts.workerId, blobs }));
    }
  }

  /**
   * One try of a JSON POST at every manager, leader first, until one answers 2xx (it becomes the
   * known leader); throws RoundFailedError with each manager's reason when none does.
   */
  private async jsonRound(path: string, body: string): Promise<ManagerAnswer> {
    const failures = new Map<string, string>();
    for (const base of this.candidates()) {
      if (this.stopped) throw new AbortError('manager client stopped');
      try {
        const answer = await this.post(
          base,
          path,
          () => body,
          'application/json',
          this.opts.requestTimeoutMs,
        );
        assertOk(answer, path);
        this.adoptLeader(answer.managerBase);
        return answer;
      } catch (err) {
        if (this.stopped) throw new AbortError('manager client stopped');
        failures.set(base, describe(err));
      }
    }
    throw new RoundFailedError(failures);
  }

  /**
   * Runs `round` (one try at every manager, leader first) up to `registerAttempts` times with
   * backoff; throws NoManagerAnsweredError naming each manager's last failure when all fail.
   * Logs `<event>_attempt_failed` per failed attempt and `<event>_gave_up` at the end.
   */
  private async withRetries<T>(what: string, event: string, round: () => Promise<T>): Promise<T> {
    const lastFailures = new Map<string, string>(this.opts.managers.map((m) => [m, 'not tried']));
    try {
      return await pRetry(
        async () => {
          if (this.stopped) throw new AbortError('manager client stopped');
          try {
            return await round();
          } catch (err) {
            if (err instanceof WorkerRemovedError) throw new AbortError(err);
            if (err instanceof RoundFailedError) for (const [u, w] of err.failures) lastFailures.set(u, w);
            throw err;
          }
        },
        {
          retries: this.opts.registerAttempts - 1,
          minTimeout: this.opts.registerBackoffMs,
          maxTimeout: MAX_BACKOFF_MS,
          factor: 2,
          signal: this.stopController.signal,
          onFailedAttempt: ({ error, attemptNumber, retriesLeft }) => {
            this.log.warn(
              {
                event: `${event}_attempt_failed`,
                attempt: attemptNumber,
                retriesLeft,
                err: error.message,
              },
              `${what}: attempt failed at every manager`,
            );
          },
        },
      );
    } catch (err) {
      if (this.stopped || err instanceof WorkerRemovedError) throw err;
      const gaveUp = new NoManagerAnsweredError(this.opts.registerAttempts, lastFailures, what);
      this.log.error({ event: `${event}_gave_up`, err: gaveUp.message }, `${what} gave up`);
      throw gaveUp;
    }
  }

  /**
   * Starts one heartbeat loop per manager. Beats to one manager never overlap (the next is
   * scheduled when one ends), and each loop has its own timer and timeout, so a slow or dead
   * manager never delays the beats to the others.
   */
  startHeartbeats(): void {
    if (this.stopped || this.beats.length > 0) return;
    this.beats = this.opts.managers.map((base) => ({ base }));
    for (const loop of this.beats) this.schedule(loop, this.intervalMs);
  }

  /** Stops heartbeats and any registration in progress; resolves once nothing is in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const loop of this.beats) clearTimeout(loop.timer);
    this.stopController.abort(new Error('manager client stopped'));
    await Promise.all(this.beats.map((loop) => loop.inFlight?.catch(() => {})));
    await this.reregistering?.catch(() => {});
    await this.agent.close().catch(() => {});
  }

  private schedule(loop: BeatLoop, delayMs: number): void {
    if (this.stopped) return;
    loop.timer = setTimeout(() => {
      loop.timer = undefined;
      const started = performance.now();
      loop.inFlight = this.tick(loop).finally(() => {
        loop.inFlight = undefined;
        this.schedule(loop, Math.max(0, this.intervalMs - (performance.now() - started)));
      });
    }, delayMs);
  }

  /** One heartbeat to this loop's manager; or, while a leader has lost track of us, registration. */
  private async tick(loop: BeatLoop): Promise<void> {
    try {
      if (this.registered) await this.beat(loop.base);
      else await this.reregister();
      if (loop.failingSince !== undefined) {
        this.log.info(
          { event: 'worker.heartbeat_recovered', manager: loop.base, downMs: Date.now() - loop.failingSince },
          'manager reachable again',
        );
        loop.failingSince = undefined;
      }
    } catch (err) {
      if (this.stopped) return;
      // Warn once per outage of this manager; the rest of the streak goes to debug.
      const first = loop.failingSince === undefined;
      loop.failingSince ??= Date.now();
      this.log[first ? 'warn' : 'debug'](
        {
          event: 'worker.heartbeat_failed',
          manager: loop.base,
          registered: this.registered,
          err: describe(err),
        },
        'a manager did not accept the heartbeat',
      );
    }
  }

  /** Known leader first, then the others in configured order. */
  private candidates(): string[] {
    return [this.leader, ...this.opts.managers.filter((m) => m !== this.leader)];
  }

  /** Usage figures, read once for the beats of one period to every manager. */
  private currentUsage(): Promise<WorkerUsage> {
    const now = performance.now();
    if (!this.usageCache || now - this.usageCache.at > this.intervalMs / 2) {
      const value = this.opts.usage();
      value.catch(() => {
        if (this.usageCache?.value === value) this.usageCache = undefined;
      });
      this.usageCache = { at: now, value };
    }
    return this.usageCache.value;
  }

  /**
   * One heartbeat to `base`. Redirects are not followed: every manager takes heartbeats. A manager
   * that says it leads becomes the known leader. Only a leader answers UnknownWorker (a follower's
   * table may lag a registration), and that starts one registration round.
   */
  private async beat(base: string): Promise<void> {
    const usage = await this.currentUsage();
    const body = JSON.stringify({ id: this.opts.workerId, ...usage });
    const timeoutMs = Math.min(this.opts.requestTimeoutMs, Math.max(1000, 2 * this.intervalMs));
    const answer = await this.post(base, HEARTBEAT_PATH, () => body, 'application/json', timeoutMs, 0);
    this.refuseIfRemoved(answer);
    if (answer.status === 404 && errorCodeOf(answer.json) === 'UnknownWorker') {
      this.log.warn(
        { event: 'worker.unknown_to_manager', manager: base },
        'the leader does not know this worker; registering again',
      );
      this.adoptLeader(base);
      this.registered = false;
      await this.reregister();
      return;
    }
    assertOk(answer, HEARTBEAT_PATH);
    const said = answer.json as { leader?: unknown; leaderUrl?: unknown; managers?: unknown } | null;
    if (said?.leader === true) this.adoptLeader(base);
    // A leader missing from --managers (one added after this worker started) hears us too.
    else if (typeof said?.leaderUrl === 'string' && URL.canParse(said.leaderUrl))
      this.beatAlso(said.leaderUrl);
    // And so does every other member the managers name, before it leads: a leader elected with
    // no worker heard refuses uploads until the workers find it.
    if (Array.isArray(said?.managers)) {
      for (const url of said.managers) if (typeof url === 'string' && URL.canParse(url)) this.beatAlso(url);
    }
    this.adoptInterval(answer.json);
  }

  /**
   * Adds a heartbeat loop for a manager this worker was not configured with, once a manager names
   * it as the leader: only the leader acts on liveness, and without our beats it would mark this
   * worker down. Bounded: a cluster has a handful of managers.
   */
  private beatAlso(base: string): void {
    const url = base.replace(/\/+$/, '');
    if (this.stopped || this.beats.length === 0 || this.beats.some((loop) => loop.base === url)) return;
    if (this.beats.length >= MAX_BEAT_LOOPS) return;
    this.log.info(
      { event: 'worker.beating_new_manager', manager: url },
      'heartbeating a manager not in --managers',
    );
    const loop: BeatLoop = { base: url };
    this.beats.push(loop);
    this.schedule(loop, 0);
  }

  /** One registration round, shared by every heartbeat loop that finds this worker unregistered. */
  private reregister(): Promise<void> {
    this.reregistering ??= this.registerRound()
      .then(() => {
        this.log.info({ event: 'worker.reregistered', leader: this.leader }, 're-registered with the leader');
      })
      .finally(() => {
        this.reregistering = undefined;
      });
    return this.reregistering;
  }

  /** One registration try at every manager (leader first); throws RoundFailedError if all fail. */
  private async registerRound(): Promise<RegisterAnswer> {
    const failures = new Map<string, string>();
    for (const base of this.candidates()) {
      if (this.stopped) throw new AbortError('manager client stopped');
      try {
        const usage = await this.opts.usage();
        const header = {
          id: this.opts.workerId,
          url: this.opts.url,
          zone: this.opts.zone,
          ...usage,
        };
        const answer = await this.post(
          base,
          REGISTER_PATH,
          (onProgress) => Readable.from(ndjsonChunks(header, this.opts.inventory(), onProgress)),
          NDJSON_CONTENT_TYPE,
          this.opts.requestTimeoutMs,
        );
        this.refuseIfRemoved(answer);
        assertOk(answer, REGISTER_PATH);
        const parsed = registerAnswerSchema.safeParse(answer.json ?? {});
        const result: RegisterAnswer = parsed.success ? parsed.data : {};
        this.adoptLeader(answer.managerBase);
        this.adoptInterval(result);
        this.registered = true;
        this.log.info(
          { event: 'worker.registered', leader: this.leader, leaderId: result.leaderId, ...usage },
          'registered with the leader',
        );
        return result;
      } catch (err) {
        if (this.stopped) throw new AbortError('manager client stopped');
        // Every manager applies the same table: the others would only say the same.
        if (err instanceof WorkerRemovedError) throw err;
        failures.set(base, describe(err));
      }
    }
    throw new RoundFailedError(failures);
  }

  /** Throws WorkerRemovedError on a manager's WorkerRemoved answer, telling `onRemoved` the first time. */
  private refuseIfRemoved(answer: ManagerAnswer): void {
    if (errorCodeOf(answer.json) !== 'WorkerRemoved') return;
    if (this.removed === undefined) {
      const said = (answer.json as { error?: { message?: unknown } }).error?.message;
      this.removed = new WorkerRemovedError(
        typeof said === 'string' ? said : `worker ${this.opts.workerId} was removed from the cluster`,
      );
      this.log.error(
        { event: 'worker.removed', manager: answer.managerBase, err: this.removed.message },
        'this worker was removed from the cluster',
      );
      this.opts.onRemoved?.(this.removed);
    }
    throw this.removed;
  }

  private adoptLeader(base: string): void {
    this.beatAlso(base);
    if (base === this.leader) return;
    this.log.info({ event: 'worker.leader_changed', from: this.leader, to: base }, 'following a new leader');
    this.leader = base;
  }

  private adoptInterval(json: unknown): void {
    const ms = (json as { heartbeatIntervalMs?: unknown } | null)?.heartbeatIntervalMs;
    if (typeof ms === 'number' && Number.isInteger(ms) && ms >= 50 && ms <= 60_000) this.intervalMs = ms;
  }

  /**
   * POSTs to `base + path`, following up to `maxRedirects` 307/308 answers (the body is rebuilt for
   * each hop); with 0, a redirect is returned as the answer. A watchdog aborts the request after `timeoutMs` without progress: no bytes sent and
   * no answer, so a manager that stops reading cannot hang the worker.
   */
  private async post(
    base: string,
    path: string,
    makeBody: (onProgress: () => void) => string | Readable,
    contentType: string,
    timeoutMs: number,
    maxRedirects = MAX_REDIRECTS,
  ): Promise<ManagerAnswer> {
    let url = new URL(base + path);
    let managerBase = base;
    for (let hop = 0; ; hop++) {
      const watchdog = new AbortController();
      let lastProgress = performance.now();
      const onProgress = () => {
        lastProgress = performance.now();
      };
      const check = setInterval(
        () => {
          if (performance.now() - lastProgress > timeoutMs) {
            watchdog.abort(new ManagerRequestError(url.href, `no progress for ${timeoutMs} ms`));
          }
        },
        Math.max(50, Math.min(1000, timeoutMs / 4)),
      );
      try {
        const res = await request(url, {
          method: 'POST',
          dispatcher: this.agent,
          headers: { [CLUSTER_SECRET_HEADER]: this.opts.clusterSecret, 'content-type': contentType },
          body: makeBody(onProgress),
          signal: AbortSignal.any([watchdog.signal, this.stopController.signal]),
          headersTimeout: timeoutMs,
          bodyTimeout: timeoutMs,
        });
        onProgress();
        if ((res.statusCode === 307 || res.statusCode === 308) && maxRedirects > 0) {
          await res.body.dump();
          const location = res.headers.location;
          if (typeof location !== 'string' || location.length === 0) {
            throw new ManagerRequestError(
              url.href,
              `${res.statusCode} without a Location header`,
              res.statusCode,
            );
          }
          if (hop >= maxRedirects) {
            throw new ManagerRequestError(url.href, `more than ${maxRedirects} redirects`, res.statusCode);
          }
          url = new URL(location, url);
          managerBase = baseOf(url, path);
          continue;
        }
        const text = await res.body.text();
        let json: unknown;
        try {
          json = text.length > 0 ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        return { status: res.statusCode, json, managerBase };
      } catch (err) {
        if (err instanceof ManagerRequestError) throw err;
        const reason = watchdog.signal.aborted ? (watchdog.signal.reason as Error).message : describe(err);
        throw new ManagerRequestError(url.href, reason);
      } finally {
        clearInterval(check);
      }
    }
  }
}

function errorCodeOf(json: unknown): string | undefined {
  const code = (json as { error?: { code?: unknown } } | null)?.error?.code;
  return typeof code === 'string' ? code : undefined;
}

function assertOk(answer: ManagerAnswer, path: string): void {
  if (answer.status >= 200 && answer.status < 300) return;
  const code = errorCodeOf(answer.json);
  const message = (answer.json as { error?: { message?: unknown } } | null)?.error?.message;
  const hint =
    answer.status === 503
      ? 'no leader yet'
      : answer.status === 401
        ? 'cluster secret refused'
        : typeof message === 'string'
          ? message
          : 'unexpected answer';
  throw new ManagerRequestError(
    answer.managerBase + path,
    `HTTP ${answer.status}${code ? ` ${code}` : ''}: ${hint}`,
    answer.status,
    code,
  );
}
