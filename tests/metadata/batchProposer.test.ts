import { randomUUID } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { RaftError } from '../../src/consensus/raftNode.ts';
import { PlannedTables, planCommand } from '../../src/metadata/applyCommand.ts';
import { BatchProposer } from '../../src/metadata/batchProposer.ts';
import { type Command, decodeCommand, MAX_BATCH_COMMANDS } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { type CommandProposer, proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { decodeCounter, MetadataTables, nodeCounterKey, TOTAL_COUNTER } from '../../src/metadata/tables.ts';
import { applyOne, EntryLog, MetadataFixture, recordCmd, registerCmd } from './metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

/**
 * A one-member log in place of the Raft driver (as in proposeCommand.test.ts): each proposal is one
 * entry, applied a turn later, so proposals made meanwhile find the previous one in flight.
 */
class OneMemberLog implements CommandProposer {
  readonly log = new EntryLog();
  readonly entryTypes: string[] = [];
  failNext: Error | null = null;
  /** Proposals made and not yet answered, now and at most. */
  pending = 0;
  maxPending = 0;
  /** Each proposal's data and the entries applied when it was made. */
  readonly proposed: { data: string; applied: number }[] = [];

  constructor(private readonly sm: MetadataStateMachine) {}

  /** Entries are applied one after another, in the order proposed, as a log does. */
  private tail: Promise<unknown> = Promise.resolve();

  propose(data: string, requestId: string): Promise<unknown> {
    this.proposed.push({ data, applied: this.log.entries.length });
    this.pending += 1;
    this.maxPending = Math.max(this.maxPending, this.pending);
    const next = this.tail
      .then(() => this.append(data, requestId))
      .finally(() => {
        this.pending -= 1;
      });
    this.tail = next.catch(() => {});
    return next;
  }

  private async append(data: string, requestId: string): Promise<unknown> {
    await new Promise((resolve) => setImmediate(resolve));
    if (this.failNext) {
      const err = this.failNext;
      this.failNext = null;
      throw err;
    }
    const decoded = decodeCommand(data);
    this.entryTypes.push(decoded.ok ? decoded.command.type : 'invalid');
    const results = await this.sm.apply([this.log.raw(data)]);
    return results.find((r) => r.requestId === requestId)?.result;
  }
}

async function withWorkers(): Promise<{ sm: MetadataStateMachine; node: OneMemberLog }> {
  const sm = await fx.machine();
  const node = new OneMemberLog(sm);
  await proposeCommand(node, registerCmd('w1'));
  await proposeCommand(node, registerCmd('w2'));
  node.entryTypes.length = 0;
  return { sm, node };
}

describe('BatchProposer', () => {
  it('lands concurrent proposals in fewer entries, each caller getting its own result', async () => {
    const { sm, node } = await withWorkers();
    const batcher = new BatchProposer(node);
    const n = 50;
    const results = await Promise.all(
      Array.from({ length: n }, (_, i) => proposeCommand(batcher, recordCmd(`img${i}`, ['w1', 'w2'], i + 1))),
    );
    results.forEach((r, i) => {
      expect(r).toMatchObject({ ok: true, created: true, object: { id: `img${i}`, size: i + 1 } });
    });
    expect(node.entryTypes.length).toBeLessThan(n);
    expect(node.entryTypes).toContain('commandBatch');
    expect((await sm.stats()).objects).toBe(n);
    expect((await sm.getObject('img7'))?.size).toBe(8);
  });

  it('refuses a command that does not fit alone, the others in its entry still apply', async () => {
    const { sm, node } = await withWorkers();
    const batcher = new BatchProposer(node);
    await proposeCommand(batcher, recordCmd('taken', ['w1', 'w2'], 5));
    node.entryTypes.length = 0;
    const [a, clash, unknownNode, b] = await Promise.all([
      proposeCommand(batcher, recordCmd('a', ['w1', 'w2'])),
      proposeCommand(batcher, recordCmd('taken', ['w1', 'w2'], 6)),
      proposeCommand(batcher, recordCmd('c', ['w1', 'w9'])),
      proposeCommand(batcher, { type: 'deleteObject', id: 'taken' }),
    ]);
    expect(node.entryTypes).toEqual(['commandBatch']);
    expect(a).toMatchObject({ ok: true, created: true });
    expect(clash).toMatchObject({ ok: false, code: 'ObjectExists' });
    expect(unknownNode).toMatchObject({ ok: false, code: 'NodeUnknown' });
    expect(b).toMatchObject({ ok: true, object: { id: 'taken' } });
    expect(await sm.getObject('c')).toBeNull();
    expect((await sm.stats()).objects).toBe(1);
  });

  it('an invalid command is refused to its caller alone, the others in its entry still apply', async () => {
    const { sm, node } = await withWorkers();
    const batcher = new BatchProposer(node);
    const good = proposeCommand(batcher, recordCmd('ok', ['w1', 'w2']));
    const badId = randomUUID();
    const bad = batcher.propose(`{"type":"deleteObject","requestId":"${badId}","id":"../../x"}`, badId);
    await expect(bad).resolves.toMatchObject({ ok: false, code: 'InvalidCommand' });
    await expect(good).resolves.toMatchObject({ ok: true, created: true });
    expect(node.entryTypes).toEqual(['commandBatch']);
    expect((await sm.getObject('ok'))?.id).toBe('ok');
  });

  it('proposes text that does not parse alone, so it cannot spoil the entry of the others', async () => {
    const { sm, node } = await withWorkers();
    const batcher = new BatchProposer(node);
    const good = proposeCommand(batcher, recordCmd('ok', ['w1', 'w2']));
    const badId = randomUUID();
    const bad = batcher.propose(`{"type":"deleteObject","requestId":"${badId}","id":`, badId);
    await expect(good).resolves.toMatchObject({ ok: true, created: true });
    await bad.catch(() => {});
    expect([...node.entryTypes].sort()).toEqual(['invalid', 'recordObject']);
    expect((await sm.getObject('ok'))?.id).toBe('ok');
  });

  it('fails every caller of an entry that was not committed with the driver error', async () => {
    const { sm, node } = await withWorkers();
    const batcher = new BatchProposer(node);
    await proposeCommand(batcher, recordCmd('first', ['w1', 'w2']));
    node.failNext = new RaftError('NotLeader', 'not the leader');
    const calls = ['x', 'y', 'z'].map((id) => proposeCommand(batcher, recordCmd(id, ['w1', 'w2'])));
    for (const call of calls) await expect(call).rejects.toMatchObject({ code: 'NotLeader' });
    expect(await sm.getObject('x')).toBeNull();
    // The next proposal goes through: a failed entry does not wedge the queue.
    await expect(proposeCommand(batcher, recordCmd('x', ['w1', 'w2']))).resolves.toMatchObject({ ok: true });
  });

  it('proposes full entries beside the one in flight, up to its bound, and a partial one after them', async () => {
    const { sm, node } = await withWorkers();
    const batcher = new BatchProposer(node, { maxCommands: 4, maxInFlight: 3 });
    const results = await Promise.all(
      Array.from({ length: 22 }, (_, i) => proposeCommand(batcher, recordCmd(`f${i}`, ['w1', 'w2']))),
    );
    expect(results.every((r) => r.ok && r.created)).toBe(true);
    expect(node.maxPending).toBe(3);
    const entries = node.log.entries.slice(2).map((e) => {
      const decoded = decodeCommand(e.data);
      if (!decoded.ok || decoded.command.type !== 'commandBatch') throw new Error('expected a commandBatch');
      return decoded.command.commands.map((c) => (c as { id: string }).id);
    });
    expect(entries.map((ids) => ids.length)).toEqual([4, 4, 4, 4, 4, 2]);
    // In the log in the order they were proposed.
    expect(entries.flat()).toEqual(Array.from({ length: 22 }, (_, i) => `f${i}`));
    expect((await sm.stats()).objects).toBe(22);
  });

  it('lets a partial entry wait for the one in flight, gathering what comes meanwhile', async () => {
    const { node } = await withWorkers();
    const batcher = new BatchProposer(node, { maxCommands: 8, maxInFlight: 4 });
    const first = Array.from({ length: 3 }, (_, i) =>
      proposeCommand(batcher, recordCmd(`p${i}`, ['w1', 'w2'])),
    );
    await new Promise((r) => setImmediate(r));
    const later = Array.from({ length: 3 }, (_, i) =>
      proposeCommand(batcher, recordCmd(`q${i}`, ['w1', 'w2'])),
    );
    await Promise.all([...first, ...later]);
    expect(node.maxPending).toBe(1);
    expect(node.entryTypes).toEqual(['commandBatch', 'commandBatch']);
  });

  it('proposes a lone command beside full entries in flight once one of them ends, not all', async () => {
    const { node } = await withWorkers();
    const batcher = new BatchProposer(node, { maxCommands: 4, maxInFlight: 4 });
    const before = node.log.entries.length;
    // Twelve fill three entries, proposed at once; the thirteenth is alone, a partial entry.
    const calls = Array.from({ length: 13 }, (_, i) =>
      proposeCommand(batcher, recordCmd(`l${i}`, ['w1', 'w2'])),
    );
    const results = await Promise.all(calls);
    expect(results.every((r) => r.ok && r.created)).toBe(true);
    const lone = node.proposed.find((p) => p.data.includes('"id":"l12"'));
    expect(lone?.data).toMatch(/^\{"type":"recordObject"/);
    expect(node.proposed.filter((p) => p.applied === before)).toHaveLength(3);
    // Proposed once the first full entry was applied, before the last of the three was.
    expect(lone!.applied - before).toBeGreaterThanOrEqual(1);
    expect(lone!.applied - before).toBeLessThan(3);
  });

  it('keeps each entry within its bounds in commands and characters', async () => {
    const { node } = await withWorkers();
    const batcher = new BatchProposer(node, { maxCommands: 8, maxChars: 2000 });
    const results = await Promise.all(
      Array.from({ length: 40 }, (_, i) => proposeCommand(batcher, recordCmd(`b${i}`, ['w1', 'w2']))),
    );
    expect(results.every((r) => r.ok)).toBe(true);
    for (const entry of node.log.entries) {
      expect(entry.data.length).toBeLessThanOrEqual(2000);
      const decoded = decodeCommand(entry.data);
      if (decoded.ok && decoded.command.type === 'commandBatch') {
        expect(decoded.command.commands.length).toBeLessThanOrEqual(8);
      }
    }
    expect(MAX_BATCH_COMMANDS).toBeGreaterThanOrEqual(8);
  });
});

describe('commandBatch apply', () => {
  const before: Command[] = [registerCmd('w1'), registerCmd('w2'), recordCmd('a', ['w1', 'w2'], 10)];
  const inner: unknown[] = [
    recordCmd('b', ['w1', 'w2'], 20),
    { type: 'deleteObject', id: 'a' },
    { type: 'deleteObject', id: 'a' },
    { type: 'recordObject', id: 'bad id!' },
    { type: 'createBucket', bucket: 'photos', at: 1 },
    { type: 'replaceReplica', id: 'b', add: 'w1', remove: 'w2' },
  ];

  it('gives one result per inner command: an invalid or ungroupable one refused alone', async () => {
    const sm = await fx.machine();
    const log = new EntryLog();
    for (const c of before) await applyOne(sm, log, c);
    const result = await applyOne(sm, log, { type: 'commandBatch', commands: inner });
    expect(result).toEqual({
      ok: true,
      results: [
        expect.objectContaining({ ok: true, created: true }),
        expect.objectContaining({ ok: true, object: expect.objectContaining({ id: 'a' }) }),
        expect.objectContaining({ ok: false, code: 'ObjectNotFound' }),
        expect.objectContaining({ ok: false, code: 'InvalidCommand' }),
        expect.objectContaining({ ok: false, code: 'InvalidCommand' }),
        expect.objectContaining({ ok: false, code: 'ReplicaExists' }),
      ],
    });
  });

  it('is deterministic and leaves the tables as the valid commands in entries of their own would', async () => {
    const digests: string[] = [];
    for (let i = 0; i < 2; i++) {
      const sm = await fx.machine();
      const log = new EntryLog();
      for (const c of before) await applyOne(sm, log, c);
      await applyOne(sm, log, { type: 'commandBatch', commands: inner });
      digests.push((await sm.tableDigest()).sha256);
    }
    const separate = await fx.machine();
    const separateLog = new EntryLog();
    for (const c of [...before, ...inner.slice(0, 3), inner[5]] as Command[]) {
      await applyOne(separate, separateLog, c);
    }
    expect(digests[1]).toBe(digests[0]);
    expect((await separate.tableDigest()).sha256).toBe(digests[0]);
  });

  it('writes each row it touches once, at its last value, as separate entries would leave it', async () => {
    const uploads: Command[] = [
      ...Array.from({ length: 20 }, (_, i) => recordCmd(`u${i}`, ['w1', 'w2'], 10 + i)),
      { type: 'deleteObject', id: 'u3' },
      recordCmd('u3', ['w2', 'w1'], 99),
      { type: 'deleteObject', id: 'a' },
    ];
    const dir = await fx.folder();
    const tables = await MetadataTables.open(dir);
    const log = new EntryLog();
    try {
      for (const [i, c] of before.entries()) {
        const plan = await planCommand(tables, { ...c, requestId: randomUUID() });
        await tables.write(plan.ops, i + 1);
      }
      const plan = await planCommand(tables, {
        type: 'commandBatch',
        requestId: randomUUID(),
        commands: uploads,
      });
      const rows = plan.ops.map((op) => `${op.table}/${op.key}`);
      expect(new Set(rows).size).toBe(rows.length);
      expect(rows.filter((r) => r.startsWith('counters/'))).toHaveLength(3);
      expect(plan.ops).toContainEqual({ type: 'del', table: 'objects', key: 'a' });
    } finally {
      await tables.close();
    }
    const batched = await fx.machine();
    for (const c of before) await applyOne(batched, log, c);
    await applyOne(batched, log, { type: 'commandBatch', commands: uploads });
    const separate = await fx.machine();
    const separateLog = new EntryLog();
    for (const c of [...before, ...uploads]) await applyOne(separate, separateLog, c);
    expect((await batched.tableDigest()).sha256).toBe((await separate.tableDigest()).sha256);
    expect(await batched.getObject('u3')).toMatchObject({ size: 99, replicas: ['w2', 'w1'] });
  });

  it("changes planned counters only when the plan's ops are added, as any other row", async () => {
    const tables = await MetadataTables.open(await fx.folder());
    try {
      for (const [i, c] of before.entries()) {
        const plan = await planCommand(tables, { ...c, requestId: randomUUID() });
        await tables.write(plan.ops, i + 1);
      }
      const planned = new PlannedTables(tables);
      const counters = [TOTAL_COUNTER, nodeCounterKey('w1')];
      const was = await planned.getMany('counters', counters);
      // A plan not added, as a planner would leave one it turned into a rejection.
      const plan = await planCommand(planned, {
        ...recordCmd('n', ['w1', 'w2'], 7),
        requestId: randomUUID(),
      });
      expect(plan.result).toMatchObject({ ok: true, created: true });
      expect(await planned.getMany('counters', counters)).toEqual(was);
      expect(planned.ops()).toEqual([]);
      planned.add(plan.ops);
      const now = await planned.getMany('counters', counters);
      expect(now.map((raw) => decodeCounter(raw!))).toEqual([
        { objects: 2, bytes: 17 },
        { objects: 2, bytes: 17 },
      ]);
    } finally {
      await tables.close();
    }
  });
});
