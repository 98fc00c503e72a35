// Checks a manager makes before it joins in any Raft traffic, so that a misconfigured start ends
// with one plain message naming its cause instead of a consequence of it.
//
// A founding manager that finds its Raft store empty bootstraps the cluster as new. That is right
// the first time it starts. After its data folder was lost it is wrong: it would come back as a
// voter with no memory of its votes or its log, and could help elect a leader that lacks committed
// entries (which that leader then overwrites). The leader still remembers what the lost manager
// acknowledged (its match index), so a manager about to bootstrap asks its peers first, and without
// a leader's word it founds only when every other member answers with no entry of its own: a new
// cluster. Until then it waits (foundingWait.ts).
//
// The advice that follows (remove the member) is destructive, so it is given only when the peer
// that answered is certainly our cluster's leader: it answers as the id --peers names at that URL,
// it accepts our cluster secret, and it counts us as a voter. Anything less is a configuration
// mismatch, reported as such.

import { createServer, type Server } from 'node:net';
import { bootstrapSnapshot } from '../consensus/core/index.ts';
import { RAFT_MESSAGES_PATH } from '../consensus/transport/raftRoutes.ts';
import { CLUSTER_SECRET_HEADER } from '../http/clusterAuth.ts';
import { fetchRaftView, type RaftView } from './raftView.ts';

/** The index of the snapshot every founder starts from: entries past it were acknowledged. */
export const BOOTSTRAP_INDEX = bootstrapSnapshot([]).metadata.index;

export type StartRefusalReason =
  | 'port_in_use'
  | 'data_in_use'
  | 'wrong_secret'
  | 'peer_mismatch'
  | 'foreign_data'
  | 'data_lost';

/** A start-up refused for a known cause; `reason` is logged as is for tools to match. */
export class StartRefused extends Error {
  constructor(
    readonly reason: StartRefusalReason,
    message: string,
  ) {
    super(message);
    this.name = 'StartRefused';
  }
}

export class RebootstrapRefused extends StartRefused {
  constructor(
    readonly selfId: string,
    readonly leaderId: string,
    readonly match: number,
  ) {
    super(
      'data_lost',
      `manager ${selfId} has an empty data folder, but leader ${leaderId} holds its acknowledgement of ` +
        `log index ${match}: its data was lost. Restarting it as a founder could lose committed writes. ` +
        `Remove it (DELETE /v1/cluster/members/${selfId}), then add it again and start it with --join.`,
    );
    this.name = 'RebootstrapRefused';
  }
}

/**
 * An empty founder whose cluster already holds entries: it lost its data, or never started before
 * and was left behind; either way it may not found again, and the way back is the same.
 */
export class FoundingRefused extends StartRefused {
  constructor(selfId: string, leaderId: string, lastIndex: number) {
    super(
      'data_lost',
      `manager ${selfId} has an empty data folder, but the cluster already holds log entries (leader ${leaderId}, ` +
        `index ${lastIndex}): it lost its data, or never started while the others ran. Founding again could lose ` +
        `committed writes. Remove it (DELETE /v1/cluster/members/${selfId}), then add it again and start it with --join.`,
    );
    this.name = 'FoundingRefused';
  }
}

/** Throws StartRefused('port_in_use') when host:port cannot be bound right now. */
export async function checkPortFree(host: string, port: number): Promise<void> {
  if (port === 0) return;
  const error = await new Promise<NodeJS.ErrnoException | null>((resolve) => {
    const srv = createServer();
    srv.once('error', (err: NodeJS.ErrnoException) => resolve(err));
    srv.listen(port, host, () => srv.close(() => resolve(null)));
  });
  if (error?.code === 'EADDRINUSE') {
    throw new StartRefused(
      'port_in_use',
      `port ${port} on ${host} is in use by another process (another imgvault cluster?): ` +
        'stop it, or give this manager another port (--listen, or --base-port for imgvault cluster)',
    );
  }
  if (error) throw new StartRefused('port_in_use', `cannot listen on ${host}:${port}: ${error.message}`);
}

/**
 * Resolves once `server` listens on host:port; a port another process took since checkPortFree is
 * StartRefused('port_in_use'), other errors as they are.
 */
export function listening(server: Server, host: string, port: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    server.once('listening', resolve);
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'EADDRINUSE'
          ? new StartRefused('port_in_use', `port ${port} on ${host} is in use by another process`)
          : err,
      ),
    );
  });
}

/**
 * Whether `url` accepts `secret` (our raft credential for that peer, or the single secret): a GET
 * of the Raft route, which only checks the credential, so 401 means wrong and anything else right
 * (an older peer without the GET answers 404). null: no answer.
 */
async function secretAccepted(url: string, secret: string, timeoutMs: number): Promise<boolean | null> {
  try {
    const res = await fetch(`${url}${RAFT_MESSAGES_PATH}`, {
      headers: { [CLUSTER_SECRET_HEADER]: secret },
      signal: AbortSignal.timeout(timeoutMs),
    });
    await res.body?.cancel();
    return res.status !== 401;
  } catch {
    return null;
  }
}

export interface PeerAnswer {
  id: string;
  url: string;
  view: RaftView;
}

/** Asks every other listed peer who it is, and refuses a peer that is not who --peers says. */
export async function identifyPeers(
  selfId: string,
  peers: Record<string, string>,
  credentialFor: (peer: string) => string,
  timeoutMs: number,
  perRole: boolean,
): Promise<PeerAnswer[]> {
  const others = Object.entries(peers).filter(([id]) => id !== selfId);
  // Every peer at once: a start must not wait one timeout per silent peer.
  const asked = await Promise.all(
    others.map(async ([id, url]) => {
      const secret = credentialFor(id);
      // With client tokens on, the secret is what opens a peer's Raft view to another manager.
      const view = await fetchRaftView(url, timeoutMs, { [CLUSTER_SECRET_HEADER]: secret });
      const accepted = view?.id === id ? await secretAccepted(url, secret, timeoutMs) : null;
      return { id, url, view, accepted };
    }),
  );
  const answers: PeerAnswer[] = [];
  for (const { id, url, view, accepted } of asked) {
    if (!view) continue;
    if (view.id !== id) {
      throw new StartRefused(
        'peer_mismatch',
        `--peers names ${url} as manager ${id}, but the manager there is ${view.id}: ` +
          'the peer list disagrees with the cluster that answers (wrong --peers or ports?)',
      );
    }
    if (accepted === false) {
      // Per role, what differs is the raft key: a manager restarted alone with new keys (a
      // rotation done one manager at a time) meets this, and --secret-file is not its flag.
      throw new StartRefused(
        'wrong_secret',
        perRole
          ? `manager ${id} at ${url} refuses this manager's raft credential: start it with the manager ` +
              'keys the cluster uses (--credentials-dir; new keys must reach every manager at once), ' +
              'or it is another cluster on these ports'
          : `manager ${id} at ${url} refuses this manager's cluster secret: start it with the secret ` +
              'the cluster uses (--secret-file), or it is another cluster on these ports',
      );
    }
    answers.push({ id, url, view });
  }
  return answers;
}

/**
 * The checks before a manager with a Raft store starts its node: every reachable peer is who
 * --peers says and shares our secret. Each peer is asked for at most `timeoutMs`. (A founder with
 * an empty store waits for evidence instead: foundingDecision, foundingWait.ts.)
 */
export async function checkPeersBeforeStart(opts: {
  selfId: string;
  peers: Record<string, string>;
  secret: string;
  /** What to present to `peer` instead of `secret` (a raft credential names its receiver). */
  credentialFor?: (peer: string) => string;
  /** Per-role credentials (--credentials-dir) rather than the single secret: names what a refusal means. */
  perRole?: boolean;
  timeoutMs?: number;
}): Promise<void> {
  const credentialFor = opts.credentialFor ?? (() => opts.secret);
  await identifyPeers(opts.selfId, opts.peers, credentialFor, opts.timeoutMs ?? 2_000, opts.perRole ?? false);
}

/** Whether a founder with an empty store may bootstrap now, and why (or why it waits). */
export type FoundingDecision = { found: boolean; why: string };

/**
 * For a founder with an empty store, from the peers that answered (`answers`, of the members
 * `memberIds`). A leader decides: one that does not count it refuses; one that remembers an
 * acknowledgement of it refuses (RebootstrapRefused), and so does one whose log holds more than its
 * own first entry (FoundingRefused: a leader knows acknowledgements only since its election); the
 * first leader of a new cluster lets it found (founders that started together, this one a round
 * late). Without a leader, it founds only when every other member answered and none holds an
 * entry past the founders' snapshot: nothing was ever committed, so nothing it could have
 * acknowledged is lost. A member that is silent, or holds entries with no leader to answer for
 * them, makes it wait: a committed entry it acknowledged lives on such a member, and a leader
 * elected without this manager's vote will hold it.
 */
export function foundingDecision(
  selfId: string,
  memberIds: string[],
  answers: PeerAnswer[],
): FoundingDecision {
  // Two answering as leader: the one of the higher term leads (the other has not heard yet).
  const leader = answers
    .map((a) => a.view)
    .filter((v) => v.role === 'leader')
    .sort((a, b) => b.term - a.term)[0];
  if (leader) {
    if (!leader.confState.voters.includes(selfId)) {
      throw new StartRefused(
        'peer_mismatch',
        `leader ${leader.id} does not count ${selfId} as a member (voters: ${leader.confState.voters.join(', ')}): ` +
          'the peer list disagrees with the cluster; to join it, start with --join after adding this manager',
      );
    }
    const match = leader.peers?.[selfId]?.match ?? 0;
    if (match > BOOTSTRAP_INDEX) throw new RebootstrapRefused(selfId, leader.id, match);
    // A leader knows what a member acknowledged only since it was elected: past its own first entry
    // the cluster has a history this manager may have been part of.
    if (leader.lastIndex > BOOTSTRAP_INDEX + 1)
      throw new FoundingRefused(selfId, leader.id, leader.lastIndex);
    return { found: true, why: `leader ${leader.id} holds nothing but its own first entry: a new cluster` };
  }
  const withEntries = answers.filter((a) => a.view.lastIndex > BOOTSTRAP_INDEX);
  if (withEntries.length > 0) {
    const named = withEntries.map((a) => `${a.id} (log index ${a.view.lastIndex})`).join(', ');
    return {
      found: false,
      why: `${named} hold log entries and no leader answers: waiting for one to say whether ${selfId}'s data was lost`,
    };
  }
  const answered = new Set(answers.map((a) => a.id));
  const silent = memberIds.filter((id) => id !== selfId && !answered.has(id));
  if (silent.length > 0) {
    return {
      found: false,
      why: `waiting for ${silent.join(', ')} to answer: with an empty data folder, ${selfId} founds the cluster only once every member says it is new, or a leader that it acknowledged nothing`,
    };
  }
  return { found: true, why: 'every member answered with an empty log: a new cluster' };
}

/**
 * After the store is open: a store that records this manager under another URL, or not as a
 * member at all, belongs to another cluster (or another manager) than the one configured.
 */
export function checkStoredMembership(opts: {
  selfId: string;
  url: string;
  dataDir: string;
  members: Record<string, string>;
}): void {
  const { selfId, url, dataDir, members } = opts;
  const ids = Object.keys(members);
  if (ids.length === 0) return;
  const stored = members[selfId];
  const list = Object.entries(members)
    .map(([id, u]) => `${id}=${u}`)
    .join(',');
  if (stored === undefined) {
    throw new StartRefused(
      'foreign_data',
      `data folder ${dataDir} belongs to a cluster whose members are ${list}, which does not include ` +
        `${selfId}: wrong --data or --id (or this manager was removed; start it with --join and an empty folder)`,
    );
  }
  if (stored !== url && stored.replace(/^https?:/, '') === url.replace(/^https?:/, '')) {
    throw new StartRefused(
      'foreign_data',
      `data folder ${dataDir} records manager ${selfId} at ${stored}, but it is starting at ${url}: ` +
        'a member cannot switch between http and https in place (docs/operations.md, "TLS")',
    );
  }
  if (stored !== url) {
    throw new StartRefused(
      'foreign_data',
      `data folder ${dataDir} records manager ${selfId} at ${stored}, but it is starting at ${url}: ` +
        'this folder belongs to another cluster (wrong --data or ports?)',
    );
  }
}
