// The drill's report: figures computed from the ledger and the leader samples (pure), the verdict
// (drillFailed) and its two renderings, one JSON object for CI and a few lines for a person.

import type { Outcome, Problem } from './drillLedger.ts';
import type { CheckResult } from './imageChecker.ts';

export interface DrillReport {
  drill: string;
  /** False on any loss, stale read, 5xx other than 503, or a recovery that did not come in time. */
  ok: boolean;
  fault: string;
  /** ms since the drill's start. */
  faultAt: number;
  imagesChecked: number;
  deletesChecked: number;
  managersChecked: string[];
  lost: number;
  staleReads: number;
  noLeaderMs: number;
  /** Last acknowledged upload before the fault to the first after it. */
  writeUnavailableMs: number | null;
  /** Fault to the first acknowledged upload (201) after it. */
  firstUploadMs: number | null;
  /** Fault to the first entry a leader of a new term committed (drills that change the leader). */
  firstCommitMs: number | null;
  failedByStatus: Record<string, number>;
  /** Fault to every object at 2 replicas on up workers (worker drills), else null. */
  fullReplicationMs: number | null;
  requests: Record<'upload' | 'read' | 'delete', { ok: number; failed: number }>;
  notes: string[];
  problems: Problem[];
  error?: string;
}

/** Status keys that fail a drill: a 5xx other than 503 (503 with Retry-After is how "not now" reads). */
export function unexpectedStatuses(failedByStatus: Record<string, number>): string[] {
  return Object.keys(failedByStatus).filter((k) => /^5\d\d$/.test(k) && k !== '503');
}

export function drillFailed(
  r: Pick<DrillReport, 'lost' | 'staleReads' | 'failedByStatus' | 'error'>,
): boolean {
  return r.lost > 0 || r.staleReads > 0 || unexpectedStatuses(r.failedByStatus).length > 0 || !!r.error;
}

export function failedByStatus(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const o of outcomes) if (!o.ok) counts[String(o.status)] = (counts[String(o.status)] ?? 0) + 1;
  return counts;
}

export function requestCounts(outcomes: Outcome[]): DrillReport['requests'] {
  const counts = { upload: { ok: 0, failed: 0 }, read: { ok: 0, failed: 0 }, delete: { ok: 0, failed: 0 } };
  for (const o of outcomes) counts[o.op][o.ok ? 'ok' : 'failed']++;
  return counts;
}

/** The write-unavailable window and the fault to first-201 time, from the upload outcomes. */
export function writeWindow(
  outcomes: Outcome[],
  faultAt: number,
): { writeUnavailableMs: number | null; firstUploadMs: number | null } {
  const uploads = outcomes.filter((o) => o.op === 'upload' && o.ok).map((o) => o.at);
  const before = uploads.filter((t) => t <= faultAt);
  const after = uploads.find((t) => t > faultAt);
  if (after === undefined) return { writeUnavailableMs: null, firstUploadMs: null };
  const lastBefore = before.length > 0 ? before[before.length - 1]! : faultAt;
  return { writeUnavailableMs: Math.round(after - lastBefore), firstUploadMs: Math.round(after - faultAt) };
}

export function checkFields(check: CheckResult) {
  return {
    imagesChecked: check.imagesChecked,
    deletesChecked: check.deletesChecked,
    lost: check.lost,
    staleReads: check.staleReads,
    problems: check.problems.slice(0, 50),
  };
}

const ms = (v: number | null) => (v === null ? 'n/a' : `${v} ms`);

export function formatReport(r: DrillReport): string {
  const failed = Object.entries(r.failedByStatus)
    .map(([k, n]) => `${k} x${n}`)
    .join(', ');
  const lines = [
    `drill ${r.drill}: ${r.ok ? 'PASS' : 'FAIL'}`,
    `  fault: ${r.fault} (${(r.faultAt / 1000).toFixed(2)} s into the drill)`,
    `  time without a leader: ${ms(r.noLeaderMs)}`,
    `  write-unavailable window: ${ms(r.writeUnavailableMs)} (fault to first 201: ${ms(r.firstUploadMs)})`,
    `  fault to first commit of a new leader: ${ms(r.firstCommitMs)}`,
    `  failed requests: ${failed || 'none'}`,
    `  requests: uploads ${r.requests.upload.ok} ok / ${r.requests.upload.failed} failed, reads ${r.requests.read.ok} / ${r.requests.read.failed}, deletes ${r.requests.delete.ok} / ${r.requests.delete.failed}`,
    `  time to full replication: ${ms(r.fullReplicationMs)}`,
    `  images checked: ${r.imagesChecked} (and ${r.deletesChecked} deletes) on ${r.managersChecked.join(', ') || 'no manager'}`,
    `  images lost: ${r.lost}; stale reads: ${r.staleReads}`,
    ...r.notes.map((n) => `  note: ${n}`),
    ...r.problems.slice(0, 10).map((p) => `  problem: ${p.kind} ${p.id} at ${p.where} (${p.status})`),
  ];
  const bad = unexpectedStatuses(r.failedByStatus);
  if (bad.length > 0) lines.push(`  unexpected server errors: ${bad.join(', ')}`);
  if (r.error) lines.push(`  error: ${r.error}`);
  return lines.join('\n');
}
