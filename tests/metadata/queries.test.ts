import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Command } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine, Page } from '../../src/metadata/metadataStateMachine.ts';
import { EntryLog, MetadataFixture, recordCmd, registerCmd } from './metadataFixture.ts';

const fx = new MetadataFixture();
let sm: MetadataStateMachine;
let log: EntryLog;

beforeEach(async () => {
  sm = await fx.machine();
  log = new EntryLog();
});
afterEach(() => fx.cleanup());

async function setup(commands: Command[]): Promise<void> {
  await sm.apply(commands.map((c) => log.command(c)));
}

/** Follows `next` to the end, checking every page respects the limit. */
async function collect<T>(fetch: (after?: string) => Promise<Page<T>>, limit: number): Promise<T[][]> {
  const pages: T[][] = [];
  let after: string | undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await fetch(after);
    expect(page.items.length).toBeLessThanOrEqual(limit);
    pages.push(page.items);
    if (page.next === null) return pages;
    after = page.next;
  }
  throw new Error('pagination did not end');
}

describe('node index', () => {
  it('a range scan returns exactly one node, even when node ids are prefixes of one another', async () => {
    const nodes = ['w1', 'w1-b', 'w1.c', 'w10', 'w1_d'];
    await setup([
      ...nodes.map((n) => registerCmd(n)),
      recordCmd('o1', ['w1', 'w10']),
      recordCmd('o2', ['w1-b', 'w1.c']),
      recordCmd('o3', ['w1_d', 'w1']),
      recordCmd('o4', ['w10', 'w1-b']),
    ]);
    expect((await sm.objectsOnNode('w1')).items).toEqual(['o1', 'o3']);
    expect((await sm.objectsOnNode('w1-b')).items).toEqual(['o2', 'o4']);
    expect((await sm.objectsOnNode('w1.c')).items).toEqual(['o2']);
    expect((await sm.objectsOnNode('w10')).items).toEqual(['o1', 'o4']);
    expect((await sm.objectsOnNode('w1_d')).items).toEqual(['o3']);
    expect((await sm.objectsOnNode('w')).items).toEqual([]);
    expect((await sm.objectsOnNode('w1/o')).items).toEqual([]);
  });

  it('pages through what a node holds in id order', async () => {
    const ids = Array.from({ length: 23 }, (_, i) => `img-${String(i).padStart(3, '0')}`);
    await setup([
      registerCmd('a'),
      registerCmd('b'),
      registerCmd('c'),
      // Interleave so each node's rows are not a contiguous run of the object table.
      ...ids.map((id, i) => recordCmd(id, i % 2 === 0 ? ['a', 'b'] : ['b', 'c'])),
    ]);
    const pages = await collect((after) => sm.objectsOnNode('a', { limit: 5, after }), 5);
    expect(pages.map((p) => p.length)).toEqual([5, 5, 2]);
    expect(pages.flat()).toEqual(ids.filter((_, i) => i % 2 === 0));
    expect((await collect((after) => sm.objectsOnNode('b', { limit: 7, after }), 7)).flat()).toEqual(ids);
  });
});

describe('listObjects', () => {
  it('pages through every object in id order, whatever order they were recorded in', async () => {
    const ids = Array.from({ length: 31 }, (_, i) => `o${String((i * 17) % 31).padStart(2, '0')}`);
    await setup([registerCmd('a'), registerCmd('b'), ...ids.map((id) => recordCmd(id, ['a', 'b'], 1))]);
    const pages = await collect((after) => sm.listObjects({ limit: 10, after }), 10);
    expect(pages.map((p) => p.length)).toEqual([10, 10, 10, 1]);
    expect(pages.flat().map((o) => o.id)).toEqual([...ids].sort());
    // A page that ends exactly at the last object says so.
    expect((await sm.listObjects({ limit: 31 })).next).toBeNull();
    expect((await sm.listObjects({ limit: 30 })).next).toBe('o29');
    // An `after` between ids starts at the next one.
    expect((await sm.listObjects({ limit: 2, after: 'o05a' })).items.map((o) => o.id)).toEqual([
      'o06',
      'o07',
    ]);
    // Limits are clamped to [1, 1000].
    expect((await sm.listObjects({ limit: 0 })).items).toHaveLength(1);
    expect((await sm.listObjects({ limit: 1e9 })).items).toHaveLength(31);
  });

  it('pages of 1,000 cover more objects than one table read hands over, each once, in order', async () => {
    const ids = Array.from({ length: 2_500 }, (_, i) => `p${String(i).padStart(5, '0')}`);
    await setup([registerCmd('a'), registerCmd('b'), ...ids.map((id) => recordCmd(id, ['a', 'b'], 1))]);
    const pages = await collect((after) => sm.listObjects({ limit: 1000, after }), 1000);
    expect(pages.map((p) => p.length)).toEqual([1000, 1000, 500]);
    expect(pages.flat().map((o) => o.id)).toEqual(ids);
    // A whole-table scan reads them in several batches: the streamed snapshot holds each row once.
    let text = '';
    for await (const chunk of sm.snapshotChunks()) text += Buffer.from(chunk).toString('utf8');
    const objectRows = text.split('\n').filter((line) => line.startsWith('["objects",'));
    expect(objectRows.map((line) => (JSON.parse(line) as string[])[1])).toEqual(ids);
  });
});

describe('underReplicated', () => {
  it('finds objects with fewer than two replicas on up nodes, in bounded steps', async () => {
    await setup([
      registerCmd('a'),
      registerCmd('b'),
      registerCmd('c'),
      registerCmd('d'),
      ...Array.from({ length: 40 }, (_, i) => {
        const id = `o${String(i).padStart(2, '0')}`;
        return recordCmd(id, i % 4 === 0 ? ['a', 'b'] : i % 4 === 1 ? ['c', 'd'] : ['a', 'c']);
      }),
      { type: 'markNodeState', nodeId: 'c', state: 'down', at: 9000 },
      { type: 'markNodeState', nodeId: 'd', state: 'draining', at: 9000 },
    ]);
    // i % 4 === 0 is on a and b (both up); every other object has a replica on c (down).
    const expected = Array.from({ length: 40 }, (_, i) => i)
      .filter((i) => i % 4 !== 0)
      .map((i) => `o${String(i).padStart(2, '0')}`);

    let scanned = 0;
    const pages = await collect(async (after) => {
      const page = await sm.underReplicated({ scanLimit: 6, limit: 4, after });
      scanned++;
      return page;
    }, 4);
    expect(pages.flat().map((u) => u.object.id)).toEqual(expected);
    expect(scanned).toBeGreaterThanOrEqual(Math.ceil(40 / 6));

    const all = await sm.underReplicated({ scanLimit: 1000, limit: 1000 });
    expect(all.next).toBeNull();
    const byId = new Map(all.items.map((u) => [u.object.id, u.liveReplicas]));
    expect(byId.get('o01')).toEqual([]);
    expect(byId.get('o02')).toEqual(['a']);

    // Asking for one live replica only finds the objects with none.
    const none = await sm.underReplicated({ minLive: 1, limit: 1000 });
    expect(none.items.map((u) => u.object.id)).toEqual(
      expected.filter((id) => Number(id.slice(1)) % 4 === 1),
    );
  });

  it('reports nothing when every object has two up replicas', async () => {
    await setup([registerCmd('a'), registerCmd('b'), recordCmd('x', ['a', 'b'])]);
    expect(await sm.underReplicated()).toEqual({ items: [], next: null });
  });
});

describe('nodes and stats', () => {
  it('lists nodes in id order and counts per node from the object table', async () => {
    await setup([
      registerCmd('n2'),
      registerCmd('n1'),
      registerCmd('n3'),
      recordCmd('x', ['n1', 'n2'], 10),
      recordCmd('y', ['n2', 'n3'], 20),
    ]);
    expect((await sm.listNodes()).map((n) => n.nodeId)).toEqual(['n1', 'n2', 'n3']);
    expect(await sm.stats()).toEqual({
      appliedIndex: 5,
      objects: 2,
      bytes: 30,
      nodes: { n1: { objects: 1, bytes: 10 }, n2: { objects: 2, bytes: 30 }, n3: { objects: 1, bytes: 20 } },
    });
    expect(await sm.getNode('n9')).toBeNull();
    expect(await sm.getObject('nope')).toBeNull();
  });
});
