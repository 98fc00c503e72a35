// How long a follower may go without hearing its leader before it stops counting it as alive.

/**
 * Four heartbeats, and at most half the shortest election timeout: a live leader is always heard
 * within it, and a dead one stops counting well before the followers' election starts.
 */
export function leaderQuietMs(raft: { tickMs: number; heartbeatTick: number; electionTick: number }): number {
  return Math.min(4 * raft.heartbeatTick, raft.electionTick / 2) * raft.tickMs;
}
