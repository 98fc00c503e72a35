// The simulated world: nodes, the network between them, virtual time, and the operations a
// scenario performs on it (client traffic, crashes, partitions, membership changes). Everything
// random comes from PRNG streams forked from the run's seed.

import {
  type ConfChange,
  type ConfState,
  MESSAGE_TYPES,
  type Message,
  type MessageType,
  type NodeId,
  type Ready,
  type Status,
} from '../../src/consensus/types.ts';
import { Checker } from './checker.ts';
import type { CoreVariant } from './coreAdapter.ts';
import { chainDigest, TraceDigest } from './digest.ts';
import { Prng } from './prng.ts';
import { type InFlight, type NetworkFaults, SimNetwork } from './simNetwork.ts';
import { type CrashPoint, type HostEnv, type HostOrder, SimNode } from './simNode.ts';

export interface ClusterOptions {
  seed: number;
  voters: number;
  hostOrder: HostOrder;
  coreVariant: CoreVariant;
  electionTick: number;
  heartbeatTick: number;
  /** Flow control: a small MsgApp byte budget splits the log into many messages. */
  maxSizePerMsg: number;
  maxInflightMsgs: number;
  faults: NetworkFaults;
  /** A synced write takes 0..diskLatencyMax ticks. */
  diskLatencyMax: number;
  /**
   * Chance that a synced write stalls for one to three election timeouts (a disk flushing its
   * cache, a saturated device): the node keeps receiving meanwhile, so a new leader's entries can
   * replace ones whose write is still in flight.
   */
  diskStallRate: number;
  /**
   * Chance of a crash at a point inside the handling of a Ready that changes the hard state or
   * answers a vote or an append (a tenth of it for other Readys): where a host that gets the
   * order wrong loses a vote or an acknowledged entry.
   */
  readyCrashRate: number;
  /** Keep the readable trace (the digest of it is always kept). */
  verbose: boolean;
}

const MAX_DELIVERIES_PER_TICK = 5_000;

/** Index 1 of every log: the bootstrap snapshot that holds the initial membership. */
export const BOOTSTRAP_DIGEST = chainDigest(0, { index: 1, term: 1, type: 'normal', data: '' });

export class Cluster implements HostEnv {
  now = 0;
  readonly checker = new Checker();
  readonly nodes = new Map<NodeId, SimNode>();
  readonly network: SimNetwork;
  private readonly lines: string[] = [];
  readonly digest = new TraceDigest();
  readonly hostOrder: HostOrder;
  readonly coreVariant: CoreVariant;
  readonly electionTick: number;
  readonly heartbeatTick: number;
  readonly maxSizePerMsg: number;
  readonly maxInflightMsgs: number;
  /** Drives the world's choices (which node crashes, what partition...). */
  readonly rng: Prng;
  private readonly diskRng: Prng;
  private readonly nodeSeeds: Prng;
  private readonly deferred: Array<() => void> = [];
  private nextNodeNumber = 1;
  snapshotsSent = 0;
  crashes = 0;
  readyCrashRate: number;
  diskStallRate: number;
  private readonly restartAt = new Map<SimNode, number>();

  constructor(readonly options: ClusterOptions) {
    const root = new Prng(options.seed);
    this.rng = root.fork(1);
    this.diskRng = root.fork(2);
    this.nodeSeeds = root.fork(3);
    this.network = new SimNetwork(root.fork(4), options.faults);
    this.hostOrder = options.hostOrder;
    this.coreVariant = options.coreVariant;
    this.electionTick = options.electionTick;
    this.heartbeatTick = options.heartbeatTick;
    this.maxSizePerMsg = options.maxSizePerMsg;
    this.maxInflightMsgs = options.maxInflightMsgs;
    this.readyCrashRate = options.readyCrashRate;
    this.diskStallRate = options.diskStallRate;
  }

  /** Boot `voters` nodes that share a bootstrap snapshot at index 1 holding the membership. */
  bootstrap(): void {
    const ids: NodeId[] = [];
    for (let i = 0; i < this.options.voters; i++) ids.push(`n${this.nextNodeNumber++}`);
    const data = JSON.stringify({ applied: 1, digest: BOOTSTRAP_DIGEST, writes: 0 });
    for (const id of ids) {
      const node = new SimNode(id, this);
      node.disk.save({
        snapshot: { metadata: { index: 1, term: 1, confState: { voters: [...ids], learners: [] } }, data },
        hardState: { term: 1, vote: null, commit: 1 },
      });
      this.nodes.set(id, node);
    }
    for (const id of ids) this.startNode(this.nodes.get(id)!);
  }

  // --- HostEnv ---

  diskLatency(): number {
    if (this.diskStallRate > 0 && this.diskRng.chance(this.diskStallRate)) {
      return this.diskRng.range(this.electionTick, 3 * this.electionTick);
    }
    return this.options.diskLatencyMax === 0 ? 0 : this.diskRng.int(this.options.diskLatencyMax + 1);
  }

  trace(line: string): void {
    const text = `${this.now} ${line}`;
    this.digest.add(text);
    if (this.options.verbose) this.lines.push(text);
  }

  send(from: SimNode, msg: Message): void {
    if (msg.type === 'MsgVoteResp' && !msg.reject)
      this.checker.onVoteGranted(msg.from, msg.to, msg.term, from.disk);
    if (msg.type === 'MsgAppResp' && !msg.reject) this.checkAck(from, msg);
    if (msg.type === 'MsgSnap') this.snapshotsSent++;
    const dropped = this.network.send(msg, this.now, from.incarnation);
    // Messages go into the digest as numbers (the hot path), so quiet and verbose runs hash alike.
    this.digest.addNumbers(messageFingerprint(this.now, msg, dropped));
    if (this.options.verbose)
      this.lines.push(`${this.now} ${describe(msg)}${dropped ? ` (${dropped})` : ''}`);
    if (dropped === 'partition') {
      // A real transport learns that the peer is unreachable from the failed connection.
      this.defer(() => this.reportToSender(msg, from.incarnation, false, true));
    } else if (dropped === 'drop' && msg.type === 'MsgSnap') {
      this.defer(() => this.reportToSender(msg, from.incarnation, false, false));
    }
  }

  /** The leader's own log is authoritative in its term: the ack must match it. */
  private checkAck(from: SimNode, msg: Message): void {
    const leader = this.nodes.get(msg.to);
    const raft = leader?.alive ? leader.core.node.raft : undefined;
    const leaderTerm =
      raft && raft.role === 'leader' && raft.term === msg.term
        ? raft.raftLog.term(msg.index ?? 0)
        : undefined;
    this.checker.onAppendAck(from.id, from.disk, msg.term, msg.index ?? 0, msg.to, leaderTerm);
  }

  onConfApplied(_node: SimNode, change: ConfChange, _confState: ConfState): void {
    if (change.type !== 'remove') return;
    const target = this.nodes.get(change.nodeId);
    // Once a removal is committed the operator shuts the removed manager down for good.
    if (target && !target.retired) {
      target.retired = true;
      this.defer(() => this.retire(target));
    }
  }

  // --- time ---

  /** One tick of virtual time: finish due disk writes, tick every clock, deliver due messages. */
  runTick(): void {
    this.now++;
    this.checker.now = this.now;
    for (const node of this.liveNodes()) node.pump();
    this.drainDeferred();
    for (const node of this.liveNodes()) {
      node.tick();
      this.drainDeferred();
      if (node.alive) node.observe();
    }
    const { deliver, cut } = this.network.takeDue(this.now);
    if (deliver.length > MAX_DELIVERIES_PER_TICK) {
      // A ping-pong that never converges, multiplied by duplication, grows without bound; a real
      // cluster would melt down, and the run would never finish.
      this.checker.fail('liveness', `message storm: ${deliver.length} messages due in one tick`);
    }
    for (const f of deliver) this.deliver(f);
    for (const f of cut) {
      if (f.msg.type === 'MsgSnap') this.reportToSender(f.msg, f.senderIncarnation, false, false);
      this.drainDeferred();
    }
    for (const node of this.liveNodes()) node.expireReads(this.now - 20 * this.electionTick);
  }

  private deliver(f: InFlight): void {
    const dest = this.nodes.get(f.msg.to);
    if (!dest?.alive) {
      if (f.msg.type === 'MsgSnap') this.reportToSender(f.msg, f.senderIncarnation, false, false);
      this.drainDeferred();
      return;
    }
    dest.step(f.msg);
    if (f.msg.type === 'MsgSnap') this.reportToSender(f.msg, f.senderIncarnation, true, false);
    this.drainDeferred();
    if (dest.alive) dest.observe();
  }

  private reportToSender(msg: Message, incarnation: number, ok: boolean, unreachable: boolean): void {
    const sender = this.nodes.get(msg.from);
    if (!sender?.alive || sender.incarnation !== incarnation) return;
    if (msg.type === 'MsgSnap') sender.reportSnapshot(msg.to, ok);
    if (unreachable) sender.reportUnreachable(msg.to);
  }

  private defer(fn: () => void): void {
    this.deferred.push(fn);
  }

  private drainDeferred(): void {
    for (let guard = 0; this.deferred.length > 0; guard++) {
      if (guard > 10_000) this.checker.fail('host-error', 'deferred host work did not settle');
      this.deferred.shift()!();
    }
  }

  // --- nodes ---

  liveNodes(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.nodes.values()) if (n.alive) out.push(n);
    return out;
  }

  /** Crashed (not retired) nodes. */
  downNodes(): SimNode[] {
    const out: SimNode[] = [];
    for (const n of this.nodes.values()) if (!n.alive && !n.retired) out.push(n);
    return out;
  }

  startNode(node: SimNode): void {
    node.start(this.nodeSeeds.fork(this.nodeSeeds.int(1 << 30)));
    this.drainDeferred();
  }

  /**
   * At most a minority of the founding voters is down at once, so the cluster can progress; a
   * single voter may crash (with nothing else down), as its crashes are what that setup tests.
   */
  mayCrash(): boolean {
    const allowed = this.options.voters === 1 ? 1 : Math.floor((this.options.voters - 1) / 2);
    return this.downNodes().length < allowed;
  }

  /** Power loss now; the node comes back after a short blip or a long outage. */
  crash(node: SimNode, where = ''): void {
    this.trace(`${node.id} crashes${where}${node.persisting ? ' (a Ready not yet saved is lost)' : ''}`);
    node.crash();
    this.crashes++;
    const downFor = this.rng.chance(0.5) ? this.rng.range(1, 5) : this.rng.range(5, 12 * this.electionTick);
    this.restartAt.set(node, this.now + downFor);
  }

  crashPoint(node: SimNode, ready: Ready, point: CrashPoint): boolean {
    if (this.readyCrashRate === 0 || !this.mayCrash()) return false;
    const risky =
      ready.hardState !== undefined ||
      ready.messages.some((m) => m.type === 'MsgVoteResp' || m.type === 'MsgAppResp');
    if (!this.rng.chance(risky ? this.readyCrashRate : this.readyCrashRate / 10)) return false;
    this.crash(node, ` ${point}`);
    return true;
  }

  restartDue(): void {
    for (const [node, at] of this.restartAt) {
      if (this.now < at) continue;
      this.restartAt.delete(node);
      if (!node.retired && !node.alive) this.restart(node);
    }
  }

  restart(node: SimNode): void {
    this.restartAt.delete(node);
    this.trace(
      `${node.id} restarts from disk (term ${node.disk.hardState.term}, commit ${node.disk.hardState.commit}, snapshot ${node.disk.snapshotIndex}, last ${node.disk.lastIndex})`,
    );
    this.startNode(node);
  }

  /** The live node claiming leadership in the highest term, with its status. */
  leader(): { node: SimNode; status: Status } | null {
    let best: { node: SimNode; status: Status } | null = null;
    for (const node of this.liveNodes()) {
      const raft = node.core.node.raft;
      if (raft.role === 'leader' && (!best || raft.term > best.status.term))
        best = { node, status: node.core.node.status() };
    }
    return best;
  }

  /** A fresh, empty manager that will join as a learner. */
  addNode(): SimNode {
    const node = new SimNode(`n${this.nextNodeNumber++}`, this);
    this.nodes.set(node.id, node);
    this.trace(`${node.id} boots empty`);
    this.startNode(node);
    return node;
  }

  retire(node: SimNode): void {
    node.retired = true;
    if (node.alive) node.crash();
    this.trace(`${node.id} retired`);
  }

  drain(): void {
    this.drainDeferred();
  }

  get traceLines(): string[] {
    return this.lines;
  }
}

const MESSAGE_CODES = new Map<MessageType, number>(MESSAGE_TYPES.map((t, i) => [t, i + 1]));

/** The fields of a message that a replay must reproduce, as numbers for TraceDigest.addNumbers. */
export function messageFingerprint(now: number, m: Message, dropped: string | null): number[] {
  const code = MESSAGE_CODES.get(m.type) ?? 0;
  const first = m.entries?.[0]?.index ?? 0;
  return [
    now,
    code,
    nodeNumber(m.from),
    nodeNumber(m.to),
    m.term,
    m.index ?? -1,
    m.logTerm ?? -1,
    first,
    m.entries?.length ?? 0,
    m.commit ?? -1,
    m.reject ? 1 : 0,
    m.snapshot?.metadata.index ?? -1,
    dropped === null ? 0 : dropped.length,
  ];
}

function nodeNumber(id: string): number {
  return Number(id.slice(1));
}

export function describe(m: Message): string {
  let s = `${m.from}>${m.to} ${m.type} t${m.term}`;
  if (m.index !== undefined) s += ` i${m.index}`;
  if (m.logTerm !== undefined) s += ` lt${m.logTerm}`;
  if (m.entries && m.entries.length > 0)
    s += ` e${m.entries[0]!.index}..${m.entries[m.entries.length - 1]!.index}`;
  if (m.commit !== undefined) s += ` c${m.commit}`;
  if (m.reject) s += ` reject(hint ${m.rejectHint ?? '-'})`;
  if (m.snapshot) s += ` snap${m.snapshot.metadata.index}@${m.snapshot.metadata.term}`;
  if (m.context) s += ` ctx=${m.context}`;
  return s;
}
