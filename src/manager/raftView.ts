// A manager's `GET /v1/cluster/raft` answer as its callers read it: other managers (the start-up
// guard), the launcher and the tools. Here, below the CLI, so a manager needs nothing from cli/.

export interface RaftView {
  id: string;
  role: string;
  term: number;
  leader: { id: string; url: string | null } | null;
  commit: number;
  applied: number;
  firstIndex: number;
  lastIndex: number;
  snapshotIndex: number;
  confState: { voters: string[]; learners: string[] };
  /** On the leader: each peer's progress. */
  peers?: Record<string, { match: number; next: number; state: string }>;
}

/** `headers`: a client token, or the cluster secret, when the manager requires one. */
export async function fetchRaftView(
  url: string,
  timeoutMs = 1_000,
  headers: Record<string, string> = {},
): Promise<RaftView | null> {
  try {
    const res = await fetch(`${url}/v1/cluster/raft`, { headers, signal: AbortSignal.timeout(timeoutMs) });
    if (!res.ok) return null;
    return (await res.json()) as RaftView;
  } catch {
    return null;
  }
}
