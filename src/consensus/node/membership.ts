// Who is in the cluster, as this node has applied it: the voters and learners (the core's
// ConfState, mirrored here) and each member's URL, which the transport needs to reach it. The URLs
// travel in `addLearner` entries and in snapshots (see wrapSnapshot in raftNode.ts). On the leader,
// this is also where a caught-up learner gets promoted to voter.

import type { Logger } from '../../logging.ts';
import type { ProposeError } from '../api.ts';
import type { ConfChange, ConfState, Index, NodeId, Status } from '../types.ts';
import { RaftError } from './raftError.ts';

/** The transport's peer table: the members this node sends to, by URL. */
export interface PeerDirectory {
  setPeer(id: NodeId, url: string): void;
  removePeer(id: NodeId): void;
}

/** Time between two promotion proposals for the same learner: the first may still be committing. */
const PROMOTE_RETRY_MS = 2_000;

const MEMBER_URL = /^https?:\/\/[^\s/]+$/;

export class Membership {
  /** Promotions proposed, by learner, and when: retried only after PROMOTE_RETRY_MS. */
  private readonly promotionProposedAt = new Map<NodeId, number>();

  constructor(
    private readonly self: NodeId,
    /** Member id -> URL, this node included. A snapshot install replaces it whole. */
    public urls: Map<NodeId, string>,
    public confState: ConfState,
    private readonly peers: PeerDirectory,
    private readonly log: Logger,
    /** A learner is promoted once its match index is within this many entries of the leader's last. */
    private readonly promoteGap: number,
  ) {}

  isVoter(id: NodeId): boolean {
    return this.confState.voters.includes(id);
  }

  isLearner(id: NodeId): boolean {
    return this.confState.learners.includes(id);
  }

  isMember(id: NodeId): boolean {
    return this.isVoter(id) || this.isLearner(id);
  }

  urlOf(id: NodeId): string | null {
    return this.urls.get(id) ?? null;
  }

  /**
   * Checks an `addMember(id, url)`: true when `id` is already a voter at `url` (nothing to do),
   * false when it must be added; throws InvalidMember on a bad URL or a voter at another URL.
   */
  alreadyVoter(id: NodeId, url: string): boolean {
    if (!MEMBER_URL.test(url)) throw new RaftError('InvalidMember', `bad member URL ${url}`);
    if (!this.isVoter(id)) return false;
    if (this.urls.get(id) === url) return true;
    throw new RaftError('InvalidMember', `${id} is already a member with URL ${this.urls.get(id)}`);
  }

  /** Records a conf change the core has applied (`confState` is its result): URLs and peers follow. */
  applied(cc: ConfChange, index: Index, confState: ConfState): void {
    this.confState = confState;
    if (cc.type === 'addLearner' && cc.context) {
      this.urls.set(cc.nodeId, cc.context);
      if (cc.nodeId !== this.self) this.peers.setPeer(cc.nodeId, cc.context);
    } else if (cc.type === 'remove') {
      this.urls.delete(cc.nodeId);
      this.promotionProposedAt.delete(cc.nodeId);
      if (cc.nodeId !== this.self) this.peers.removePeer(cc.nodeId);
    }
    this.log.info(
      { event: 'raft.conf_change_applied', index, change: cc.type, member: cc.nodeId, confState },
      `membership change ${cc.type} ${cc.nodeId}`,
    );
    if (cc.type === 'remove' && cc.nodeId === this.self) {
      this.log.warn({ event: 'raft.removed_self', index }, 'this node was removed from the cluster');
    }
  }

  /**
   * On the leader: proposes the promotion of every learner close enough to the end of the log that
   * counting it cannot stall commits. `status` is the core's, `propose` hands a change to the core.
   */
  promoteCaughtUp(status: Status, now: number, propose: (cc: ConfChange) => ProposeError | null): void {
    if (!status.progress) return;
    for (const learner of this.confState.learners) {
      const p = status.progress[learner];
      // Caught up means: acknowledged in replicate state (it holds the snapshot or the log up to
      // `match`), and close to the end.
      if (p?.state !== 'replicate' || p.match === 0 || p.match + this.promoteGap < status.lastIndex) continue;
      const last = this.promotionProposedAt.get(learner);
      if (last !== undefined && now - last < PROMOTE_RETRY_MS) continue;
      this.promotionProposedAt.set(learner, now);
      const err = propose({ type: 'promote', nodeId: learner });
      this.log.info(
        { event: 'raft.promote_proposed', member: learner, match: p.match, lastIndex: status.lastIndex, err },
        `proposing promotion of learner ${learner}`,
      );
    }
  }
}
