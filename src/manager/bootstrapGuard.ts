// A founding manager that finds its Raft store empty bootstraps the cluster as new. That is right
// the first time it starts. After its data folder was lost it is wrong: it would come back as a
// voter with no memory of its votes or its log, and could help elect a leader that lacks committed
// entries (which that leader then overwrites). The leader still remembers what the lost manager
// acknowledged (its match index), so a manager about to bootstrap asks its peers first. A peer
// that cannot be reached teaches nothing: on a cold start of a new cluster none can be.

import { fetchRaftView } from '../cli/localManagers.ts';
import { bootstrapSnapshot } from '../consensus/core/index.ts';

/** The index of the snapshot every founder starts from: entries past it were acknowledged. */
const BOOTSTRAP_INDEX = bootstrapSnapshot([]).metadata.index;

export class RebootstrapRefused extends Error {
  constructor(
    readonly selfId: string,
    readonly leaderId: string,
    readonly match: number,
  ) {
    super(
      `manager ${selfId} has an empty data folder, but leader ${leaderId} holds its acknowledgement of ` +
        `log index ${match}: its data was lost. Restarting it as a founder could lose committed writes. ` +
        `Remove it (DELETE /v1/cluster/members/${selfId}), then add it again and start it with --join.`,
    );
    this.name = 'RebootstrapRefused';
  }
}

/**
 * Throws RebootstrapRefused when a peer that leads reports that `selfId` acknowledged entries
 * beyond the bootstrap snapshot. Every peer is asked at once, each for at most `timeoutMs`.
 */
export async function refuseRebootstrap(
  selfId: string,
  peers: Record<string, string>,
  timeoutMs = 2_000,
): Promise<void> {
  const answers = await Promise.all(
    Object.entries(peers)
      .filter(([id]) => id !== selfId)
      .map(([, url]) => fetchRaftView(url, timeoutMs)),
  );
  for (const status of answers) {
    const match = status?.peers?.[selfId]?.match ?? 0;
    if (status?.role === 'leader' && match > BOOTSTRAP_INDEX) {
      throw new RebootstrapRefused(selfId, status.id, match);
    }
  }
}
