// The safety invariants of Raft (paper figure 3), checked as the simulation produces each event.
// Every check is incremental: a log prefix is identified by its chained digest (digest.ts), so
// comparing two logs up to an index is one number comparison.
//
// "Committed" knowledge comes from commit indexes that nodes persist. An entry observed committed
// by a node whose term was B was committed in some term <= B, so every leader of a term > B must
// hold it (Leader Completeness), and no node at a term >= B may ever drop it from its log.

import type { Entry, HardState, NodeId, Term } from '../../src/consensus/types.ts';
import type { SaveEffect, SimDisk } from './simDisk.ts';

export type ViolationKind =
  | 'election-safety'
  | 'log-matching'
  | 'leader-completeness'
  | 'state-machine-safety'
  | 'monotonicity'
  | 'linearizability'
  /** A vote or an append acknowledged before it was durable (or for an entry held differently). */
  | 'durable-ack'
  | 'liveness'
  /** The durable log store refused a write (LogStoreInvariantError): the core asked for something illegal. */
  | 'log-store'
  | 'host-error';

export interface Violation {
  kind: ViolationKind;
  tick: number;
  message: string;
}

/** Thrown by the checker; the scenario stops the run at the first one. */
export class SafetyViolation extends Error {
  constructor(readonly violation: Violation) {
    super(`[${violation.kind}] tick ${violation.tick}: ${violation.message}`);
  }
}

interface CommittedRecord {
  index: number;
  term: Term;
  digest: number;
  /** Upper bound on the term in which it was committed (the observer's term). */
  bound: Term;
  observer: NodeId;
}

export class Checker {
  now = 0;
  /** Election Safety: term -> the one leader it may have, ever. */
  readonly leaders = new Map<Term, NodeId>();
  /** Votes granted: `${voter}@${term}` -> candidate; a voter grants one vote per term across restarts. */
  private readonly votes = new Map<string, NodeId>();
  /** Log Matching: `${index}@${term}` -> digest of the log prefix ending at that entry. */
  private readonly logDigests = new Map<string, number>();
  /** Committed entries by index (sparse where only snapshots were seen). */
  private readonly committed = new Map<number, CommittedRecord>();
  /** Indices of `committed` in increasing order, for "highest committed with bound < term". */
  private readonly committedOrder: number[] = [];
  /** State Machine Safety: index -> digest of the applied prefix ending there. */
  private readonly appliedDigests = new Map<number, number>();
  /** Highest log index of a client write acknowledged (applied somewhere). */
  maxAckedWrite = 0;
  /** Acknowledged client writes: value -> index it was first applied at. */
  private readonly ackedWrites = new Map<string, number>();
  checks = 0;

  fail(kind: ViolationKind, message: string): never {
    throw new SafetyViolation({ kind, tick: this.now, message });
  }

  /** A node announced itself leader of `term` (from a Ready's soft state or its status). */
  onLeader(id: NodeId, term: Term): void {
    this.checks++;
    const known = this.leaders.get(term);
    if (known === undefined) this.leaders.set(term, id);
    else if (known !== id) this.fail('election-safety', `two leaders in term ${term}: ${known} and ${id}`);
  }

  /** A vote is on the wire: `voter` granted `candidate` its vote in `term`. */
  onVoteGranted(voter: NodeId, candidate: NodeId, term: Term, disk?: SimDisk): void {
    this.checks++;
    // Figure 2 ("respond after updating stable storage"): a vote forgotten in a crash can be
    // granted again, to another candidate of the same term. A grant sent after the voter moved on
    // to a later term can never be repeated in its own term.
    if (disk && disk.hardState.term <= term && disk.hardState.vote !== candidate) {
      this.fail(
        'durable-ack',
        `${voter} granted its vote in term ${term} to ${candidate} but its disk holds term ${disk.hardState.term}, vote ${disk.hardState.vote ?? 'none'}`,
      );
    }
    const key = `${voter}@${term}`;
    const known = this.votes.get(key);
    if (known === undefined) this.votes.set(key, candidate);
    else if (known !== candidate) {
      this.fail(
        'election-safety',
        `${voter} granted its vote in term ${term} to both ${known} and ${candidate}`,
      );
    }
  }

  /**
   * Figure 2: a follower answers an AppendEntries with success only once the entries are on its
   * stable storage, and are the leader's (same term at the acknowledged index means same prefix,
   * by Log Matching). The leader counts this answer towards a commit, so an answer that runs ahead
   * of the disk, or vouches for a replaced entry, can commit what a majority does not hold.
   * `leaderTerm` is the term the leader's own log has at `index`, when known. An answer produced
   * in `ackTerm` and sent after the follower moved to a later term is left out: a newer leader may
   * have replaced the entry meanwhile, and the stale term in the answer is what keeps it harmless.
   */
  onAppendAck(
    follower: NodeId,
    disk: SimDisk,
    ackTerm: Term,
    index: number,
    leader: NodeId,
    leaderTerm: Term | undefined,
  ): void {
    this.checks++;
    if (disk.hardState.term !== ackTerm) return;
    if (index > disk.lastIndex) {
      this.fail(
        'durable-ack',
        `${follower} acknowledged index ${index} to ${leader} but its disk ends at ${disk.lastIndex}`,
      );
    }
    if (leaderTerm === undefined || leaderTerm === 0 || index <= disk.snapshotIndex) return;
    const held = disk.termAt(index);
    if (held !== leaderTerm) {
      this.fail(
        'durable-ack',
        `${follower} acknowledged index ${index} to ${leader}, whose entry there has term ${leaderTerm}, but its disk holds term ${held}`,
      );
    }
  }

  /**
   * Leader Completeness (paper 5.4.1): a leader of `term` holds every entry committed in an
   * earlier term. Because digests chain, checking the highest such entry checks them all.
   */
  checkLeaderLog(id: NodeId, term: Term, disk: SimDisk): void {
    this.checks++;
    for (let k = this.committedOrder.length - 1; k >= 0; k--) {
      const rec = this.committed.get(this.committedOrder[k]!)!;
      if (rec.bound >= term) continue;
      if (rec.index > disk.lastIndex) {
        this.fail(
          'leader-completeness',
          `leader ${id} of term ${term} has last index ${disk.lastIndex} but ${rec.index}@${rec.term} was committed (seen by ${rec.observer} at term ${rec.bound})`,
        );
      }
      if (rec.index < disk.snapshotIndex) {
        const own = this.committed.get(disk.snapshotIndex);
        if (own && own.bound < term && own.digest !== disk.snapshotDigest) {
          this.fail(
            'leader-completeness',
            `leader ${id} of term ${term} holds a snapshot that differs from the committed log at ${disk.snapshotIndex}`,
          );
        }
        return;
      }
      const digest = disk.digestAt(rec.index);
      if (digest !== rec.digest) {
        this.fail(
          'leader-completeness',
          `leader ${id} of term ${term} lacks committed entry ${rec.index}@${rec.term} (its log has term ${disk.termAt(rec.index)} there, or a different prefix)`,
        );
      }
      return;
    }
  }

  /**
   * A node saved a batch. Checks Log Matching on every entry written, that no entry known committed
   * (to a term <= the writer's) is removed, and that term and commit never regress on disk.
   */
  onSave(id: NodeId, before: HardState, disk: SimDisk, effect: SaveEffect): void {
    this.checks++;
    const after = disk.hardState;
    if (after.term < before.term)
      this.fail('monotonicity', `${id} persisted term ${after.term} after ${before.term}`);
    if (after.commit < before.commit) {
      this.fail('monotonicity', `${id} persisted commit ${after.commit} after ${before.commit}`);
    }
    if (after.term === before.term && before.vote !== null && after.vote !== before.vote) {
      this.fail(
        'election-safety',
        `${id} changed its persisted vote in term ${after.term} from ${before.vote} to ${after.vote}`,
      );
    }
    if (effect.snapshotInstalled)
      this.onLogDigest(id, disk.snapshotIndex, disk.snapshotTerm, disk.snapshotDigest);
    let previousTerm = disk.termAt((effect.written[0]?.entry.index ?? 1) - 1) ?? 0;
    for (const w of effect.written) {
      if (w.entry.term < previousTerm) {
        this.fail(
          'log-matching',
          `${id} stored ${w.entry.index}@${w.entry.term} after an entry of term ${previousTerm}`,
        );
      }
      previousTerm = w.entry.term;
      this.onLogDigest(id, w.entry.index, w.entry.term, w.digest);
    }
    for (const r of effect.removed) {
      if (effect.snapshotInstalled && r.entry.index <= disk.snapshotIndex) continue;
      const rec = this.committed.get(r.entry.index);
      if (rec && rec.bound <= after.term && rec.digest === r.digest) {
        this.fail(
          'leader-completeness',
          `${id} at term ${after.term} removed committed entry ${r.entry.index}@${r.entry.term} (seen committed by ${rec.observer} at term ${rec.bound})`,
        );
      }
    }
    if (after.commit > before.commit || effect.snapshotInstalled)
      this.onCommit(id, before.commit, after, disk);
  }

  private onLogDigest(id: NodeId, index: number, term: Term, digest: number): void {
    const key = `${index}@${term}`;
    const known = this.logDigests.get(key);
    if (known === undefined) this.logDigests.set(key, digest);
    else if (known !== digest) {
      this.fail('log-matching', `${id} holds ${key} after a prefix that differs from another log's ${key}`);
    }
  }

  private onCommit(id: NodeId, from: number, hs: HardState, disk: SimDisk): void {
    const lo = Math.max(from + 1, disk.snapshotIndex);
    for (let i = lo; i <= hs.commit; i++) {
      const digest = disk.digestAt(i);
      if (digest === undefined) continue;
      const term = disk.termAt(i)!;
      const known = this.committed.get(i);
      if (known) {
        if (known.digest !== digest) {
          this.fail(
            'state-machine-safety',
            `${id} committed ${i}@${term} but ${known.observer} committed ${i}@${known.term} with a different prefix`,
          );
        }
        if (hs.term < known.bound) known.bound = hs.term;
        continue;
      }
      this.committed.set(i, { index: i, term, digest, bound: hs.term, observer: id });
      const last = this.committedOrder[this.committedOrder.length - 1];
      if (last === undefined || i > last) this.committedOrder.push(i);
      else {
        let pos = this.committedOrder.length;
        while (pos > 0 && this.committedOrder[pos - 1]! > i) pos--;
        this.committedOrder.splice(pos, 0, i);
      }
    }
  }

  /** A node's state machine applied `entry`, reaching `digest`. */
  onApply(id: NodeId, entry: Entry, digest: number, durableCommit: number): void {
    this.checks++;
    if (entry.index > durableCommit) {
      this.fail(
        'state-machine-safety',
        `${id} applied ${entry.index} beyond its durable commit ${durableCommit}`,
      );
    }
    const known = this.appliedDigests.get(entry.index);
    if (known === undefined) this.appliedDigests.set(entry.index, digest);
    else if (known !== digest) {
      this.fail(
        'state-machine-safety',
        `${id} applied ${entry.index}@${entry.term} (${entry.data || 'noop'}) over a different history`,
      );
    }
    if (entry.type === 'normal' && entry.data !== '' && !this.ackedWrites.has(entry.data)) {
      this.ackedWrites.set(entry.data, entry.index);
      if (entry.index > this.maxAckedWrite) this.maxAckedWrite = entry.index;
    }
  }

  /** A node restored its state machine from a snapshot ending at `index`. */
  onRestore(id: NodeId, index: number, digest: number): void {
    this.checks++;
    const known = this.appliedDigests.get(index);
    if (known === undefined) this.appliedDigests.set(index, digest);
    else if (known !== digest)
      this.fail('state-machine-safety', `${id} restored a snapshot at ${index} over a different history`);
  }

  /**
   * ReadIndex linearizability: a read started when `required` was the read floor (highest
   * acknowledged write or known commit) must be served from a state machine that has applied it.
   */
  onReadServed(id: NodeId, ctx: string, required: number, applied: number, readIndex: number): void {
    this.checks++;
    if (applied < required) {
      this.fail(
        'linearizability',
        `${id} served read ${ctx} at applied ${applied} (read index ${readIndex}) but index ${required} was committed before it started`,
      );
    }
  }

  /** The state machine and the log it came from must agree at the applied index. */
  onLocalSnapshot(
    id: NodeId,
    index: number,
    smDigest: number | undefined,
    logDigest: number | undefined,
  ): void {
    if (logDigest !== undefined && smDigest !== undefined && logDigest !== smDigest) {
      this.fail('state-machine-safety', `${id}'s state machine at ${index} differs from its own log`);
    }
  }

  /** The digest of the applied prefix ending at `index`, as the first replica to apply it held it. */
  appliedDigestAt(index: number): number | undefined {
    return this.appliedDigests.get(index);
  }

  ackedIndex(value: string): number | undefined {
    return this.ackedWrites.get(value);
  }

  /**
   * What a linearizable read starting now must observe: every write acknowledged (applied on some
   * node) and, stronger, every index some node has durably recorded as committed.
   */
  get readFloor(): number {
    return Math.max(this.maxAckedWrite, this.maxCommitted);
  }

  get maxCommitted(): number {
    return this.committedOrder[this.committedOrder.length - 1] ?? 0;
  }
}
