// The placement planner, one case per decision: pure functions of the record, the nodes and the
// read-backs done so far. No HTTP, no timers, no tables.

import { describe, expect, it } from 'vitest';
import {
  type CopyCheck,
  classify,
  type HeldCopy,
  needsRepair,
  orphanDue,
  planHeldCopy,
  planMissing,
  planRepair,
  planStray,
  rankExcess,
} from '../../src/manager/placement/plan.ts';
import type { NodeState, NodeView, ObjectView } from '../../src/metadata/commands.ts';

const SHA = 'a'.repeat(64);
const OTHER = 'b'.repeat(64);

function node(nodeId: string, state: NodeState = 'up', zone = `zone-${nodeId}`, objectCount = 0): NodeView {
  return {
    nodeId,
    url: `http://127.0.0.1/${nodeId}`,
    zone,
    state,
    stateSince: 0,
    lastSeen: 0,
    diskUsed: 0,
    diskFree: 1_000_000,
    objectCount,
  } as NodeView;
}

function nodesOf(...list: NodeView[]): Map<string, NodeView> {
  return new Map(list.map((n) => [n.nodeId, n]));
}

function object(replicas: string[], createdAt = 1_000): ObjectView {
  return { id: 'obj', size: 10, sha256: SHA, contentType: 'image/png', createdAt, replicas } as ObjectView;
}

function checks(entries: Record<string, CopyCheck> = {}): Map<string, CopyCheck> {
  return new Map(Object.entries(entries));
}

/** Every node serves except those the case names as silent. */
function repairPlan(
  replicas: string[],
  nodes: Map<string, NodeView>,
  opts: { silent?: string[]; deleting?: string[]; checks?: Record<string, CopyCheck> } = {},
) {
  const r = classify(object(replicas), nodes, (n) => !opts.silent?.includes(n.nodeId) && n.state !== 'down');
  return planRepair(r, nodes, opts.deleting ?? [], checks(opts.checks));
}

describe('classify and needsRepair', () => {
  it('sorts copies into healthy, leaving (including unknown nodes) and sources', () => {
    const nodes = nodesOf(node('w1'), node('w2', 'down'), node('w3', 'draining'));
    const r = classify(object(['w1', 'w2', 'w3', 'gone']), nodes, (n) => n.state !== 'down');
    expect(r.healthy).toEqual(['w1']);
    expect(r.leaving).toEqual(['w2', 'w3', 'gone']);
    expect(r.sources.map((n) => n.nodeId)).toEqual(['w1', 'w3']);
    expect(needsRepair(r)).toBe(true);
  });

  it('leaves an object with exactly two healthy copies and none leaving alone', () => {
    const nodes = nodesOf(node('w1'), node('w2'));
    expect(needsRepair(classify(object(['w1', 'w2']), nodes, () => true))).toBe(false);
  });
});

describe('planRepair', () => {
  const cases: {
    name: string;
    replicas: string[];
    nodes: NodeView[];
    opts?: Parameters<typeof repairPlan>[2];
    want: ReturnType<typeof planRepair>;
  }[] = [
    {
      name: 'two healthy copies: nothing to do',
      replicas: ['w1', 'w2'],
      nodes: [node('w1'), node('w2')],
      want: { kind: 'healthy' },
    },
    {
      name: 'a copy on a down node: copy, replacing it',
      replicas: ['w1', 'w2'],
      nodes: [node('w1', 'down'), node('w2')],
      want: { kind: 'copy', replaces: 'w1' },
    },
    {
      name: 'one copy short with none leaving (a copy dropped missing): copy, adding',
      replicas: ['w2'],
      nodes: [node('w1'), node('w2')],
      want: { kind: 'copy' },
    },
    {
      name: 'every copy on a down node: unavailable, not lost',
      replicas: ['w1', 'w2'],
      nodes: [node('w1', 'down'), node('w2', 'down')],
      want: { kind: 'unavailable' },
    },
    {
      name: 'no copy on a serving node (silent draining holder, down other): unavailable',
      replicas: ['w1', 'w2'],
      nodes: [node('w1', 'draining'), node('w2', 'down')],
      opts: { silent: ['w1'] },
      want: { kind: 'unavailable' },
    },
    {
      name: 'two healthy copies beside a down one: the record forgets it, nothing deleted',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'down'), node('w2'), node('w3')],
      want: { kind: 'remove', nodeIds: ['w1'], deleteFrom: [], reason: 'leaving' },
    },
    {
      name: 'beside a draining copy still serving: the copies that stay are read back first',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'draining'), node('w2'), node('w3')],
      opts: { deleting: ['w1'] },
      want: { kind: 'readBack', nodeIds: ['w2', 'w3'] },
    },
    {
      name: 'beside a draining copy, both stayers proved: forget it and delete its bytes',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'draining'), node('w2'), node('w3')],
      opts: { deleting: ['w1'], checks: { w2: 'good', w3: 'good' } },
      want: { kind: 'remove', nodeIds: ['w1'], deleteFrom: ['w1'], reason: 'leaving' },
    },
    {
      name: 'beside a draining copy, a stayer rotten: the rotten one is dropped, the draining one kept',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'draining'), node('w2'), node('w3')],
      opts: { deleting: ['w1'], checks: { w2: 'bad', w3: 'good' } },
      want: { kind: 'remove', nodeIds: ['w2'], deleteFrom: ['w2'], reason: 'badCopy' },
    },
    {
      name: 'beside a draining copy, a stayer unreadable: wait',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'draining'), node('w2'), node('w3')],
      opts: { deleting: ['w1'], checks: { w2: 'unknown', w3: 'good' } },
      want: { kind: 'wait', reason: 'unproven' },
    },
    {
      name: 'three healthy copies: every copy is read back before a trim',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'up', 'a'), node('w2', 'up', 'a'), node('w3', 'up', 'b')],
      want: { kind: 'readBack', nodeIds: ['w1', 'w2', 'w3'] },
    },
    {
      name: 'three good copies: trim one of the two sharing a zone',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'up', 'a'), node('w2', 'up', 'a'), node('w3', 'up', 'b')],
      opts: { checks: { w1: 'good', w2: 'good', w3: 'good' } },
      want: { kind: 'trim', nodeId: 'w1' },
    },
    {
      name: 'three copies, the one placement would keep is rotten: that one is trimmed',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'up', 'a'), node('w2', 'up', 'a'), node('w3', 'up', 'b')],
      opts: { checks: { w1: 'good', w2: 'good', w3: 'bad' } },
      want: { kind: 'trim', nodeId: 'w3' },
    },
    {
      name: 'three copies, an unreadable one goes before a good one',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1', 'up', 'a'), node('w2', 'up', 'a'), node('w3', 'up', 'b')],
      opts: { checks: { w1: 'good', w2: 'good', w3: 'unknown' } },
      want: { kind: 'trim', nodeId: 'w3' },
    },
    {
      name: 'three copies, two rotten: nothing trimmed',
      replicas: ['w1', 'w2', 'w3'],
      nodes: [node('w1'), node('w2'), node('w3')],
      opts: { checks: { w1: 'bad', w2: 'bad', w3: 'good' } },
      want: { kind: 'wait', reason: 'unproven' },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(repairPlan(c.replicas, nodesOf(...c.nodes), c.opts)).toEqual(c.want);
    });
  }
});

describe('rankExcess, the one ranking of which copy goes', () => {
  it('gives up a copy sharing its zone first, then the fuller worker, then by id', () => {
    const nodes = nodesOf(node('w1', 'up', 'a', 5), node('w2', 'up', 'a', 9), node('w3', 'up', 'b', 100));
    expect(rankExcess(['w1', 'w2', 'w3'], ['w1', 'w2', 'w3'], nodes)).toEqual(['w2', 'w1', 'w3']);
    const even = nodesOf(node('w1', 'up', 'a'), node('w2', 'up', 'b'), node('w3', 'up', 'c'));
    expect(rankExcess(['w1', 'w2', 'w3'], ['w3', 'w1', 'w2'], even)).toEqual(['w1', 'w2', 'w3']);
  });

  it('counts the copy that stays for zones, among candidates that may go', () => {
    // The returning copy (r, zone a) stays: the replacement sharing its zone goes.
    const nodes = nodesOf(node('r', 'up', 'a'), node('w1', 'up', 'a'), node('w2', 'up', 'b', 50));
    expect(rankExcess(['w1', 'w2', 'r'], ['w1', 'w2'], nodes)[0]).toBe('w1');
  });
});

describe('planHeldCopy (a copy a worker reported, against the record)', () => {
  const line: HeldCopy = { id: 'obj', size: 10, sha256: SHA };
  const three = () => nodesOf(node('r'), node('w1'), node('w2'));
  const cases: {
    name: string;
    self?: NodeView;
    line?: HeldCopy;
    record: ObjectView | null;
    nodes?: Map<string, NodeView>;
    checks?: Record<string, CopyCheck>;
    want: ReturnType<typeof planHeldCopy>;
  }[] = [
    { name: 'no record: an orphan', record: null, want: { kind: 'orphan' } },
    { name: 'listed with the right checksum: kept', record: object(['r', 'w1']), want: { kind: 'kept' } },
    {
      name: 'a checksum the record does not have: its bytes are read back first',
      line: { ...line, sha256: OTHER },
      record: object(['r', 'w1']),
      want: { kind: 'readBack', nodeIds: ['r'] },
    },
    {
      name: 'a wrong checksum the bytes confirm, listed: unrecorded and deleted',
      line: { ...line, sha256: OTHER },
      record: object(['r', 'w1']),
      checks: { r: 'bad' },
      want: { kind: 'deleteCorrupt', listed: true },
    },
    {
      name: 'a wrong checksum the bytes confirm, unlisted: deleted',
      line: { ...line, sha256: OTHER },
      record: object(['w1', 'w2']),
      checks: { r: 'bad' },
      want: { kind: 'deleteCorrupt', listed: false },
    },
    {
      name: 'a wrong index entry over right bytes costs no copy',
      line: { ...line, sha256: OTHER },
      record: object(['r', 'w1']),
      checks: { r: 'good' },
      want: { kind: 'skip', reason: 'notBad' },
    },
    {
      name: 'unlisted, the object short of copies: re-adopted',
      record: object(['w1']),
      want: { kind: 'readopt' },
    },
    {
      name: 'unlisted beside two healthy copies: the returning copy is read back first',
      record: object(['w1', 'w2']),
      want: { kind: 'readBack', nodeIds: ['r'] },
    },
    {
      name: 'returning copy rotten: deleted, never traded for a good replacement',
      record: object(['w1', 'w2']),
      checks: { r: 'bad' },
      want: { kind: 'deleteCorrupt', listed: false },
    },
    {
      name: 'returning copy unreadable: nothing changes',
      record: object(['w1', 'w2']),
      checks: { r: 'unknown' },
      want: { kind: 'skip', reason: 'unproven' },
    },
    {
      name: 'returning copy good: the two recorded ones are read back before a trade',
      record: object(['w1', 'w2']),
      checks: { r: 'good' },
      want: { kind: 'readBack', nodeIds: ['w1', 'w2'] },
    },
    {
      name: 'all good: the returning copy replaces the least wanted replacement',
      record: object(['w1', 'w2']),
      nodes: nodesOf(node('r', 'up', 'a'), node('w1', 'up', 'b'), node('w2', 'up', 'a')),
      checks: { r: 'good', w1: 'good', w2: 'good' },
      want: { kind: 'replace', remove: 'w2' },
    },
    {
      name: 'a recorded copy rotten: it is the one replaced',
      record: object(['w1', 'w2']),
      checks: { r: 'good', w1: 'bad', w2: 'good' },
      want: { kind: 'replace', remove: 'w1' },
    },
    {
      name: 'no recorded copy proved beside it: re-adopted, the excess stays',
      record: object(['w1', 'w2']),
      checks: { r: 'good', w1: 'unknown', w2: 'unknown' },
      want: { kind: 'readoptOnly' },
    },
    {
      name: 'unlisted on a draining worker beside two proved copies: deleted, not re-adopted',
      self: node('r', 'draining'),
      record: object(['w1', 'w2']),
      nodes: nodesOf(node('r', 'draining'), node('w1'), node('w2')),
      checks: { w1: 'good', w2: 'good' },
      want: { kind: 'deleteExcess' },
    },
    {
      name: 'unlisted on a draining worker, the others unproved: kept for now',
      self: node('r', 'draining'),
      record: object(['w1', 'w2']),
      nodes: nodesOf(node('r', 'draining'), node('w1'), node('w2')),
      checks: { w1: 'good', w2: 'bad' },
      want: { kind: 'skip', reason: 'unproven' },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const nodes = c.nodes ?? three();
      expect(planHeldCopy(c.self ?? node('r'), c.line ?? line, c.record, nodes, checks(c.checks))).toEqual(
        c.want,
      );
    });
  }
});

describe('planStray (an unlisted blob past its grace)', () => {
  const nodes = nodesOf(node('s'), node('w1'), node('w2'), node('d', 'draining'));
  const cases: {
    name: string;
    on: NodeView | null;
    record: ObjectView | null;
    checks?: Record<string, CopyCheck>;
    want: ReturnType<typeof planStray>;
  }[] = [
    { name: 'no record knows it: deleted', on: node('s'), record: null, want: { kind: 'delete' } },
    { name: 'its node left the table: forgotten', on: null, record: null, want: { kind: 'forget' } },
    {
      name: 'recorded meanwhile: forgotten',
      on: node('s'),
      record: object(['s', 'w1']),
      want: { kind: 'forget' },
    },
    {
      name: 'a stray beside two healthy copies: those are read back first',
      on: node('s'),
      record: object(['w1', 'w2']),
      want: { kind: 'readBack', nodeIds: ['w1', 'w2'] },
    },
    {
      name: 'a stray beside two proved copies: deleted',
      on: node('s'),
      record: object(['w1', 'w2']),
      checks: { w1: 'good', w2: 'good' },
      want: { kind: 'delete' },
    },
    {
      name: 'a stray beside a rotten copy: its own bytes are read back',
      on: node('s'),
      record: object(['w1', 'w2']),
      checks: { w1: 'good', w2: 'bad' },
      want: { kind: 'readBack', nodeIds: ['s'] },
    },
    {
      name: 'a good stray of an object short of copies: re-adopted',
      on: node('s'),
      record: object(['w1']),
      checks: { s: 'good' },
      want: { kind: 'readopt' },
    },
    {
      name: 'a stray of other bytes (the id uploaded again): deleted',
      on: node('s'),
      record: object(['w1']),
      checks: { s: 'bad' },
      want: { kind: 'delete' },
    },
    {
      name: 'a stray that cannot be read back: left alone',
      on: node('s'),
      record: object(['w1']),
      checks: { s: 'unknown' },
      want: { kind: 'unproven' },
    },
    {
      name: 'a stray on a draining worker of an object short of copies: forgotten, not re-adopted',
      on: node('d', 'draining'),
      record: object(['w1']),
      want: { kind: 'forget' },
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(planStray(c.on, c.record, nodes, checks(c.checks))).toEqual(c.want);
    });
  }

  it('deletes an orphan only once its grace has passed', () => {
    expect(orphanDue(1_000, 1_999, 1_000)).toBe(false);
    expect(orphanDue(1_000, 2_000, 1_000)).toBe(true);
  });
});

describe('planMissing (a recorded copy an inventory lacks)', () => {
  it('skips a record made after the inventory was read: its copy may have landed since', () => {
    expect(planMissing(object(['w1', 'w2'], 5_000), 'w1', 5_000)).toEqual({ kind: 'skip' });
  });
  it('skips an object gone or no longer listed there', () => {
    expect(planMissing(null, 'w1', 5_000)).toEqual({ kind: 'skip' });
    expect(planMissing(object(['w2']), 'w1', 5_000)).toEqual({ kind: 'skip' });
  });
  it('asks the worker itself before dropping anything', () => {
    expect(planMissing(object(['w1', 'w2']), 'w1', 5_000)).toEqual({ kind: 'ask' });
  });
  it('keeps it when the worker holds it, drops it when the worker says it does not', () => {
    expect(planMissing(object(['w1', 'w2']), 'w1', 5_000, 'yes')).toEqual({ kind: 'kept' });
    expect(planMissing(object(['w1', 'w2']), 'w1', 5_000, 'no')).toEqual({ kind: 'drop' });
  });
  it('drops nothing when the worker could not say', () => {
    expect(planMissing(object(['w1', 'w2']), 'w1', 5_000, 'unknown')).toEqual({ kind: 'skip' });
  });
});
