// The driver's Prometheus series (docs/metrics.md, "Raft"). Gauges are read when scraped, from the
// node itself, so they cost nothing between scrapes; counters and histograms are fed by the loop.

import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Index } from '../types.ts';

/** What the gauges read, at scrape time. */
export interface NodeGauges {
  term(): number;
  commitIndex(): Index;
  appliedIndex(): Index;
  lastIndex(): Index;
  snapshotIndex(): Index;
  isLeader(): boolean;
  proposalsPending(): number;
  /** Bytes of the applied entries' data the log in memory holds (the byte budget's measure). */
  logMemoryBytes(): number;
}

export interface NodeMetrics {
  leaderChanges: Counter;
  saveSeconds: Histogram;
  readySeconds: Histogram;
  readyEntries: Histogram;
  entriesApplied: Counter;
  proposalsDropped: Counter<'reason'>;
  messagesRefused: Counter<'reason'>;
  compactionFailures: Counter<'kind'>;
}

const LATENCY_BUCKETS = [0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.5];
const BATCH_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256];

export function registerNodeMetrics(registry: Registry, read: NodeGauges): NodeMetrics {
  const gauge = (name: string, help: string, value: () => number) =>
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        this.set(value());
      },
    });
  gauge('imgvault_raft_term', 'Current Raft term', read.term);
  gauge('imgvault_raft_commit_index', 'Highest log index known committed', read.commitIndex);
  gauge('imgvault_raft_applied_index', 'Highest log index applied to the state machine', read.appliedIndex);
  gauge('imgvault_raft_last_index', 'Last index in the durable log', read.lastIndex);
  gauge('imgvault_raft_snapshot_index', 'Index of the latest snapshot', read.snapshotIndex);
  gauge('imgvault_raft_is_leader', '1 when this node is the leader', () => (read.isLeader() ? 1 : 0));
  gauge('imgvault_raft_proposals_pending', 'Proposals waiting to be applied', read.proposalsPending);
  gauge(
    'imgvault_raft_log_memory_bytes',
    'Bytes of applied entry data the log keeps in memory after its snapshot',
    read.logMemoryBytes,
  );
  return {
    messagesRefused: new Counter({
      name: 'imgvault_raft_messages_refused_total',
      help: 'Peer messages dropped before the Raft core, by reason (see messageFilter)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
    leaderChanges: new Counter({
      name: 'imgvault_raft_leader_changes_total',
      help: 'Times this node saw the leader change',
      registers: [registry],
    }),
    saveSeconds: new Histogram({
      name: 'imgvault_raft_save_seconds',
      help: 'Latency of one synced Ready write (entries + hard state)',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    readySeconds: new Histogram({
      name: 'imgvault_raft_ready_seconds',
      help: 'Duration of one whole Ready cycle (persist, send, apply)',
      buckets: LATENCY_BUCKETS,
      registers: [registry],
    }),
    readyEntries: new Histogram({
      name: 'imgvault_raft_ready_entries',
      help: 'New log entries in one Ready that wrote any (its synced write and append batch)',
      buckets: BATCH_BUCKETS,
      registers: [registry],
    }),
    entriesApplied: new Counter({
      name: 'imgvault_raft_entries_applied_total',
      help: 'Entries applied to the state machine',
      registers: [registry],
    }),
    compactionFailures: new Counter({
      name: 'imgvault_raft_compaction_failures_total',
      help: 'Log compactions that failed, by kind: snapshot (a state snapshot taken), truncate (no file); each is tried again later',
      labelNames: ['kind'] as const,
      registers: [registry],
    }),
    proposalsDropped: new Counter({
      name: 'imgvault_raft_proposals_dropped_total',
      help: 'Proposals answered with an error, by reason: queue_full, refused (by the core), timeout (may still commit)',
      labelNames: ['reason'] as const,
      registers: [registry],
    }),
  };
}
