// Every `imgvault drill` in a short form, run as the CLI a user runs (a child process that starts
// and stops a cluster of its own), read through its --json report: no acknowledged image lost, no
// deleted image read back, no 5xx but 503, and recovery within the drill's bounds.

import { describe, expect, it } from 'vitest';
import type { DrillReport } from '../../src/cli/drill/drillReport.ts';
import { DRILL_NAMES } from '../../src/cli/drill/drillScenarios.ts';
import { runCli } from './imageCluster.ts';

const WORKER_DRILLS = new Set(['worker-kill', 'worker-return']);
const LEADER_DRILLS = new Set(['leader-kill', 'leader-pause']);

async function drill(name: string): Promise<DrillReport> {
  const run = await runCli(
    ['drill', name, '--json', '--duration', '3', '--clients', '2', '--recovery-timeout', '60'],
    170_000,
  );
  const line = run.stdout.trim().split('\n').at(-1) ?? '';
  let report: DrillReport;
  try {
    report = JSON.parse(line) as DrillReport;
  } catch {
    throw new Error(`drill ${name} printed no report (exit ${run.code}): ${run.stdout}\n${run.stderr}`);
  }
  expect(report, JSON.stringify(report)).toMatchObject({ drill: name, ok: true, lost: 0, staleReads: 0 });
  expect(run.code).toBe(0);
  return report;
}

describe('imgvault drill', () => {
  for (const name of DRILL_NAMES) {
    it(`${name}: every acknowledged image readable byte for byte from every manager, no deleted one`, async () => {
      const report = await drill(name);
      expect(report.imagesChecked).toBeGreaterThan(0);
      expect(report.managersChecked.length).toBeGreaterThanOrEqual(2);
      expect(report.writeUnavailableMs).not.toBeNull();
      if (WORKER_DRILLS.has(name)) expect(report.fullReplicationMs).toBeGreaterThan(0);
      else expect(report.fullReplicationMs).toBeNull();
      if (LEADER_DRILLS.has(name)) {
        expect(report.noLeaderMs).toBeGreaterThan(0);
        expect(report.firstCommitMs).not.toBeNull();
      }
      if (name === 'manager-replace') expect(report.managersChecked).toContain('m4');
      if (name === 'leader-pause') expect(report.managersChecked).toHaveLength(3);
    }, 180_000);
  }
});
