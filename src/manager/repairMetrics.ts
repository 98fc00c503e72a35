// Prometheus metrics of failure handling: repair, rejoin reconciliation and draining. Registered
// on the manager's registry; only the leader moves them (followers report zeros and stale gauges
// are reset when leadership is lost, see placement/repair.ts).

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';

export class RepairMetrics {
  readonly started: Counter;
  readonly succeeded: Counter;
  readonly failed: Counter;
  readonly fallbacks: Counter;
  readonly bytesCopied: Counter;
  readonly underReplicated: Gauge;
  readonly unavailable: Gauge;
  readonly lost: Gauge;
  readonly lostCounted: Gauge;
  readonly foundLost: Counter;
  readonly oldestUnderReplicatedSeconds: Gauge;
  readonly duration: Histogram;
  readonly nodesMarkedDown: Counter;
  readonly reconcileDecisions: Counter<'decision'>;

  constructor(registry: Registry) {
    const registers = [registry];
    this.started = new Counter({
      name: 'imgvault_repairs_started_total',
      help: 'Repairs (one object copied to a new worker) started by the leader',
      registers,
    });
    this.succeeded = new Counter({
      name: 'imgvault_repairs_succeeded_total',
      help: 'Repairs whose copy landed and whose table change was committed',
      registers,
    });
    this.failed = new Counter({
      name: 'imgvault_repairs_failed_total',
      help: 'Repairs that found no target accepting the copy, or no commit; retried on the next pass',
      registers,
    });
    this.fallbacks = new Counter({
      name: 'imgvault_repair_fallbacks_total',
      help: 'Repair targets that failed and were replaced by another worker',
      registers,
    });
    this.bytesCopied = new Counter({
      name: 'imgvault_repair_bytes_copied_total',
      help: 'Bytes copied between workers by repair and draining',
      registers,
    });
    this.underReplicated = new Gauge({
      name: 'imgvault_objects_under_replicated',
      help: 'Objects with fewer than 2 replicas on up workers, as the last repair pass left them',
      registers,
    });
    this.unavailable = new Gauge({
      name: 'imgvault_objects_unavailable',
      help: 'Objects with no copy on a serving worker (their workers are down: the bytes may come back), as the leader found them',
      registers,
    });
    this.lost = new Gauge({
      name: 'imgvault_objects_lost',
      help: 'Objects whose every recorded copy is on a serving worker that holds none of it intact, as the leader found them',
      registers,
    });
    this.lostCounted = new Gauge({
      name: 'imgvault_objects_lost_counted',
      help: '1 once the leader has looked at every object since it took over, so imgvault_objects_lost counts all it can find; 0 before (the count is a lower bound)',
      registers,
    });
    this.foundLost = new Counter({
      name: 'imgvault_repair_objects_found_lost_total',
      help: 'Times the leader found an object with no copy left (every worker the record names answered it holds none intact)',
      registers,
    });
    this.oldestUnderReplicatedSeconds = new Gauge({
      name: 'imgvault_oldest_under_replicated_seconds',
      help: 'How long the oldest under-replicated object has been so (since its worker went down)',
      registers,
    });
    this.duration = new Histogram({
      name: 'imgvault_repair_duration_seconds',
      help: 'Time of one successful repair: copy between workers plus the commit',
      buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
      registers,
    });
    this.nodesMarkedDown = new Counter({
      name: 'imgvault_nodes_marked_down_total',
      help: 'Down verdicts committed by this manager while leader',
      registers,
    });
    this.reconcileDecisions = new Counter({
      name: 'imgvault_reconcile_decisions_total',
      help: 'Reconciliation decisions on the copies workers hold (rejoins, missing copies, strays past their grace), by kind',
      labelNames: ['decision'],
      registers,
    });
  }
}
