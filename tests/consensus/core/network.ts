// A tiny synchronous in-memory cluster for the core's tests: RaftCore instances over MemoryStorage,
// messages delivered in FIFO order, with links that can be cut. Each node follows the host loop of
// rawNode.ts (persist into storage, send, apply, advance). The state machine is the list of applied
// commands, and a snapshot is that list as JSON.

import type { RaftConfig } from '../../../src/consensus/api.ts';
import {
  bootstrapSnapshot,
  MemoryStorage,
  parseConfChange,
  RaftCore,
  type RaftFactory,
} from '../../../src/consensus/core/index.ts';
import type {
  ConfState,
  Entry,
  Message,
  NodeId,
  ReadState,
  Ready,
  Snapshot,
} from '../../../src/consensus/types.ts';

/** mulberry32: a small seeded PRNG; the tests need determinism, not quality. */
export function seededRandom(seed: number): (n: number) => number {
  let a = seed >>> 0;
  return (n: number) => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    return Math.floor(u * n);
  };
}

export interface TestNode {
  id: NodeId;
  core: RaftCore;
  storage: MemoryStorage;
  /** Commands applied, in order (the leader's empty no-ops are skipped). */
  applied: string[];
  appliedIndex: number;
  confState: ConfState;
  readStates: ReadState[];
}

/**
 * A member's storage whose log holds one entry per element of `terms` from index 1 (the layout of
 * the paper's figures), with the membership `voters` and a hard state at the log's last term.
 */
export function storageWithLog(voters: NodeId[], terms: number[], learners: NodeId[] = []): MemoryStorage {
  const storage = new MemoryStorage({
    metadata: { index: 0, term: 0, confState: { voters, learners } },
    data: '',
  });
  storage.append(terms.map((term, i) => ({ term, index: i + 1, type: 'normal', data: `e${i + 1}` })));
  storage.setHardState({ term: terms[terms.length - 1] ?? 0, vote: null, commit: 0 });
  return storage;
}

export interface NetworkOptions {
  /** Per-node storage; nodes without one start from the bootstrap snapshot of all ids. */
  storage?: (id: NodeId) => MemoryStorage | undefined;
  electionTick?: number;
  heartbeatTick?: number;
  preVote?: boolean;
  checkQuorum?: boolean;
  seed?: number;
  factory?: RaftFactory;
  config?: Partial<RaftConfig>;
}

export class Network {
  readonly nodes = new Map<NodeId, TestNode>();
  /** Messages sent and not yet delivered. */
  queue: Message[] = [];
  /** Every message ever delivered (or dropped), for assertions. */
  readonly trace: Message[] = [];
  private readonly cut = new Set<string>();
  /** Return false to drop a message. */
  filter: ((m: Message) => boolean) | null = null;
  private seed: number;

  constructor(
    ids: NodeId[],
    readonly opts: NetworkOptions = {},
  ) {
    this.seed = opts.seed ?? 1;
    const snap = bootstrapSnapshot(ids);
    for (const id of ids) this.addNode(id, opts.storage?.(id) ?? new MemoryStorage(snap));
  }

  /** Adds a node with the given storage (default: empty, as for a member joining later). */
  addNode(id: NodeId, storage: MemoryStorage = new MemoryStorage(), applied?: number): TestNode {
    const o = this.opts;
    const config: RaftConfig = {
      id,
      storage,
      electionTick: o.electionTick ?? 10,
      heartbeatTick: o.heartbeatTick ?? 1,
      random: seededRandom(this.seed++),
      preVote: o.preVote ?? true,
      checkQuorum: o.checkQuorum ?? true,
      ...o.config,
    };
    if (applied !== undefined) config.applied = applied;
    const core = new RaftCore(config, o.factory);
    const snap = storage.snapshot();
    const node: TestNode = {
      id,
      core,
      storage,
      applied: snap.data === '' ? [] : (JSON.parse(snap.data) as string[]),
      appliedIndex: applied ?? snap.metadata.index,
      confState: core.status().confState,
      readStates: [],
    };
    this.nodes.set(id, node);
    return node;
  }

  node(id: NodeId): TestNode {
    const n = this.nodes.get(id);
    if (!n) throw new Error(`no node ${id}`);
    return n;
  }

  core(id: NodeId): RaftCore {
    return this.node(id).core;
  }

  /** Simulates a crash and restart: the core is rebuilt from what its storage holds. */
  restart(id: NodeId): TestNode {
    const old = this.node(id);
    this.queue = this.queue.filter((m) => m.to !== id && m.from !== id);
    const node = this.addNode(id, old.storage, old.appliedIndex);
    node.applied = old.applied;
    return node;
  }

  isolate(id: NodeId): void {
    for (const other of this.nodes.keys()) {
      if (other === id) continue;
      this.cut.add(`${id}>${other}`);
      this.cut.add(`${other}>${id}`);
    }
  }

  cutLink(a: NodeId, b: NodeId): void {
    this.cut.add(`${a}>${b}`);
    this.cut.add(`${b}>${a}`);
  }

  heal(): void {
    this.cut.clear();
  }

  /** Runs one node's host loop once: persist, queue messages, apply, advance. */
  handleReady(id: NodeId): Ready | null {
    const n = this.node(id);
    if (!n.core.hasReady()) return null;
    const rd = n.core.ready();
    if (rd.snapshot) n.storage.applySnapshot(rd.snapshot);
    n.storage.append(rd.entries);
    if (rd.hardState) n.storage.setHardState(rd.hardState);
    this.queue.push(...rd.messagesBeforePersist, ...rd.messages);
    if (rd.snapshot) this.applySnapshot(n, rd.snapshot);
    for (const e of rd.committedEntries) this.applyEntry(n, e);
    n.readStates.push(...rd.readStates);
    n.core.advance();
    return rd;
  }

  private applySnapshot(n: TestNode, s: Snapshot): void {
    n.applied = s.data === '' ? [] : (JSON.parse(s.data) as string[]);
    n.appliedIndex = s.metadata.index;
    n.confState = s.metadata.confState;
  }

  private applyEntry(n: TestNode, e: Entry): void {
    if (e.index !== n.appliedIndex + 1) throw new Error(`${n.id} applies ${e.index} after ${n.appliedIndex}`);
    n.appliedIndex = e.index;
    if (e.type === 'confChange') {
      const cc = parseConfChange(e.data);
      if (cc) n.confState = n.core.applyConfChange(cc);
    } else if (e.data !== '') {
      n.applied.push(e.data);
    }
  }

  /** The host takes a snapshot of its state machine at its applied index and compacts the log. */
  compact(id: NodeId, keep = 0): Snapshot {
    const n = this.node(id);
    const snap = n.storage.createSnapshot(n.appliedIndex, n.confState, JSON.stringify(n.applied));
    n.storage.compact(n.appliedIndex - keep);
    return snap;
  }

  private deliverable(m: Message): boolean {
    if (!this.nodes.has(m.to)) return false;
    if (this.cut.has(`${m.from}>${m.to}`)) return false;
    return this.filter === null || this.filter(m);
  }

  /** Delivers one message (or drops it); snapshot senders are told how it went, as a host would. */
  deliver(m: Message): void {
    this.trace.push(m);
    const ok = this.deliverable(m);
    if (ok) this.node(m.to).core.step(m);
    if (m.type === 'MsgSnap') this.nodes.get(m.from)?.core.reportSnapshot(m.to, ok);
  }

  /** Runs host loops and delivers messages until nothing is left to do. */
  stabilize(maxSteps = 100_000): void {
    for (let step = 0; step < maxSteps; step++) {
      let busy = false;
      for (const id of this.nodes.keys()) if (this.handleReady(id)) busy = true;
      const batch = this.queue;
      this.queue = [];
      for (const m of batch) this.deliver(m);
      if (!busy && batch.length === 0) return;
    }
    throw new Error('network did not stabilize');
  }

  tick(id: NodeId, times = 1): void {
    for (let i = 0; i < times; i++) {
      this.core(id).tick();
      this.stabilize();
    }
  }

  tickAll(times = 1): void {
    for (let i = 0; i < times; i++) {
      for (const n of this.nodes.values()) n.core.tick();
      this.stabilize();
    }
  }

  campaign(id: NodeId): void {
    this.core(id).campaign();
    this.stabilize();
  }

  propose(id: NodeId, data: string) {
    const err = this.core(id).propose(data);
    this.stabilize();
    return err;
  }

  leaders(): NodeId[] {
    return [...this.nodes.values()].filter((n) => n.core.status().role === 'leader').map((n) => n.id);
  }

  /** Collects everything the node wants done without delivering its messages. */
  drain(id: NodeId): Message[] {
    const out: Message[] = [];
    for (let rd = this.handleReady(id); rd; rd = this.handleReady(id)) {
      out.push(...rd.messagesBeforePersist, ...rd.messages);
    }
    this.queue = this.queue.filter((m) => !out.includes(m));
    return out;
  }
}
