// `npm run sim -- --seeds N [--host-seeds M] [--from S] [--verbose]`: run seeds S..S+N-1 of the
// deterministic Raft simulation of the core (tests/sim), then seeds S..S+M-1 of the host
// simulation, which runs the real RaftNode driver (default M: a tenth of N, at least one). Each failing seed is printed with its violation and the one command that
// replays it; the last line is always `sim: <N> seeds, <V> violations`, and the exit code is 1 on
// any violation. --verbose prints the run's event trace (messages as sent, role changes, crashes,
// partitions, client operations, the violation). The broken variants the tests plant can be
// replayed too: --core-variant, --host-order, --host-variant; --reorder-rate overrides the
// network's reordering; --level-db runs every host seed over the real LevelLogStore;
// --snapshots runs every host seed in one snapshot mode (else by seed: half lazy, the managers'
// way); --single-voter runs the core seeds with one voter and learners that are never promoted.
//
// How a run works: scenario.ts (one seed = one run), cluster.ts (virtual time, nodes, faults),
// simNode.ts (the host loop around RaftCore), simDisk.ts (MemoryLogStore as the durable disk),
// simNetwork.ts (delays, drops, duplicates, reordering, partitions), checker.ts (the invariants).
// Host runs: hostScenario.ts (one seed), hostWorld.ts (the real driver given virtual time,
// virtualTime.ts, and a synced-write disk, hostStore.ts), hostStateMachine.ts (tables, durable or
// not), hostFiles.ts (the snapshot folder), hostVariants.ts (planted driver bugs).

import { parseArgs } from 'node:util';
import { CORE_VARIANTS, type CoreVariant } from './coreAdapter.ts';
import { runHostSeed } from './hostScenario.ts';
import { HOST_VARIANTS, type HostVariant } from './hostVariants.ts';
import type { SnapshotMode } from './hostWorld.ts';
import { runSeed } from './scenario.ts';
import type { HostOrder } from './simNode.ts';

const HOST_ORDERS: HostOrder[] = ['persistThenSend', 'sendThenPersist'];
const SNAPSHOT_MODES: SnapshotMode[] = ['inline', 'files', 'lazy'];

const USAGE = `usage: npm run sim -- [options]
  --seeds N            core seeds to run (default 100)
  --host-seeds M       host seeds, the real RaftNode driver (default: a tenth of N, at least 1)
  --from S             first seed (default 1)
  --verbose            print each run's event trace
  --single-voter       core seeds with one voter and learners that are never promoted
  --level-db           host seeds over the real LevelLogStore
  --snapshots M        every host seed in one snapshot mode: ${SNAPSHOT_MODES.join(', ')}
                       (default by seed: lazy, inline, lazy, files)
  --ticks T            ticks per run
  --reorder-rate R     the network's reordering rate, 0..1
  --core-variant V     a planted core bug: ${CORE_VARIANTS.join(', ')}
  --host-order O       ${HOST_ORDERS.join(', ')}
  --host-variant V     a planted driver bug: ${HOST_VARIANTS.join(', ')}
The last line is always \`sim: <N> seeds, <V> violations\`; the exit code is 1 on any violation.`;

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      seeds: { type: 'string', default: '100' },
      'host-seeds': { type: 'string' },
      'host-variant': { type: 'string', default: 'correct' },
      'level-db': { type: 'boolean', default: false },
      snapshots: { type: 'string' },
      from: { type: 'string', default: '1' },
      verbose: { type: 'boolean', default: false },
      'core-variant': { type: 'string', default: 'correct' },
      'host-order': { type: 'string', default: 'persistThenSend' },
      ticks: { type: 'string' },
      'reorder-rate': { type: 'string' },
      'single-voter': { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const count = parseCount(values.seeds, '--seeds');
  const hostCount =
    values['host-seeds'] === undefined
      ? Math.max(1, Math.floor(count / 10))
      : parseCount(values['host-seeds'], '--host-seeds');
  const hostVariant = values['host-variant'] as HostVariant;
  if (!HOST_VARIANTS.includes(hostVariant))
    throw new Error(`--host-variant must be one of ${HOST_VARIANTS.join(', ')}`);
  const snapshots = values.snapshots as SnapshotMode | undefined;
  if (snapshots !== undefined && !SNAPSHOT_MODES.includes(snapshots))
    throw new Error(`--snapshots must be one of ${SNAPSHOT_MODES.join(', ')}`);
  const from = parsePositive(values.from, '--from');
  const coreVariant = values['core-variant'] as CoreVariant;
  const hostOrder = values['host-order'] as HostOrder;
  if (!CORE_VARIANTS.includes(coreVariant))
    throw new Error(`--core-variant must be one of ${CORE_VARIANTS.join(', ')}`);
  if (!HOST_ORDERS.includes(hostOrder))
    throw new Error(`--host-order must be one of ${HOST_ORDERS.join(', ')}`);
  const ticks = values.ticks === undefined ? undefined : parsePositive(values.ticks, '--ticks');
  const reorderRate = values['reorder-rate'] === undefined ? undefined : Number(values['reorder-rate']);
  if (reorderRate !== undefined && !(reorderRate >= 0 && reorderRate <= 1)) {
    throw new Error('--reorder-rate must be a probability in [0, 1]');
  }
  const extra =
    (coreVariant !== 'correct' ? ` --core-variant ${coreVariant}` : '') +
    (hostOrder !== 'persistThenSend' ? ` --host-order ${hostOrder}` : '') +
    (ticks !== undefined ? ` --ticks ${ticks}` : '') +
    (reorderRate !== undefined ? ` --reorder-rate ${reorderRate}` : '') +
    (values['single-voter'] ? ' --single-voter' : '');

  const started = performance.now();
  let violations = 0;
  for (let seed = from; seed < from + count; seed++) {
    const result = runSeed({
      seed,
      verbose: values.verbose,
      coreVariant,
      hostOrder,
      ticks,
      reorderRate,
      singleVoter: values['single-voter'],
    });
    if (values.verbose) {
      for (const line of result.trace) console.log(line);
      console.log(`seed ${seed}: trace hash ${result.traceHash}, stats ${JSON.stringify(result.stats)}`);
    }
    if (result.violation) {
      violations++;
      const v = result.violation;
      console.log(`seed ${seed}: ${v.kind} at tick ${v.tick}: ${v.message}`);
      console.log(`  replay: npm run sim -- --seeds 1 --from ${seed} --verbose${extra}`);
    }
  }
  const hostExtra =
    (hostVariant !== 'correct' ? ` --host-variant ${hostVariant}` : '') +
    (values['level-db'] ? ' --level-db' : '') +
    (snapshots !== undefined ? ` --snapshots ${snapshots}` : '');
  for (let seed = from; seed < from + hostCount; seed++) {
    const result = await runHostSeed({
      seed,
      verbose: values.verbose,
      variant: hostVariant,
      ...(values['level-db'] ? { levelDb: true } : {}),
      ...(snapshots !== undefined ? { snapshots } : {}),
    });
    if (values.verbose) {
      for (const line of result.trace) console.log(line);
      console.log(`host seed ${seed}: trace hash ${result.traceHash}, stats ${JSON.stringify(result.stats)}`);
    }
    if (result.violation) {
      violations++;
      const v = result.violation;
      console.log(`host seed ${seed}: ${v.kind} at tick ${v.tick}: ${v.message}`);
      console.log(`  replay: npm run sim -- --seeds 0 --host-seeds 1 --from ${seed} --verbose${hostExtra}`);
    }
  }
  const seconds = (performance.now() - started) / 1000;
  const total = count + hostCount;
  console.error(`(${count} core and ${hostCount} host seeds in ${seconds.toFixed(1)} s)`);
  console.log(`sim: ${total} seeds, ${violations} violations`);
  return violations > 0 ? 1 : 0;
}

function parseCount(text: string | undefined, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0) throw new Error(`${flag} must be a whole number, got ${text}`);
  return n;
}

function parsePositive(text: string | undefined, flag: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${flag} must be a positive integer, got ${text}`);
  return n;
}

process.exitCode = await main();
