// An inventory against the recorded copies in one merge (observe.ts, compareInventory), and the two
// readers of it at sizes past a batch and a page of the node index: the periodic sweep (one read
// of the worker's inventory, no lookup per line) and a rejoin (lines looked up a batch at a time,
// only the others decided one by one). Real tables, real workers on 127.0.0.1.

import { Writable } from 'node:stream';
import { pino } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { compareInventory } from '../../src/manager/placement/observe.ts';
import { recordObjects } from '../helpers/recordedObjects.ts';
import { cleanup, hearAll, metric, placementFor, type Setup, setup } from './placementFixture.ts';

afterEach(cleanup);

const SHA = 'a'.repeat(64);
const line = (id: string) => ({ id, size: 10, sha256: SHA });
const idOf = (i: number) => `blob-${i.toString().padStart(5, '0')}`;

async function* ascending(ids: string[]): AsyncGenerator<string> {
  yield* ids;
}

const record = (s: Setup, ids: string[], replicas: string[]) =>
  recordObjects(s.raft, ids, { replicas, createdAt: s.clock.now - 60_000, sha256: SHA });

describe('compareInventory', () => {
  it('sorts every line and every recorded id into listed, unlisted and lacking, in id order', async () => {
    const steps = [];
    for await (const c of compareInventory(
      ['a', 'b', 'd', 'f'].map(line),
      ascending(['b', 'c', 'd', 'e', 'g']),
    ))
      steps.push(
        c.kind === 'lacking' ? `lacking ${c.id}` : c.kind === 'unordered' ? c.kind : `${c.kind} ${c.line.id}`,
      );
    expect(steps).toEqual([
      'unlisted a',
      'listed b',
      'lacking c',
      'listed d',
      'lacking e',
      'unlisted f',
      'lacking g',
    ]);
  });

  it('stops at the first line out of order', async () => {
    const kinds = [];
    for await (const c of compareInventory(['a', 'c', 'b', 'd'].map(line), ascending(['a', 'd'])))
      kinds.push(c.kind);
    expect(kinds).toEqual(['listed', 'unlisted', 'unordered']);
  });
});

describe('the periodic sweep at the size of pages', () => {
  it('notes unrecorded blobs, drops lacking copies and forgets listed ones in one pass', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const ids = Array.from({ length: 1_100 }, (_, i) => idOf(i));
    const unrecorded = new Set([ids[0]!, ids[500]!, ids[1_099]!]);
    // Lacking on w1 on both sides of the node index's 1,000-id page border.
    const lacking = new Set([ids[1]!, ids[999]!, ids[1_000]!]);
    await record(
      s,
      ids.filter((id) => !unrecorded.has(id)),
      ['w1', 'w2'],
    );
    // The worker's index as its store keeps it: what its inventory route lists.
    const w1 = s.workers.get('w1')!;
    await w1.store.index.record(ids.filter((id) => !lacking.has(id)).map(line), { sync: false });
    const reconciler = placementFor(s, { orphanGraceMs: 60_000 });
    expect(await reconciler.inventories.sweepOne((await s.sm.getNode('w1'))!)).toBe(unrecorded.size);
    for (const id of lacking) expect((await s.sm.getObject(id))?.replicas).toEqual(['w2']);
    expect((await s.sm.getObject(ids[2]!))?.replicas).toEqual(['w1', 'w2']);
    // Noted once: a second sweep notes nothing new; once recorded on w1, a sighting is forgotten.
    expect(await reconciler.inventories.sweepOne((await s.sm.getNode('w1'))!)).toBe(0);
    await record(s, [ids[500]!], ['w1', 'w2']);
    await reconciler.inventories.sweepOne((await s.sm.getNode('w1'))!);
    s.clock.now += 60_001;
    hearAll(s);
    // Two sightings left past their grace: both deleted (index entries without files, already gone).
    expect(await reconciler.inventories.sweepOrphans()).toBe(2);
  }, 120_000);
});

describe('a rejoin past a batch', () => {
  it('keeps the listed lines a batch at a time and decides the others one by one', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const ids = Array.from({ length: 1_100 }, (_, i) => idOf(i));
    const unrecorded = ids.filter((_, i) => i % 100 === 0);
    await record(
      s,
      ids.filter((_, i) => i % 100 !== 0),
      ['w1', 'w2'],
    );
    const reconciler = placementFor(s, { orphanGraceMs: 60_000 });
    const summary = await reconciler.inventories.reconcile('w1', () => ids.map(line), s.clock.now);
    expect(summary.kept).toBe(ids.length - unrecorded.length);
    expect(summary.orphanPending).toBe(unrecorded.length);
    expect(summary.missingDropped).toBe(0);
    expect(await metric(s, 'imgvault_reconcile_decisions_total')).toBe(ids.length);
  }, 120_000);
});

describe('the pace of the periodic sweep', () => {
  it("waits three times a sweep's length after it before the next, past the configured period", async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const lines: { event?: string; durationMs?: number; nextDueAt?: number }[] = [];
    const sink = new Writable({
      write(chunk, _encoding, done) {
        for (const text of String(chunk).split('\n')) if (text) lines.push(JSON.parse(text));
        done();
      },
    });
    const loop = placementFor(s, { inventorySweepMs: 1_000, log: pino({ level: 'info' }, sink) });
    const sweeps = () => lines.filter((l) => l.event === 'reconcile.sweep_done');
    const t0 = s.clock.now;
    await loop.pass();
    // Not due yet: the first sweep comes a period after the first pass.
    s.clock.now = t0 + 1_000;
    const pass = loop.pass();
    // The sweep started with the pass above and ends 10 s later, as the clock goes.
    s.clock.now = t0 + 11_000;
    await pass;
    await until(() => sweeps().length === 1, 'the first sweep done');
    expect(sweeps()[0]).toMatchObject({ durationMs: 10_000, nextDueAt: t0 + 41_000 });
    s.clock.now = t0 + 40_999;
    await loop.pass();
    s.clock.now = t0 + 41_000;
    await loop.pass();
    await until(() => sweeps().length === 2, 'the second sweep done');
    // One started at 40,999 ms would show here instead: 1 ms long, next due at 41,999 ms.
    expect(sweeps()[1]).toMatchObject({ durationMs: 0, nextDueAt: t0 + 42_000 });
  }, 60_000);
});

async function until(check: () => boolean, what: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting: ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
