// The batch proposer in front of a real Raft driver that loses its leadership: three in-process
// managers over real HTTP on 127.0.0.1, the leader cut off with commandBatch entries in flight and
// more commands queued behind them. A caller told its command was applied finds its record on every
// manager, and one told it failed on none.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { BatchProposer, DEFAULT_MAX_IN_FLIGHT } from '../../src/metadata/batchProposer.ts';
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

type Outcome = { ok: true; result: { ok: boolean } } | { ok: false; err: unknown };

/**
 * Proposes `n` records through a batch proposer on the leader and cuts the leader off: at once
 * ('start', before any entry goes out) or as the first caller is answered ('firstAnswer').
 */
async function proposeAndCut(prefix: string, n: number, cutAt: 'start' | 'firstAnswer') {
  const old = await until('a leader', () => managers.find((m) => m.node.isLeader()) ?? null, 30_000);
  await proposeCommand(old.node, registerCmd('w1'));
  await proposeCommand(old.node, registerCmd('w2'));
  const batcher = new BatchProposer(old.node);
  const outcomes: (Outcome | null)[] = Array.from({ length: n }, () => null);
  let cut = false;
  const cutOff = () => {
    cut = true;
    isolated = old.id;
  };
  const answered = (i: number, o: Outcome) => {
    outcomes[i] = o;
    if (cutAt === 'firstAnswer' && !cut) cutOff();
  };
  const calls = Array.from({ length: n }, (_, i) =>
    proposeCommand(batcher, recordCmd(`${prefix}${i}`, ['w1', 'w2'])).then(
      (result) => answered(i, { ok: true, result }),
      (err: unknown) => answered(i, { ok: false, err }),
    ),
  );
  if (cutAt === 'start') cutOff();
  await until('the leader cut off', () => cut, 30_000);
  const others = managers.filter((m) => m !== old);
  const next = await until('a new leader', () => others.find((m) => m.node.isLeader()) ?? null, 30_000);
  isolated = null;
  await until('the old leader stepped down', () => !old.node.isLeader(), 30_000);
  await Promise.all(calls);
  await until(
    'every manager applied the new leader commit',
    () => managers.every((m) => m.node.status().applied >= next.node.status().commit),
    30_000,
  );
  return outcomes as Outcome[];
}

/** For each caller: told applied (and created) exactly when its record is on every manager. */
async function expectToldMatchesTables(prefix: string, outcomes: Outcome[]): Promise<number> {
  let told = 0;
  for (const [i, o] of outcomes.entries()) {
    const present = await Promise.all(
      managers.map(async (m) => (await m.sm.getObject(`${prefix}${i}`)) !== null),
    );
    const applied = o.ok && o.result.ok;
    if (!o.ok) expect(o.err).toMatchObject({ name: 'RaftError' });
    expect({ i, applied, present }).toEqual({ i, applied, present: present.map(() => applied) });
    if (applied) told += 1;
  }
  return told;
}

it('with four full entries in flight and more queued, fails every caller when the leader is cut off', async () => {
  const n = DEFAULT_MAX_IN_FLIGHT * MAX_BATCH_COMMANDS + 60;
  const outcomes = await proposeAndCut('cut', n, 'start');
  expect(await expectToldMatchesTables('cut', outcomes)).toBe(0);
}, 90_000);

it('tells applied exactly the callers whose records every manager holds when the leader steps down mid-burst', async () => {
  const n = DEFAULT_MAX_IN_FLIGHT * MAX_BATCH_COMMANDS + 60;
  // Cut off as the first entry's callers are answered: later entries are in flight or queued.
  const outcomes = await proposeAndCut('mid', n, 'firstAnswer');
  const told = await expectToldMatchesTables('mid', outcomes);
  expect(told).toBeGreaterThan(0);
  expect(told).toBeLessThan(n);
}, 90_000);
