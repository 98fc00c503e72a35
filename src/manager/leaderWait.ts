// A follower sends writes to the leader (a 307, or the S3 endpoint's forward). Right after the
// leader dies, the follower still names it for up to an election timeout, until it notices: a
// client it redirects there meets a refused connection, though a live manager answered it. So a
// request that needs the leader, while the leader is not known to be alive (this node, or one heard
// from within a few heartbeats), waits, its body unread so TCP holds the client back, until a live
// leader is known, then goes there or is served here. Bounded in time and in number: past either
// bound it is answered 503 with Retry-After, as the upload admission does (uploadAdmission.ts).

import { Counter, Gauge, type Registry } from 'prom-client';

/** The leader known and alive: this node, or another heard from lately. */
export type LiveLeader = { self: true } | { self: false; id: string; url: string };

export interface LeaderWaitLimits {
  /** How long a request waits for a live leader before its 503; 0 answers at once. */
  waitMs: number;
  /** Requests waiting at once; past it a request is answered 503 at once. */
  maxWaiting: number;
}

export type LeaderWaitOutcome =
  | { ok: true; leader: LiveLeader }
  | { ok: false; reason: 'timeout' | 'full' | 'gone' | 'stopping'; message: string };

/** How often waiting requests look at the leader again: a fraction of a heartbeat. */
const POLL_MS = 20;
/** How often a forward looks whether its leader was replaced: a fraction of an election. */
const REPLACED_POLL_MS = 100;

interface Waiter {
  deadline: number;
  settle: (outcome: LeaderWaitOutcome) => void;
}

/**
 * How a wait ended: a live leader came, the wait ran out, the queue was full, the client hung up,
 * or the manager is stopping (docs/metrics.md).
 */
type WaitEnd = 'leader' | 'timeout' | 'full' | 'gone' | 'stopping';

const GONE: LeaderWaitOutcome = { ok: false, reason: 'gone', message: 'the client closed the connection' };
const STOPPING: LeaderWaitOutcome = {
  ok: false,
  reason: 'stopping',
  message: 'this manager is stopping and no leader is known to be alive; retry shortly',
};

export class LeaderWait {
  private readonly waiters = new Set<Waiter>();
  private poller: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly ends: Counter<'outcome'> | null = null;

  constructor(
    /** The leader as this node sees it now, or null while none is known and alive. */
    readonly liveLeader: () => LiveLeader | null,
    readonly limits: LeaderWaitLimits,
    metrics?: Registry,
    /**
     * Whether this node is in the cluster's configuration. A removed member that still runs keeps
     * naming a leader that no longer talks to it: it answers as it did before the wait existed
     * (a 307 to that leader, which then serves the client) rather than hold every request.
     */
    private readonly isMember: () => boolean = () => true,
  ) {
    if (!metrics) return;
    this.ends = new Counter({
      name: 'imgvault_leader_waits_total',
      help: 'Requests that needed the leader while no live leader was known, by how their wait ended',
      labelNames: ['outcome'],
      registers: [metrics],
    });
    const waiters = this.waiters;
    new Gauge({
      name: 'imgvault_leader_waiting',
      help: 'Requests held now until a live leader is known',
      registers: [metrics],
      collect() {
        this.set(waiters.size);
      },
    });
  }

  /** Whether requests here wait for a live leader at all (not on a removed member). */
  holds(): boolean {
    return this.isMember();
  }

  /** Requests waiting now (tests and metrics read it). */
  waiting(): number {
    return this.waiters.size;
  }

  /** The moment a wait starting now gives up (performance.now() time): passes of one request share it. */
  deadlineFromNow(): number {
    return performance.now() + this.limits.waitMs;
  }

  /**
   * A live leader now, or once one is, before `deadline`; refused at once when the queue is full.
   * `gone` (the client hung up) frees the place at once: an abandoned request holds no slot.
   */
  until(deadline: number, gone?: AbortSignal): Promise<LeaderWaitOutcome> {
    const now = this.liveLeader();
    if (now !== null) return Promise.resolve({ ok: true, leader: now });
    if (gone?.aborted) return Promise.resolve(GONE);
    if (this.closed) return Promise.resolve(STOPPING);
    if (performance.now() >= deadline) return Promise.resolve(this.timedOut());
    if (this.waiters.size >= this.limits.maxWaiting) {
      this.ends?.inc({ outcome: 'full' satisfies WaitEnd });
      return Promise.resolve({
        ok: false,
        reason: 'full',
        message: `no leader is known to be alive (an election may be under way) and ${this.waiters.size} requests already wait for one; retry shortly`,
      });
    }
    return new Promise((resolve) => {
      const waiter: Waiter = {
        deadline,
        settle: (outcome) => {
          if (!this.waiters.delete(waiter)) return;
          gone?.removeEventListener('abort', hungUp);
          const end: WaitEnd = outcome.ok ? 'leader' : outcome.reason;
          this.ends?.inc({ outcome: end });
          resolve(outcome);
        },
      };
      const hungUp = () => waiter.settle(GONE);
      gone?.addEventListener('abort', hungUp, { once: true });
      this.waiters.add(waiter);
      if (this.poller === null) {
        this.poller = setInterval(() => this.look(), POLL_MS);
        // Held requests keep their own sockets open; the poller alone must not hold a process up.
        this.poller.unref();
      }
    });
  }

  /**
   * Aborted once a live leader other than `id` is known (this node, or another heard from lately):
   * a request forwarded to a leader that froze (SIGSTOP, a stalled VM) would otherwise wait out its
   * whole bound, though the others elected a new leader within an election timeout. Silence alone
   * aborts nothing: a busy leader's heartbeats can come late. Call `stop` once the answer came.
   */
  replaced(id: string): { signal: AbortSignal; stop: () => void } {
    const aborter = new AbortController();
    const timer = setInterval(() => {
      const now = this.liveLeader();
      if (now === null || (!now.self && now.id === id)) return;
      clearInterval(timer);
      aborter.abort();
    }, REPLACED_POLL_MS);
    timer.unref();
    return { signal: aborter.signal, stop: () => clearInterval(timer) };
  }

  /** The manager is stopping: every held request is answered now, and later ones at once. */
  close(): void {
    this.closed = true;
    for (const waiter of [...this.waiters]) waiter.settle(STOPPING);
    this.stopPolling();
  }

  private look(): void {
    const leader = this.liveLeader();
    const now = performance.now();
    for (const waiter of [...this.waiters]) {
      if (leader !== null) waiter.settle({ ok: true, leader });
      else if (now >= waiter.deadline) waiter.settle(this.timedOut());
    }
    if (this.waiters.size === 0) this.stopPolling();
  }

  private stopPolling(): void {
    if (this.poller === null) return;
    clearInterval(this.poller);
    this.poller = null;
  }

  private timedOut(): LeaderWaitOutcome {
    return {
      ok: false,
      reason: 'timeout',
      message: `no leader is known to be alive after waiting ${this.limits.waitMs} ms (an election may be under way); retry shortly`,
    };
  }
}

/** What liveLeaderOf reads of the Raft node (RaftNode provides it). */
export interface LeaderView {
  isLeader(): boolean;
  leaderInfo(): { id: string; url: string | null } | null;
  leaderSilenceMs(): number | null;
}

/**
 * A leader is alive when heard from within `quietMs`: a few heartbeat intervals, well under the
 * election timeout, so a dead one stops being named within a fraction of the election.
 */
export function liveLeaderOf(raft: LeaderView, quietMs: number): LiveLeader | null {
  if (raft.isLeader()) return { self: true };
  const leader = raft.leaderInfo();
  const silence = raft.leaderSilenceMs();
  if (!leader?.url || silence === null || silence > quietMs) return null;
  return { self: false, id: leader.id, url: leader.url };
}
