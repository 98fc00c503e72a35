// The simulated network: every message waits in a per-tick bucket until its random delivery tick.
// Each link (from -> to) is a stream, like the per-peer batched HTTP transport: its messages
// arrive in the order they were sent, after a random delay. Faults break that on purpose: a
// reordered message takes its own delay regardless of the stream, a late one arrives much later,
// and messages are dropped, duplicated, or cut by partitions. All drawn from the run's PRNG.

import type { Message, NodeId } from '../../src/consensus/types.ts';
import type { Prng } from './prng.ts';

export interface NetworkFaults {
  dropRate: number;
  duplicateRate: number;
  /** Delivery delay in ticks is uniform in [minDelay, maxDelay]; a spread reorders messages. */
  minDelay: number;
  maxDelay: number;
  /** Probability that a message ignores its link's order (overtakes or is overtaken). */
  reorderRate: number;
  /** Probability that one message is held back much longer (a stale packet arriving late). */
  lateRate: number;
  lateDelay: number;
}

export interface InFlight {
  msg: Message;
  sentAt: number;
  /** Incarnation of the sender when it sent, so snapshot reports reach only the same incarnation. */
  senderIncarnation: number;
  /** Send order, to keep a link's in-order messages in order within a tick. */
  seq: number;
  inOrder: boolean;
}

export type DropReason = 'drop' | 'partition';

export class SimNetwork {
  faults: NetworkFaults;
  private readonly buckets = new Map<number, InFlight[]>();
  /** Partition group per node; nodes in different groups cannot talk. Absent = group 0. */
  private groups = new Map<NodeId, number>();
  /** One-way cuts as `from>to`: messages from `from` to `to` are lost, the other way passes. */
  private readonly oneWay = new Set<string>();
  /** Per link, the tick its last in-order message is due: later ones may not arrive before it. */
  private readonly linkTail = new Map<string, number>();
  private seq = 0;
  sent = 0;
  delivered = 0;
  dropped = 0;

  constructor(
    private readonly rng: Prng,
    faults: NetworkFaults,
  ) {
    this.faults = faults;
  }

  send(msg: Message, now: number, senderIncarnation: number): DropReason | null {
    this.sent++;
    if (!this.connected(msg.from, msg.to)) {
      this.dropped++;
      return 'partition';
    }
    if (this.rng.chance(this.faults.dropRate)) {
      this.dropped++;
      return 'drop';
    }
    const copies = this.rng.chance(this.faults.duplicateRate) ? 2 : 1;
    const link = `${msg.from}>${msg.to}`;
    for (let i = 0; i < copies; i++) {
      let at = now + this.rng.range(this.faults.minDelay, this.faults.maxDelay);
      let inOrder = true;
      if (this.rng.chance(this.faults.lateRate)) {
        at += this.rng.range(1, this.faults.lateDelay);
        inOrder = false;
      } else if (i > 0 || this.rng.chance(this.faults.reorderRate)) {
        inOrder = false;
      } else {
        at = Math.max(at, this.linkTail.get(link) ?? 0);
        this.linkTail.set(link, at);
      }
      let bucket = this.buckets.get(at);
      if (!bucket) {
        bucket = [];
        this.buckets.set(at, bucket);
      }
      bucket.push({ msg: copyMessage(msg), sentAt: now, senderIncarnation, seq: this.seq++, inOrder });
    }
    return null;
  }

  /**
   * Messages due at `now`: links interleave at random, but each link's in-order messages keep
   * their send order. Partitions in force now still cut them.
   */
  takeDue(now: number): { deliver: InFlight[]; cut: InFlight[] } {
    const bucket = this.buckets.get(now);
    if (!bucket) return { deliver: [], cut: [] };
    this.buckets.delete(now);
    this.rng.shuffle(bucket);
    restoreLinkOrder(bucket);
    const deliver: InFlight[] = [];
    const cut: InFlight[] = [];
    for (const f of bucket) {
      if (this.connected(f.msg.from, f.msg.to)) deliver.push(f);
      else cut.push(f);
    }
    this.delivered += deliver.length;
    this.dropped += cut.length;
    return { deliver, cut };
  }

  /** Whether a message from `a` reaches `b` (one-way cuts make this asymmetric). */
  connected(a: NodeId, b: NodeId): boolean {
    return (this.groups.get(a) ?? 0) === (this.groups.get(b) ?? 0) && !this.oneWay.has(`${a}>${b}`);
  }

  cutOneWay(from: NodeId, to: NodeId): void {
    this.oneWay.add(`${from}>${to}`);
  }

  partition(groups: NodeId[][]): void {
    this.groups = new Map();
    groups.forEach((members, g) => {
      for (const id of members) this.groups.set(id, g);
    });
  }

  heal(): void {
    this.groups = new Map();
    this.oneWay.clear();
  }

  get partitioned(): boolean {
    return this.groups.size > 0 || this.oneWay.size > 0;
  }

  /** Messages still waiting for their delivery tick. */
  inFlightCount(): number {
    let n = 0;
    for (const b of this.buckets.values()) n += b.length;
    return n;
  }
}

/** Puts each link's in-order messages back in send order, in the slots the shuffle gave that link. */
function restoreLinkOrder(bucket: InFlight[]): void {
  const slots = new Map<string, number[]>();
  bucket.forEach((f, i) => {
    if (!f.inOrder) return;
    const link = `${f.msg.from}>${f.msg.to}`;
    const list = slots.get(link);
    if (list) list.push(i);
    else slots.set(link, [i]);
  });
  for (const positions of slots.values()) {
    if (positions.length < 2) continue;
    const ordered = positions.map((i) => bucket[i]!).sort((a, b) => a.seq - b.seq);
    positions.forEach((pos, k) => {
      bucket[pos] = ordered[k]!;
    });
  }
}

/**
 * Messages cross a real transport as bytes, so the receiver never shares objects with the sender.
 * Entries and snapshots are copied; their `data` strings are immutable.
 */
export function copyMessage(msg: Message): Message {
  const copy: Message = { ...msg };
  if (msg.entries) copy.entries = msg.entries.map((e) => ({ ...e }));
  if (msg.snapshot) {
    copy.snapshot = {
      metadata: {
        index: msg.snapshot.metadata.index,
        term: msg.snapshot.metadata.term,
        confState: {
          voters: [...msg.snapshot.metadata.confState.voters],
          learners: [...msg.snapshot.metadata.confState.learners],
        },
      },
      data: msg.snapshot.data,
    };
  }
  return copy;
}
