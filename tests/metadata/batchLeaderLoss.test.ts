// The batch proposer in front of a real Raft driver that loses its leadership: three in-process
// managers over real HTTP on 127.0.0.1, the leader cut off with one commandBatch entry in flight and
// more commands queued behind it. No caller may be told its command was applied: each gets an error.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BatchProposer } from '../../src/metadata/batchProposer.ts';
import { MAX_BATCH_COMMANDS } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { closeAll, type InProcessManager, openMetadata, startCluster } from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from './metadataFixture.ts';

let root: string;
let managers: InProcessManager<MetadataStateMachine>[] = [];
/** Messages from and to this manager are dropped on arrival: it is cut off from the others. */
let isolated: string | null = null;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-batch-leader-loss-'));
  managers = await startCluster(['m1', 'm2', 'm3'], {
    secret: 'metadata-test-secret-0123456789',
    root,
    openStateMachine: openMetadata,
    node: { tickMs: 20 },
    accept: (to, msg) => isolated === null || (to !== isolated && msg.from !== isolated),
  });
});

afterAll(async () => {
  isolated = null;
  await closeAll(managers);
  await rm(root, { recursive: true, force: true });
});

it('fails every caller of the entry in flight and of those queued, none told applied', async () => {
  const old = await until('a leader', () => managers.find((m) => m.node.isLeader()) ?? null, 30_000);
  await proposeCommand(old.node, registerCmd('w1'));
  await proposeCommand(old.node, registerCmd('w2'));
  const batcher = new BatchProposer(old.node);

  isolated = old.id;
  // One full entry goes out at once; the rest wait behind it.
  const n = MAX_BATCH_COMMANDS + 60;
  const calls = Array.from({ length: n }, (_, i) =>
    proposeCommand(batcher, recordCmd(`lost${i}`, ['w1', 'w2'])).then(
      (result) => ({ ok: true as const, result }),
      (err: unknown) => ({ ok: false as const, err }),
    ),
  );
  const others = managers.filter((m) => m !== old);
  const next = await until('a new leader', () => others.find((m) => m.node.isLeader()) ?? null, 30_000);
  isolated = null;
  await until('the old leader stepped down', () => !old.node.isLeader(), 30_000);

  const outcomes = await Promise.all(calls);
  const applied = outcomes.filter((o) => o.ok);
  expect(applied).toEqual([]);
  for (const o of outcomes) expect(o).toMatchObject({ ok: false, err: { name: 'RaftError' } });
  // The entry never reached a majority: the new leader's log overwrote it everywhere.
  await until(
    'every manager applied the new leader commit',
    () => managers.every((m) => m.node.status().applied >= next.node.status().commit),
    30_000,
  );
  for (const m of managers) expect(await m.sm.getObject('lost0')).toBeNull();
}, 90_000);
