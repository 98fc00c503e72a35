import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it } from 'vitest';
import type { Command } from '../../src/metadata/commands.ts';
import { EntryLog, MetadataFixture, recordCmd, registerCmd } from './metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

/** A small history touching every table. */
function history(log: EntryLog) {
  const commands: Command[] = [
    registerCmd('w1', 1000, 'zA'),
    registerCmd('w2', 1000, 'zB'),
    registerCmd('w3', 1000, 'zA'),
    recordCmd('a.png', ['w1', 'w2'], 100),
    recordCmd('b.png', ['w2', 'w3'], 200),
    recordCmd('c.png', ['w3', 'w1'], 300),
    { type: 'markNodeState', nodeId: 'w3', state: 'down', at: 5000 },
    { type: 'replaceReplica', id: 'b.png', add: 'w1', remove: 'w3' },
    {
      type: 'heartbeatSummary',
      nodes: [{ nodeId: 'w1', diskUsed: 600, diskFree: 400, objectCount: 3, lastSeen: 6000 }],
    },
    { type: 'deleteObject', id: 'a.png' },
  ];
  return [log.empty(), ...commands.map((c) => log.command(c))];
}

describe('applied index durability', () => {
  it('a restarted instance resumes after its recorded index, so no entry is applied twice', async () => {
    const dir = await fx.folder();
    const log = new EntryLog();
    const entries = history(log);
    const sm = await fx.machine(dir);
    await sm.apply(entries.slice(0, 6));
    const atSix = await sm.tableDigest();
    await fx.close(sm);

    const reopened = await fx.machine(dir);
    expect(reopened.appliedIndex()).toBe(6);
    expect(await reopened.tableDigest()).toEqual(atSix);
    // The driver skips what is recorded; handing an applied entry again is refused, not re-applied.
    await expect(reopened.apply([entries[5]!])).rejects.toThrow(/out of order/);
    await reopened.apply(entries.slice(6));
    expect((await reopened.stats()).objects).toBe(2);

    // Same end state as an instance that never restarted.
    const straight = await fx.machine();
    await straight.apply(entries);
    expect(await reopened.tableDigest()).toEqual(await straight.tableDigest());
  });

  it('records the index of trailing entries that carry no command', async () => {
    const dir = await fx.folder();
    const log = new EntryLog();
    const sm = await fx.machine(dir);
    await sm.apply([log.command(registerCmd('w1')), log.empty(), log.confChange()]);
    await fx.close(sm);
    expect((await fx.machine(dir)).appliedIndex()).toBe(3);
  });
});

describe('determinism', () => {
  it('instances fed the same entries, in any batching, hold identical tables', async () => {
    const log = new EntryLog();
    const entries = history(log);
    const one = await fx.machine();
    const two = await fx.machine();
    await one.apply(entries);
    for (const e of entries) await two.apply([e]);
    const d1 = await one.tableDigest();
    expect(d1.appliedIndex).toBe(entries.length);
    expect(await two.tableDigest()).toEqual(d1);
  });
});

describe('snapshots', () => {
  it('snapshot -> restore into a fresh instance gives identical tables and index', async () => {
    const log = new EntryLog();
    const source = await fx.machine();
    await source.apply(history(log));
    const data = await source.snapshot();
    const target = await fx.machine();
    await target.restore(data, source.appliedIndex());
    expect(target.appliedIndex()).toBe(source.appliedIndex());
    expect(await target.tableDigest()).toEqual(await source.tableDigest());
    expect(await target.listObjects()).toEqual(await source.listObjects());
    expect(await target.stats()).toEqual(await source.stats());

    // It then applies the rest of the log like the source.
    const next = log.command(recordCmd('d.png', ['w1', 'w2'], 5));
    await source.apply([next]);
    await target.apply([next]);
    expect(await target.tableDigest()).toEqual(await source.tableDigest());
  });

  it('restore replaces the whole previous state, and survives a restart', async () => {
    const source = await fx.machine();
    await source.apply(history(new EntryLog()));
    const data = await source.snapshot();

    const dir = await fx.folder();
    const target = await fx.machine(dir);
    const otherLog = new EntryLog();
    await target.apply([
      otherLog.command(registerCmd('x1')),
      otherLog.command(registerCmd('x2')),
      otherLog.command(recordCmd('zzz', ['x1', 'x2'], 9)),
    ]);
    await target.restore(data, source.appliedIndex());
    expect(await target.getNode('x1')).toBeNull();
    expect(await target.getObject('zzz')).toBeNull();
    expect(await target.tableDigest()).toEqual(await source.tableDigest());
    await fx.close(target);
    const reopened = await fx.machine(dir);
    expect(await reopened.tableDigest()).toEqual(await source.tableDigest());
    // A second restore (another generation) works the same way.
    await reopened.restore(await source.snapshot(), source.appliedIndex());
    expect(await reopened.tableDigest()).toEqual(await source.tableDigest());
  });

  it('refuses a snapshot that is corrupt or taken at another index, and keeps its state', async () => {
    const source = await fx.machine();
    await source.apply(history(new EntryLog()));
    const data = await source.snapshot();
    const target = await fx.machine();
    await target.apply([new EntryLog().command(registerCmd('keep'))]);
    const before = await target.tableDigest();

    await expect(target.restore(data, source.appliedIndex() + 1)).rejects.toThrow(/index/);
    const tampered = data.replace('\\"size\\":200', '\\"size\\":201');
    expect(tampered).not.toBe(data);
    await expect(target.restore(tampered, source.appliedIndex())).rejects.toThrow(/digest/);
    await expect(target.restore(data.replace('"w2"', '"w9"'), source.appliedIndex())).rejects.toThrow(
      /order/,
    );
    await expect(target.restore(data.slice(0, -10), source.appliedIndex())).rejects.toThrow();
    await expect(target.restore('{"format":"other"}', source.appliedIndex())).rejects.toThrow();
    expect(await target.tableDigest()).toEqual(before);
    expect(target.appliedIndex()).toBe(1);
  });

  it('a crash in the middle of a restore leaves the old state, with no leftover rows', async () => {
    const dir = await fx.folder();
    const sm = await fx.machine(dir);
    await sm.apply(history(new EntryLog()));
    const before = await sm.tableDigest();
    await fx.close(sm);

    // What a restore interrupted before its flip leaves behind: rows of the next generation.
    const raw = new ClassicLevel<string, string>(dir);
    await raw.batch([
      { type: 'put', key: 'data/000000000001/o/half-restored', value: '{}' },
      { type: 'put', key: 'data/000000000001/n/w9', value: '{}' },
    ]);
    await raw.close();

    const reopened = await fx.machine(dir);
    expect(await reopened.tableDigest()).toEqual(before);
    expect(await reopened.getObject('half-restored')).toBeNull();
    await fx.close(reopened);
    const check = new ClassicLevel<string, string>(dir);
    const keys = await check.keys({ gte: 'data/000000000001/', lt: 'data/000000000002/' }).all();
    await check.close();
    expect(keys).toEqual([]);
  });
});

describe('bootstrap', () => {
  it("restoring the bootstrap snapshot's empty state empties the tables at its index", async () => {
    const sm = await fx.machine();
    await sm.apply([new EntryLog().command(registerCmd('w1'))]);
    expect(await sm.listNodes()).toHaveLength(1);
    await sm.restore('', 1);
    expect(sm.appliedIndex()).toBe(1);
    expect(await sm.listNodes()).toEqual([]);
    const fresh = await fx.machine();
    expect((await sm.tableDigest()).sha256).toBe((await fresh.tableDigest()).sha256);
  });
});
