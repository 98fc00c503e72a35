// One simulated manager: the host loop around a RaftCore, as the real node driver runs it.
// A Ready is handled in the documented order (persist -> send -> apply -> advance); the persist
// takes a random number of ticks on the simulated disk, and a crash in that window loses the
// Ready. The `sendThenPersist` host order is the deliberately broken variant that sends first.

import type { ProposeError } from '../../src/consensus/api.ts';
import { LogStoreInvariantError } from '../../src/consensus/logStoreRules.ts';
import type { ConfChange, ConfState, Message, NodeId, Ready, Role } from '../../src/consensus/types.ts';
import type { Checker } from './checker.ts';
import {
  appendToStorage,
  applyConfChange,
  type CoreVariant,
  compactStorage,
  createCore,
  type SimCore,
} from './coreAdapter.ts';
import type { Prng } from './prng.ts';
import { cloneSnapshot, type SaveEffect, SimDisk } from './simDisk.ts';
import { SimStateMachine } from './stateMachine.ts';

export type HostOrder = 'persistThenSend' | 'sendThenPersist';

/** Where inside the handling of one Ready a crash may strike. */
export type CrashPoint =
  | 'before saving'
  | 'after sending, before saving'
  | 'after saving, before sending'
  | 'after sending, before applying';

export interface HostEnv {
  readonly checker: Checker;
  readonly hostOrder: HostOrder;
  readonly coreVariant: CoreVariant;
  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly maxSizePerMsg: number;
  readonly maxInflightMsgs: number;
  readonly now: number;
  /** Ticks one synced write takes. */
  diskLatency(): number;
  send(from: SimNode, msg: Message): void;
  trace(line: string): void;
  onConfApplied(node: SimNode, change: ConfChange, confState: ConfState): void;
  /** May crash `node` at this point of handling `ready`; true if it did. */
  crashPoint(node: SimNode, ready: Ready, point: CrashPoint): boolean;
}

interface InflightReady {
  ready: Ready;
  persistAt: number;
  sent: boolean;
  /** Term the node announced leadership in, when this Ready carried that soft state. */
  leaderTerm: number | null;
}

interface PendingRead {
  ctx: string;
  /** Highest acknowledged write index when the read started. */
  required: number;
  startedAt: number;
  readIndex: number | null;
}

export class SimNode {
  readonly disk = new SimDisk();
  alive = false;
  /** Removed from the cluster and shut down for good. */
  retired = false;
  incarnation = 0;
  core!: SimCore;
  sm = new SimStateMachine();
  confState: ConfState = { voters: [], learners: [] };
  role: Role = 'follower';
  private inflight: InflightReady | null = null;
  private readonly reads = new Map<string, PendingRead>();
  private lastTerm = 0;
  private lastCommit = 0;

  constructor(
    readonly id: NodeId,
    private readonly env: HostEnv,
  ) {}

  /** Boot (or reboot) from what is on disk: hard state, snapshot, entries. */
  start(rng: Prng): void {
    this.incarnation++;
    this.alive = true;
    this.inflight = null;
    this.reads.clear();
    this.role = 'follower';
    const snapshot = this.disk.snapshot;
    this.sm = snapshot ? SimStateMachine.restore(snapshot.data) : new SimStateMachine();
    this.confState = snapshot ? cloneSnapshot(snapshot).metadata.confState : { voters: [], learners: [] };
    if (snapshot) this.env.checker.onRestore(this.id, this.sm.applied, this.sm.digest);
    this.core = createCore({
      id: this.id,
      disk: this.disk,
      random: (n) => rng.int(n),
      applied: this.sm.applied,
      electionTick: this.env.electionTick,
      heartbeatTick: this.env.heartbeatTick,
      maxSizePerMsg: this.env.maxSizePerMsg,
      maxInflightMsgs: this.env.maxInflightMsgs,
      variant: this.env.coreVariant,
    });
    this.lastTerm = this.disk.hardState.term;
    this.lastCommit = this.disk.hardState.commit;
    this.pump();
  }

  /** Power loss: whatever was not yet saved is gone, and so are pending reads. */
  crash(): void {
    this.alive = false;
    this.inflight = null;
    this.reads.clear();
    this.role = 'follower';
  }

  get persisting(): boolean {
    return this.inflight !== null;
  }

  tick(): void {
    this.core.node.tick();
    this.pump();
  }

  step(msg: Message): void {
    this.core.node.step(msg);
    this.pump();
  }

  propose(data: string): ProposeError | null {
    const err = this.core.node.propose(data);
    this.pump();
    return err;
  }

  proposeConfChange(change: ConfChange): ProposeError | null {
    const err = this.core.node.proposeConfChange(change);
    this.pump();
    return err;
  }

  transferLeadership(to: NodeId): void {
    this.core.node.transferLeadership(to);
    this.pump();
  }

  read(ctx: string, required: number): void {
    this.reads.set(ctx, { ctx, required, startedAt: this.env.now, readIndex: null });
    this.core.node.readIndex(ctx);
    this.pump();
  }

  /** Reads the cluster never answered (no leader, lost messages) are abandoned, unchecked. */
  expireReads(olderThan: number): void {
    for (const [ctx, r] of this.reads) if (r.startedAt < olderThan) this.reads.delete(ctx);
  }

  reportUnreachable(to: NodeId): void {
    this.core.node.reportUnreachable(to);
    this.pump();
  }

  reportSnapshot(to: NodeId, ok: boolean): void {
    this.core.node.reportSnapshot(to, ok);
    this.pump();
  }

  /** Take a snapshot at the applied index and drop the log up to it. */
  compact(): boolean {
    const index = this.sm.applied;
    if (index <= this.disk.snapshotIndex || index > this.disk.lastIndex) return false;
    this.env.checker.onLocalSnapshot(this.id, index, this.sm.digest, this.disk.digestAt(index));
    const snapshot = {
      metadata: {
        index,
        term: this.disk.termAt(index)!,
        confState: { voters: [...this.confState.voters], learners: [...this.confState.learners] },
      },
      data: this.sm.serialize(),
    };
    try {
      this.disk.compact(snapshot);
    } catch (err) {
      if (!(err instanceof LogStoreInvariantError)) throw err;
      this.env.checker.fail(
        'log-store',
        `${this.id}'s log store refused compaction to ${index}: ${err.message}`,
      );
    }
    compactStorage(this.core, snapshot);
    this.env.trace(`${this.id} compact to ${index}`);
    return true;
  }

  /** Invariants over the core's own view, checked after every step: term and commit never go back. */
  observe(): void {
    // Read the core's fields directly: status() builds a fresh object and runs after every step.
    const raft = this.core.node.raft;
    const st = { term: raft.term, commit: raft.raftLog.committed, role: raft.role };
    if (st.term < this.lastTerm)
      this.env.checker.fail('monotonicity', `${this.id} term went from ${this.lastTerm} to ${st.term}`);
    if (st.commit < this.lastCommit) {
      this.env.checker.fail('monotonicity', `${this.id} commit went from ${this.lastCommit} to ${st.commit}`);
    }
    this.lastTerm = st.term;
    this.lastCommit = st.commit;
    if (st.role === 'leader') this.env.checker.onLeader(this.id, st.term);
  }

  /** Drive Ready handling as far as the simulated disk allows at the current tick. */
  pump(): void {
    for (let guard = 0; guard < 10_000; guard++) {
      if (!this.alive) return;
      if (this.inflight) {
        if (this.env.now < this.inflight.persistAt) return;
        const inflight = this.inflight;
        this.finish(inflight);
        if (this.inflight === inflight) this.inflight = null;
        continue;
      }
      if (!this.core.node.hasReady()) return;
      const ready = this.core.node.ready();
      let leaderTerm: number | null = null;
      if (ready.softState) {
        if (ready.softState.role !== this.role) {
          this.role = ready.softState.role;
          const term = this.core.node.raft.term;
          this.env.trace(
            `${this.id} becomes ${this.role} (term ${term}, leader ${ready.softState.leader ?? '-'})`,
          );
          if (this.role === 'leader') {
            leaderTerm = term;
            this.env.checker.onLeader(this.id, term);
          }
        }
      }
      const inflight: InflightReady = {
        ready,
        persistAt: this.env.now + this.env.diskLatency(),
        sent: false,
        leaderTerm,
      };
      this.inflight = inflight;
      // A leader's appends leave while its write is in flight, as the driver sends them.
      for (const m of ready.messagesBeforePersist) this.env.send(this, m);
      if (this.env.hostOrder === 'sendThenPersist') {
        this.sendAll(ready);
        inflight.sent = true;
      }
      if (this.env.crashPoint(this, ready, inflight.sent ? 'after sending, before saving' : 'before saving'))
        return;
    }
    this.env.checker.fail('host-error', `${this.id}: the core kept producing Readys without settling`);
  }

  private finish(inflight: InflightReady): void {
    const { ready } = inflight;
    // 1. Persist: one atomic synced batch, then mirror it into the core's storage.
    const before = { ...this.disk.hardState };
    let effect: SaveEffect;
    try {
      effect = this.disk.save({
        hardState: ready.hardState,
        entries: ready.entries,
        snapshot: ready.snapshot,
      });
    } catch (err) {
      if (!(err instanceof LogStoreInvariantError)) throw err;
      this.env.checker.fail('log-store', `${this.id}'s log store refused a Ready: ${err.message}`);
    }
    this.env.checker.onSave(this.id, before, this.disk, effect);
    appendToStorage(this.core, ready);
    if (inflight.leaderTerm !== null)
      this.env.checker.checkLeaderLog(this.id, inflight.leaderTerm, this.disk);
    // 2. Send.
    if (!inflight.sent) {
      if (this.env.crashPoint(this, ready, 'after saving, before sending')) return;
      this.sendAll(ready);
      inflight.sent = true;
      if (this.env.crashPoint(this, ready, 'after sending, before applying')) return;
    }
    // 3. Apply.
    if (ready.snapshot) {
      this.sm = SimStateMachine.restore(ready.snapshot.data);
      this.confState = cloneSnapshot(ready.snapshot).metadata.confState;
      this.env.checker.onRestore(this.id, this.sm.applied, this.sm.digest);
      this.env.trace(
        `${this.id} installs snapshot ${ready.snapshot.metadata.index}@${ready.snapshot.metadata.term}`,
      );
    }
    for (const e of ready.committedEntries) {
      if (e.index !== this.sm.applied + 1) {
        this.env.checker.fail(
          'state-machine-safety',
          `${this.id} was handed entry ${e.index} to apply after ${this.sm.applied}`,
        );
      }
      this.sm.apply(e);
      this.env.checker.onApply(this.id, e, this.sm.digest, this.disk.hardState.commit);
      if (e.type === 'confChange') {
        const change = JSON.parse(e.data) as ConfChange;
        this.confState = applyConfChange(this.core, change);
        this.env.trace(`${this.id} applies conf change ${e.index}: ${change.type} ${change.nodeId}`);
        this.env.onConfApplied(this, change, this.confState);
      }
    }
    for (const rs of ready.readStates) {
      const r = this.reads.get(rs.context);
      if (r && r.readIndex === null) r.readIndex = rs.index;
    }
    this.serveReads();
    // 4. Advance.
    this.core.node.advance();
  }

  private serveReads(): void {
    for (const [ctx, r] of this.reads) {
      if (r.readIndex === null || this.sm.applied < r.readIndex) continue;
      this.reads.delete(ctx);
      this.env.checker.onReadServed(this.id, ctx, r.required, this.sm.applied, r.readIndex);
      this.env.trace(
        `${this.id} serves read ${ctx} at applied ${this.sm.applied} (read index ${r.readIndex}, needs ${r.required})`,
      );
    }
  }

  private sendAll(ready: Ready): void {
    for (const m of ready.messages) this.env.send(this, m);
  }
}
