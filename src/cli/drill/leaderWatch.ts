// Samples the managers' Raft view every 50 ms through the drill, so the report can say how long
// the cluster had no leader and when a new leader first committed an entry of its own term.

import type { RaftView } from '../localManagers.ts';

export interface LeaderSample {
  /** ms since the drill's start. */
  at: number;
  /** The manager that answered as leader (the highest term, if two did), or null. */
  leader: { id: string; term: number; commit: number; lastIndex: number } | null;
}

export class LeaderWatch {
  readonly samples: LeaderSample[] = [];
  private running = false;
  private loop: Promise<void> | null = null;

  constructor(
    private readonly now: () => number,
    private readonly read: () => Promise<(RaftView | null)[]>,
  ) {}

  start(): void {
    this.running = true;
    this.loop = (async () => {
      while (this.running) {
        const views = await this.read();
        const leaders = views.filter((v): v is RaftView => v?.role === 'leader');
        leaders.sort((a, b) => b.term - a.term);
        const top = leaders[0];
        this.samples.push({
          at: this.now(),
          leader: top ? { id: top.id, term: top.term, commit: top.commit, lastIndex: top.lastIndex } : null,
        });
        await new Promise((r) => setTimeout(r, 50));
      }
    })();
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

/** Total time after `from` during which no manager answered as leader (between samples). */
export function noLeaderMs(samples: LeaderSample[], from: number): number {
  let total = 0;
  for (let i = 1; i < samples.length; i++) {
    const prev = samples[i - 1]!;
    const cur = samples[i]!;
    if (cur.at <= from) continue;
    // A leader lost between two samples is counted from the later one, except for the fault itself.
    if (prev.leader === null) total += cur.at - Math.max(prev.at, from);
    else if (cur.leader === null && prev.at < from) total += cur.at - from;
  }
  return Math.round(total);
}

/**
 * When, after `from`, a leader of a term above `termBefore` had committed the first entry of its
 * term: the first sample in which its commit index reached the last index it held when first seen
 * leading (that index is at least the empty entry it appends on election). Null if never seen.
 */
export function firstNewTermCommitAt(
  samples: LeaderSample[],
  from: number,
  termBefore: number,
): number | null {
  let firstLast: number | null = null;
  let term = 0;
  for (const s of samples) {
    if (s.at < from || !s.leader || s.leader.term <= termBefore) continue;
    if (s.leader.term !== term) {
      term = s.leader.term;
      firstLast = s.leader.lastIndex;
    }
    if (firstLast !== null && s.leader.commit >= firstLast) return s.at;
  }
  return null;
}
