// A short chaos run on real processes, part of `npm test`: three managers and three workers behind
// loopback proxies, clients uploading, re-uploading, reading and deleting while the nemesis kills,
// pauses, partitions and fills disks (one manager and one worker at most), then the checks of
// docs/chaos.md. The seed is IMGVAULT_CHAOS_SEED or drawn at random; a failure names the replay
// command. Longer runs: `npm run chaos -- --seed S --minutes M`.

import { expect, it } from 'vitest';
import { replayCommand, runChaos } from './chaosRun.ts';

const FAULT_MS = 75_000;
const seed = Number(process.env.IMGVAULT_CHAOS_SEED ?? Math.floor(Math.random() * 1_000_000));

it(`survives a short chaos run with no lost image, stale read or divergence (seed ${seed})`, async () => {
  const result = await runChaos({ seed, faultMs: FAULT_MS, convergeMs: 120_000 });
  const report = [
    `seed ${seed}: ${result.operations} operations, ${result.acknowledged} acknowledged`,
    ...result.violations.slice(0, 30),
    `logs and data: ${result.root}`,
    `replay: ${replayCommand(seed, FAULT_MS)}`,
  ].join('\n');
  expect(result.violations, report).toEqual([]);
  // A run where nothing was acknowledged proves nothing: the workload must have made progress.
  expect(result.acknowledged, report).toBeGreaterThan(10);
}, 400_000);
