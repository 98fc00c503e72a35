// A leader's commit notices, held back briefly. When the commit index moves and a follower has no
// new entries due, the core sends it an empty MsgApp that only carries the new commit index (etcd
// does the same). At low concurrency that is half of a commit's messages: two frames out, two
// wake-ups of the followers, two Readies there and two answers back, and on two cores the woken
// followers take the CPU the leader needs to answer its client. Held for `holdMs`, a notice is
// dropped when a later append to the same follower carries that commit index anyway (the next
// proposal's, usually within a client's round trip), and sent when the time is up.
//
// Holding or dropping a message is safe: the network may do both (Raft recovers, and a later
// heartbeat or append carries the commit index again). What it costs is how late a follower learns
// the commit index, at most `holdMs`, and so may a read on a follower whose own answer did not make
// the commit (its ReadIndex round's heartbeats carry only min(match, commit)).

import type { Message, NodeId } from '../types.ts';
import type { RaftClock, TimerHandle } from './clock.ts';

/** A message that only tells its follower the commit index: a leader's MsgApp without entries. */
export function isCommitNotice(msg: Message): boolean {
  return msg.type === 'MsgApp' && (msg.entries === undefined || msg.entries.length === 0);
}

export class CommitNotices {
  private readonly held = new Map<NodeId, Message>();
  private timer: TimerHandle | null = null;

  constructor(
    private readonly clock: RaftClock,
    private readonly holdMs: number,
    private readonly send: (messages: Message[]) => void,
  ) {}

  /**
   * Sends `messages`, less the notices `mayHold` lets wait; a held notice a message here
   * supersedes (an append of the same term to the same follower, with at least its commit index)
   * is dropped.
   */
  sendOrHold(messages: Message[], mayHold: (msg: Message) => boolean): void {
    if (this.holdMs <= 0) {
      this.send(messages);
      return;
    }
    let now: Message[] | null = null;
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      if (this.held.size > 0) this.supersede(m);
      if (isCommitNotice(m) && mayHold(m)) {
        if (now === null) now = messages.slice(0, i);
        this.held.set(m.to, m);
      } else if (now !== null) now.push(m);
    }
    const out = now ?? messages;
    if (out.length > 0) this.send(out);
    this.arm();
  }

  /** Sends every held notice now (a conf change, a transfer, or the time is up). */
  flush(): void {
    this.disarm();
    if (this.held.size === 0) return;
    const out = [...this.held.values()];
    this.held.clear();
    this.send(out);
  }

  /** Forgets the held notices (this node stopped leading, or stops). */
  clear(): void {
    this.disarm();
    this.held.clear();
  }

  private supersede(m: Message): void {
    const h = this.held.get(m.to);
    if (h === undefined || m.type !== 'MsgApp' || m.term !== h.term) return;
    if ((m.commit ?? 0) >= (h.commit ?? 0)) this.held.delete(m.to);
  }

  private arm(): void {
    if (this.held.size === 0) this.disarm();
    else if (this.timer === null) this.timer = this.clock.setTimeout(() => this.onTimer(), this.holdMs);
  }

  private disarm(): void {
    if (this.timer !== null) this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  private onTimer(): void {
    this.timer = null;
    this.flush();
  }
}
