// The leader's down verdicts. Silence is measured by WorkerLiveness (in memory, per manager); the
// verdict itself is a committed `markNodeState down`, so every manager agrees and a new leader
// inherits it. A new leader keeps what it heard as a follower (placement needs it at once) but
// counts silence toward a verdict only from its own start (WorkerLiveness.downSilenceMs): every
// worker gets one full down timeout from that moment, as this leader observes it, before being
// condemned, so a failover never condemns a worker that could reach the old leader.

import type { Logger } from '../logging.ts';
import type { NodeState } from '../metadata/commands.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import type { RaftAccess } from './imageService.ts';
import type { RepairMetrics } from './repairMetrics.ts';
import type { WorkerLiveness } from './workerLiveness.ts';

export interface FailureDetectorDeps {
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  liveness: WorkerLiveness;
  log: Logger;
  metrics?: RepairMetrics;
  downAfterMs: number;
  /** How often the node table is checked; default a tenth of the down timeout, within 50..1000 ms. */
  checkIntervalMs?: number;
  now?: () => number;
  /** Told of each down verdict once it is committed (the repair loop starts on it at once). */
  onCondemned?: (nodeId: string) => void;
}

/**
 * States a silent worker is condemned from. Not `draining`: repair already moves everything off a
 * draining worker, and a silent one is no copy source (WorkerLiveness.isServing); marking it down
 * would turn it `up` again when it returned, forgetting the operator's drain.
 */
const CONDEMNABLE: ReadonlySet<NodeState> = new Set<NodeState>(['up', 'suspect']);

export class FailureDetector {
  private timer: NodeJS.Timeout | null = null;
  private leading = false;
  private checking = false;
  private readonly now: () => number;

  constructor(private readonly deps: FailureDetectorDeps) {
    this.now = deps.now ?? Date.now;
  }

  get intervalMs(): number {
    return this.deps.checkIntervalMs ?? Math.min(1_000, Math.max(50, Math.floor(this.deps.downAfterMs / 10)));
  }

  start(): void {
    this.timer = setInterval(() => void this.check(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One check; exposed for tests. Returns the nodes condemned by this call. */
  async check(): Promise<string[]> {
    if (this.checking) return [];
    const { raft, liveness, log } = this.deps;
    if (!raft.isLeader()) {
      this.leading = false;
      return [];
    }
    if (!this.leading) {
      // A follower's observations never condemn on their own: the down clock starts now.
      this.leading = true;
      liveness.startLeading();
      log.info({ event: 'failure.watching' }, 'leading: every worker gets a full down timeout from now');
      return [];
    }
    this.checking = true;
    const condemned: string[] = [];
    for (const nodeId of liveness.abandonSilentCopies())
      log.warn(
        { event: 'upload.copies_abandoned', nodeId },
        `worker ${nodeId} went silent: the copies being sent to it go elsewhere`,
      );
    try {
      for (const node of await this.deps.metadata.listNodes()) {
        if (!CONDEMNABLE.has(node.state)) continue;
        const silence = liveness.downSilenceMs(node.nodeId);
        if (silence <= this.deps.downAfterMs) continue;
        if (!raft.isLeader()) break;
        const result = await proposeCommand(raft, {
          type: 'markNodeState',
          nodeId: node.nodeId,
          state: 'down',
          // A drain committed since this read must not be overwritten by the verdict.
          expected: node.state,
          at: this.now(),
        });
        if (!result.ok) continue;
        condemned.push(node.nodeId);
        this.deps.metrics?.nodesMarkedDown.inc();
        this.deps.onCondemned?.(node.nodeId);
        log.warn(
          { event: 'failure.node_down', nodeId: node.nodeId, silenceMs: silence, previous: result.previous },
          `worker ${node.nodeId} silent for ${silence} ms: marked down`,
        );
      }
    } catch (err) {
      log.warn({ event: 'failure.check_failed', err }, 'down verdict not committed; next check retries');
    } finally {
      this.checking = false;
    }
    return condemned;
  }
}
