// A manager's `GET /v1/cluster/raft` answer, defined once: the manager builds it (manager/raftView.ts)
// and every reader parses it with this schema (the start-up guard of other managers, the launcher,
// the drill, `imgvault status` and the operator commands), so the two ends cannot drift apart.

import { z } from 'zod';

const index = z.number().int().nonnegative();

/** The leader's view of one member's replication (Raft progress), with when it last heard from it. */
export const raftPeerViewSchema = z.object({
  match: index,
  next: index,
  state: z.enum(['probe', 'replicate', 'snapshot']),
  isLearner: z.boolean(),
  /** Milliseconds since the leader last heard from this member; 0 for itself, null if never. */
  lastContactMs: z.number().nonnegative().nullable(),
});

export const managerDiskViewSchema = z.object({
  reserveInPlace: z.boolean(),
  reserveBytes: index,
  /** At the manager's last look (about every second); null before its first. */
  freeBytes: index.nullable(),
});

export const raftViewSchema = z.object({
  id: z.string(),
  role: z.enum(['follower', 'preCandidate', 'candidate', 'leader']),
  term: index,
  leader: z.object({ id: z.string(), url: z.string().nullable() }).nullable(),
  commit: index,
  applied: index,
  firstIndex: index,
  lastIndex: index,
  snapshotIndex: index,
  confState: z.object({ voters: z.array(z.string()), learners: z.array(z.string()) }),
  /** Member id -> URL, as this manager has applied the membership. */
  members: z.record(z.string(), z.string()),
  /** Only on the leader: each member's progress, the leader included. */
  peers: z.record(z.string(), raftPeerViewSchema).optional(),
  /**
   * This manager's disk (src/manager/managerDisk.ts): full while its reserve is not in place
   * (released to start on a full disk, or no room to make it) or less than the reserve is free
   * beside it; then it takes no upload while it leads. Absent from a manager that keeps no reserve
   * (a founder waiting for its peers, an older version).
   */
  disk: managerDiskViewSchema.optional(),
});

export type RaftPeerView = z.infer<typeof raftPeerViewSchema>;
export type ManagerDiskView = z.infer<typeof managerDiskViewSchema>;
export type RaftView = z.infer<typeof raftViewSchema>;

/** `body` as a RaftView; throws an Error naming what does not fit. */
export function parseRaftView(body: unknown): RaftView {
  const parsed = raftViewSchema.safeParse(body);
  if (!parsed.success) throw new Error(`not a raft view: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}
