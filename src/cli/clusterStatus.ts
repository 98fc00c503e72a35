// What `imgvault status` knows about a cluster, gathered from every manager it can reach: each one's
// own Raft view (GET /v1/cluster/raft), and from the leader (else any manager) the node table and
// the object counters. A manager that does not answer is named, never fatal.

import { request } from 'undici';
import { type ManagerDiskView, parseRaftView, type RaftView } from '../protocol/raftView.ts';

/** Bound on one manager's answer: status must answer promptly even when a manager hangs. */
const PROBE_TIMEOUT_MS = 3_000;

interface NodeRow {
  id: string;
  url: string;
  zone: string;
  state: string;
  silenceMs: number | null;
  diskUsed: number;
  diskFree: number;
  stored: { objects: number; bytes: number };
}

interface StatsView {
  objects: number;
  bytes: number;
  observedByLeader?: boolean;
  underReplicated?: number | null;
  unavailable?: number | null;
  lost?: number | null;
  lostCounted?: boolean | null;
  repairing?: number;
  names?: NamesStatus;
}

/** Names (backup sets) and what storing their content once saves. */
export interface NamesStatus {
  count: number;
  bytes: number;
  storedBytes: number;
  savedBytes: number;
}

export interface ManagerStatus {
  id: string | null;
  url: string;
  reachable: boolean;
  /** Why it could not be read, when unreachable. */
  error: string | null;
  role: string | null;
  voter: boolean | null;
  term: number | null;
  leader: string | null;
  commit: number | null;
  applied: number | null;
  lastIndex: number | null;
  /** Entries the leader holds that this manager has not acknowledged (leader's view). */
  lag: number | null;
  /** Time since the leader last heard from it (leader's view). */
  lastContactMs: number | null;
  /**
   * Whether the leader counts it a member (null without a leader): a manager removed but still
   * running answers from an old --url entry as a follower.
   */
  member: boolean | null;
  /** How the leader replicates to it (leader's view): probe and snapshot mean not caught up. */
  progress: 'probe' | 'replicate' | 'snapshot' | null;
  /**
   * Its disk (src/manager/managerDisk.ts), null when it reports none: full while its reserve is
   * not in place or less than the reserve is free beside it, and it then takes no upload while it
   * leads.
   */
  disk: ManagerDiskView | null;
}

export interface WorkerStatus {
  id: string;
  url: string;
  zone: string;
  state: string;
  silenceMs: number | null;
  diskUsed: number;
  diskFree: number;
  objects: number;
  bytes: number;
}

export interface ClusterStatus {
  leader: { id: string; url: string | null; term: number } | null;
  managers: ManagerStatus[];
  unreachable: string[];
  workers: WorkerStatus[];
  /** Whose tables the workers and objects come from (the leader, when there is one). */
  observedFrom: string | null;
  objects: {
    count: number;
    bytes: number;
    underReplicated: number | null;
    unavailable: number | null;
    /** Objects with no copy left on any worker the record names (all up): docs/operations.md. */
    lost: number | null;
    /**
     * False while the leader has not yet looked at every object since it took over: `lost` is a
     * lower bound until then (null: not known, an older leader).
     */
    lostCounted: boolean | null;
    repairing: number;
    names?: NamesStatus;
  } | null;
  problems: string[];
  /** What needs attention soon but is no failure yet (a nearly full worker): healthy still. */
  warnings: string[];
  healthy: boolean;
}

export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return `${u === 0 ? v : v.toFixed(1)} ${units[u]}`;
}

async function getJson<T>(base: string, path: string, headers: Record<string, string>): Promise<T> {
  const res = await request(new URL(path, base), {
    headers,
    headersTimeout: PROBE_TIMEOUT_MS,
    bodyTimeout: PROBE_TIMEOUT_MS,
    signal: AbortSignal.timeout(PROBE_TIMEOUT_MS * 2),
  });
  if (res.statusCode !== 200) {
    const text = await res.body.text().catch(() => '');
    throw new Error(`${res.statusCode} ${text.slice(0, 200)}`);
  }
  return (await res.body.json()) as T;
}

function describe(err: unknown): string {
  const e = err as { code?: string; message?: string };
  return e.code ? `${e.code}: ${e.message}` : String(e.message ?? err);
}

/** Raft views of `urls` and of every member they name, each asked once. */
async function probeManagers(
  urls: string[],
  headers: Record<string, string>,
): Promise<Map<string, RaftView | Error>> {
  const seen = new Map<string, RaftView | Error>();
  let round = [...new Set(urls)];
  while (round.length > 0) {
    const answers = await Promise.all(
      round.map((u) =>
        getJson<unknown>(u, '/v1/cluster/raft', headers)
          .then(parseRaftView)
          .catch((err: unknown) => new Error(describe(err))),
      ),
    );
    round.forEach((u, i) => {
      seen.set(u, answers[i]!);
    });
    const named = answers.flatMap((a) => (a instanceof Error ? [] : Object.values(a.members)));
    round = [...new Set(named.map((u) => u.replace(/\/+$/, '')))].filter((u) => !seen.has(u));
  }
  return seen;
}

function managerRows(views: Map<string, RaftView | Error>, leader: RaftView | null): ManagerStatus[] {
  const byUrl = new Map<string, string>();
  for (const v of views.values()) {
    if (v instanceof Error) continue;
    for (const [id, url] of Object.entries(v.members)) byUrl.set(url.replace(/\/+$/, ''), id);
  }
  return [...views].map(([url, v]): ManagerStatus => {
    if (v instanceof Error) {
      return {
        id: byUrl.get(url) ?? null,
        url,
        reachable: false,
        error: v.message,
        role: null,
        voter: null,
        term: null,
        leader: null,
        commit: null,
        applied: null,
        lastIndex: null,
        lag: null,
        lastContactMs: null,
        member: null,
        progress: null,
        disk: null,
      };
    }
    const peer = leader?.peers?.[v.id];
    const isLeader = leader !== null && leader.id === v.id;
    return {
      id: v.id,
      url,
      reachable: true,
      error: null,
      role: v.role,
      voter: v.confState.voters.includes(v.id),
      term: v.term,
      leader: v.leader?.id ?? null,
      commit: v.commit,
      applied: v.applied,
      lastIndex: v.lastIndex,
      lag: isLeader ? 0 : peer && leader ? Math.max(0, leader.lastIndex - peer.match) : null,
      lastContactMs: isLeader ? null : (peer?.lastContactMs ?? null),
      member: leader ? Object.hasOwn(leader.members, v.id) : null,
      progress: isLeader ? null : (peer?.state ?? null),
      disk: v.disk ?? null,
    };
  });
}

/** The manager that leads in the highest term any reachable manager reports. */
function findLeader(views: Map<string, RaftView | Error>): { view: RaftView; url: string } | null {
  let best: { view: RaftView; url: string } | null = null;
  for (const [url, v] of views) {
    if (v instanceof Error || v.role !== 'leader') continue;
    if (!best || v.term > best.view.term) best = { view: v, url };
  }
  return best;
}

export async function gatherStatus(urls: string[], headers: Record<string, string>): Promise<ClusterStatus> {
  const views = await probeManagers(urls, headers);
  const leader = findLeader(views);
  const managers = managerRows(views, leader?.view ?? null).sort((a, b) =>
    (a.id ?? a.url).localeCompare(b.id ?? b.url),
  );
  const reachable = managers.filter((m) => m.reachable).map((m) => m.url);
  const sources = leader ? [leader.url, ...reachable.filter((u) => u !== leader.url)] : reachable;
  let workers: WorkerStatus[] = [];
  let objects: ClusterStatus['objects'] = null;
  let observedFrom: string | null = null;
  for (const source of sources) {
    try {
      const nodes = await getJson<{ nodes: NodeRow[] }>(source, '/v1/cluster/nodes', headers);
      const stats = await getJson<StatsView>(source, '/v1/cluster/stats', headers);
      workers = nodes.nodes.map((n) => ({
        id: n.id,
        url: n.url,
        zone: n.zone,
        state: n.state,
        silenceMs: n.silenceMs,
        diskUsed: n.diskUsed,
        diskFree: n.diskFree,
        objects: n.stored.objects,
        bytes: n.stored.bytes,
      }));
      objects = {
        count: stats.objects,
        bytes: stats.bytes,
        underReplicated: stats.underReplicated ?? null,
        unavailable: stats.unavailable ?? null,
        lost: stats.lost ?? null,
        lostCounted: stats.lostCounted ?? null,
        repairing: stats.repairing ?? 0,
        ...(stats.names ? { names: stats.names } : {}),
      };
      observedFrom = source;
      break;
    } catch {}
  }
  const status: ClusterStatus = {
    leader: leader ? { id: leader.view.id, url: leader.url, term: leader.view.term } : null,
    managers,
    unreachable: managers.filter((m) => !m.reachable).map((m) => m.url),
    workers,
    observedFrom,
    objects,
    problems: [],
    warnings: [],
    healthy: false,
  };
  status.problems = problemsOf(status);
  status.warnings = [...managerDiskWarnings(status), ...countingWarnings(status), ...roomWarnings(status)];
  status.healthy = status.problems.length === 0;
  return status;
}

function problemsOf(s: ClusterStatus): string[] {
  const problems: string[] = [];
  if (s.managers.every((m) => !m.reachable)) problems.push('no manager answered');
  else if (!s.leader) problems.push('no leader: an election is running, or no majority of managers is up');
  // A URL no reachable manager names as a member (an old --url entry) is listed, not a problem.
  for (const m of s.managers) {
    if (!m.reachable && m.id !== null) problems.push(`manager ${m.id} unreachable (${m.error})`);
  }
  problems.push(...followerProblems(s));
  for (const w of s.workers) {
    if (w.state !== 'up' && w.state !== 'drained') problems.push(`worker ${w.id} is ${w.state}`);
  }
  if (s.objects?.underReplicated) problems.push(`${s.objects.underReplicated} objects under-replicated`);
  if (s.objects?.unavailable) problems.push(`${s.objects.unavailable} objects unavailable`);
  if (s.objects?.lost)
    problems.push(
      `${s.objects.lost} objects lost: every worker their record names is up and holds no intact copy (reads answer 500 Lost)`,
    );
  problems.push(...roomProblems(s));
  const leader = s.managers.find((m) => m.id !== null && m.id === s.leader?.id);
  const leaderDisk = leader?.disk ? managerDiskFull(leader.disk) : null;
  if (leader && leaderDisk) {
    problems.push(
      `uploads are refused (507 InsufficientStorage): the leader ${leader.id}'s disk is full (${leaderDisk})`,
    );
  }
  return problems;
}

/** Why a manager's disk is full for it (managerDisk.ts), or null when it is not. */
function managerDiskFull(d: ManagerDiskView): string | null {
  if (!d.reserveInPlace) return 'its disk reserve is not in place';
  if (d.freeBytes !== null && d.freeBytes < d.reserveBytes) {
    return `${formatBytes(d.freeBytes)} free, less than its disk reserve beside it`;
  }
  return null;
}

/**
 * Managers whose disk is full: the reserve not in place (released to start, its Raft log and tables
 * could not open otherwise, or no room to make it), or less than the reserve free beside it. Such a
 * manager serves reads and deletes and takes no upload while it leads; it makes the reserve again
 * once the disk has room for it and as much again. Its next start on that disk has nothing left to
 * release.
 */
function managerDiskWarnings(s: ClusterStatus): string[] {
  return s.managers.flatMap((m) => {
    const d = m.disk;
    const full = m.reachable && d ? managerDiskFull(d) : null;
    if (!d || !full) return [];
    const needed = d.reserveInPlace ? d.reserveBytes : 2 * d.reserveBytes;
    return [
      `manager ${m.id ?? m.url}'s disk is full: ${full} (${formatBytes(d.reserveBytes)}); it takes no ` +
        `upload while it leads, until ${formatBytes(needed)} are free on that disk (docs/operations.md, "A full manager disk")`,
    ];
  });
}

/**
 * Members that answer but are not part of the quorum yet: one restarted a moment ago (it follows
 * no leader until the leader's first heartbeat), cut off from the leader, or still receiving the
 * log or a snapshot. Status said "healthy" then, and a rolling restart that went on to the next
 * manager on that word stopped a second member of three.
 */
function followerProblems(s: ClusterStatus): string[] {
  const leader = s.leader;
  if (!leader) return [];
  const problems: string[] = [];
  for (const m of s.managers) {
    if (!m.reachable || m.id === null || m.id === leader.id || m.member !== true) continue;
    if (m.leader !== leader.id) {
      problems.push(
        `manager ${m.id} does not follow the leader ${leader.id} (it ${m.leader === null ? 'knows no leader' : `follows ${m.leader}`}, term ${m.term}): just started, or cut off from the leader`,
      );
    } else if (m.progress === 'probe' || m.progress === 'snapshot') {
      problems.push(
        `manager ${m.id} is catching up with the leader (${m.progress === 'snapshot' ? 'receiving a snapshot' : 'its log is being matched'}, ${m.lag ?? '?'} entries behind)`,
      );
    }
  }
  return problems;
}

/** A worker with less free space than this share of its disk is nearly full. */
export const NEARLY_FULL_SHARE = 0.1;
/** A worker with room for fewer average images than this is nearly full, whatever its disk's size. */
export const NEARLY_FULL_IMAGES = 100;

/**
 * Workers nearly full, before they are full (a problem, roomProblems): free space under
 * NEARLY_FULL_SHARE of the disk, or room for fewer than NEARLY_FULL_IMAGES average images. Status
 * said "healthy" up to the moment a worker had less room than one image, and uploads then failed.
 * Only `up` workers, as for roomProblems.
 */
/** A new leader finds lost objects as its repair walk reaches them (docs/operations.md, "Lost"). */
function countingWarnings(s: ClusterStatus): string[] {
  if (s.objects?.lostCounted !== false) return [];
  return [
    'the lost count is still being established: the leader has not yet looked at every object since it took over (its repair walk reads about 1000 a pass)',
  ];
}

function roomWarnings(s: ClusterStatus): string[] {
  const average = averageImageBytes(s);
  const warnings: string[] = [];
  for (const w of s.workers) {
    if (w.state !== 'up' || w.diskFree < average) continue;
    const disk = w.diskUsed + w.diskFree;
    const share = disk > 0 ? w.diskFree / disk : 1;
    const images = average > 0 ? Math.floor(w.diskFree / average) : Number.POSITIVE_INFINITY;
    if (share >= NEARLY_FULL_SHARE && images >= NEARLY_FULL_IMAGES) continue;
    const room = Number.isFinite(images) ? `, room for about ${images} average images` : '';
    warnings.push(
      `worker ${w.id} is nearly full: ${formatBytes(w.diskFree)} free (${(share * 100).toFixed(1)}% of its disk${room})`,
    );
  }
  return warnings;
}

/**
 * Workers out of room, judged against the average image stored: one with less free space cannot
 * take a typical copy, and with fewer than two that can, every such upload is refused with 507
 * (status said "healthy" meanwhile). Only `up` workers: the others take no copies anyway, and a
 * down worker's figures are as old as its last heartbeat.
 */
function roomProblems(s: ClusterStatus): string[] {
  const average = averageImageBytes(s);
  if (average === 0) return [];
  const up = s.workers.filter((w) => w.state === 'up');
  const full = up.filter((w) => w.diskFree < average);
  const problems = full.map(
    (w) =>
      `worker ${w.id} is full: ${formatBytes(w.diskFree)} free, less than an average image (${formatBytes(average)})`,
  );
  if (full.length > 0 && up.length - full.length < 2) {
    problems.push(
      'uploads are refused (507 InsufficientStorage): fewer than two workers have room for an average image',
    );
  }
  return problems;
}

/** The average stored image's size, what a worker's room is measured in; 0 before any is stored. */
function averageImageBytes(s: ClusterStatus): number {
  return s.objects && s.objects.count > 0 ? Math.round(s.objects.bytes / s.objects.count) : 0;
}
