// A request waiting on a leader that stopped answering (a frozen VM, a SIGSTOP, a disk that hangs)
// would wait out the headers timeout, or the whole freeze, while the other managers elect a new
// leader within a second or two: `imgvault upload` stalled for all of a 20 s pause. The watch asks
// the other managers who leads. Once they name another manager, and the one the request waits on
// does not answer its own Raft view at all, the request is given up and sent to the new leader.
// Both conditions: a manager that answers is alive and will answer the request too (a slow leader
// under a large upload or a burst, a follower waiting on a read, a leader reached under another
// name than its members' table gives it).

import { type Dispatcher, request } from 'undici';
import { type RaftView, raftViewSchema } from '../protocol/raftView.ts';

export interface SilentManagerTiming {
  /** How long a request waits for its answer before the watch first asks. */
  firstCheckMs: number;
  /** Between two asks while the request still waits. */
  intervalMs: number;
  /** Bound on one manager's Raft view. */
  probeTimeoutMs: number;
}

export const SILENT_MANAGER: SilentManagerTiming = {
  firstCheckMs: 2_000,
  intervalMs: 1_000,
  probeTimeoutMs: 1_000,
};

/** Another manager leads: where to send the request now, and why it was given up. */
export interface LeaderMoved {
  leaderUrl: string;
  reason: string;
}

/** A manager's Raft view; `{ view: null }` when it answered without one (401, 404...); null when silent. */
async function askView(
  base: string,
  headers: Record<string, string>,
  timeoutMs: number,
): Promise<{ view: RaftView | null } | null> {
  let res: Dispatcher.ResponseData;
  try {
    res = await request(new URL('/v1/cluster/raft', base), {
      headers,
      headersTimeout: timeoutMs,
      bodyTimeout: timeoutMs,
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch {
    return null;
  }
  if (res.statusCode !== 200) {
    await res.body.dump().catch(() => {});
    return { view: null };
  }
  const parsed = raftViewSchema.safeParse(await res.body.json().catch(() => null));
  return { view: parsed.success ? parsed.data : null };
}

const originOf = (url: string): string | null => (URL.canParse(url) ? new URL(url).origin : null);

/**
 * One look: the leader the other managers name (the view of the highest term naming one), if it is
 * not `here` and `here` does not answer; else null.
 */
export async function leaderElsewhere(
  here: string,
  urls: string[],
  headers: Record<string, string>,
  probeTimeoutMs: number,
): Promise<LeaderMoved | null> {
  const others = [...new Set(urls.map(originOf))].filter((u): u is string => u !== null && u !== here);
  if (others.length === 0) return null;
  const [own, ...answers] = await Promise.all(
    [here, ...others].map((u) => askView(u, headers, probeTimeoutMs)),
  );
  let named: RaftView | null = null;
  for (const a of answers) {
    const v = a?.view;
    if (v?.leader?.url && (named === null || v.term > named.term)) named = v;
  }
  const leader = named?.leader;
  const leaderUrl = leader?.url ? originOf(leader.url) : null;
  if (!named || !leader || leaderUrl === null || leaderUrl === here) return null;
  if (own !== null) return null;
  return {
    leaderUrl,
    reason: `no answer while ${leader.id} (${leaderUrl}) leads in term ${named.term}`,
  };
}

/**
 * Watches while a request to `here` waits: calls `onMoved` once (see leaderElsewhere) and stops.
 * Returns the function that stops the watch, to call when the answer comes.
 */
export function watchSilentManager(
  here: string,
  urls: string[],
  headers: Record<string, string>,
  timing: SilentManagerTiming,
  onMoved: (moved: LeaderMoved) => void,
): () => void {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const look = async (): Promise<void> => {
    const moved = await leaderElsewhere(here, urls, headers, timing.probeTimeoutMs);
    if (stopped) return;
    if (moved) {
      stopped = true;
      onMoved(moved);
      return;
    }
    timer = setTimeout(look, timing.intervalMs);
  };
  timer = setTimeout(look, timing.firstCheckMs);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
