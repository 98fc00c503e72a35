import { describe, expect, it } from 'vitest';
import { type PlacementCandidate, rankTargets } from '../../src/manager/placement.ts';
import { WorkerLiveness } from '../../src/manager/workerLiveness.ts';
import type { NodeView } from '../../src/metadata/commands.ts';

function node(nodeId: string, over: Partial<PlacementCandidate> = {}): PlacementCandidate {
  return { nodeId, zone: 'z1', state: 'up', diskUsed: 100, diskFree: 900, objectCount: 10, ...over };
}

describe('rankTargets', () => {
  it('puts the least used disk first', () => {
    const ranked = rankTargets([
      node('a', { diskUsed: 500, diskFree: 500 }),
      node('b'),
      node('c', { diskUsed: 300, diskFree: 700 }),
    ]);
    expect(ranked.map((n) => n.nodeId)).toEqual(['b', 'c', 'a']);
  });

  it('only offers live nodes outside the exclusion set', () => {
    const ranked = rankTargets(
      [
        node('a'),
        node('b', { state: 'down' }),
        node('c', { state: 'suspect' }),
        node('d', { state: 'draining' }),
        node('e'),
      ],
      { exclude: new Set(['a']) },
    );
    expect(ranked.map((n) => n.nodeId)).toEqual(['e']);
  });

  it('prefers another zone for the secondary when one exists', () => {
    const nodes = [
      node('a', { zone: 'z1' }),
      node('b', { zone: 'z1', diskUsed: 0 }),
      node('c', { zone: 'z2', diskUsed: 800, diskFree: 200 }),
    ];
    const ranked = rankTargets(nodes, { exclude: new Set(['a']), avoidZones: new Set(['z1']) });
    expect(ranked.map((n) => n.nodeId)).toEqual(['c', 'b']);
  });

  it('falls back to the same zone when no other zone has a live node', () => {
    const nodes = [
      node('a', { zone: 'z1' }),
      node('b', { zone: 'z1' }),
      node('c', { zone: 'z2', state: 'down' }),
    ];
    const ranked = rankTargets(nodes, { exclude: new Set(['a']), avoidZones: new Set(['z1']) });
    expect(ranked.map((n) => n.nodeId)).toEqual(['b']);
  });

  it('skips nodes without room for the copy', () => {
    const ranked = rankTargets([node('a', { diskFree: 10 }), node('b', { diskFree: 5000 })], { size: 100 });
    expect(ranked.map((n) => n.nodeId)).toEqual(['b']);
  });

  it('orders ties deterministically by object count then id', () => {
    const ranked = rankTargets([node('c'), node('b', { objectCount: 3 }), node('a')]);
    expect(ranked.map((n) => n.nodeId)).toEqual(['b', 'a', 'c']);
  });
});

describe('placement between heartbeats', () => {
  it('ranks disks within one percent of each other by object count, not by the bytes between them', () => {
    // Workers sharing a filesystem report it a few bytes apart, depending on when they looked.
    const ranked = rankTargets([
      node('a', { diskUsed: 105_000_010, diskFree: 895_000_000, objectCount: 12 }),
      node('b', { diskUsed: 105_000_000, diskFree: 895_000_010, objectCount: 40 }),
    ]);
    expect(ranked.map((n) => n.nodeId)).toEqual(['a', 'b']);
  });

  it('spreads copies placed before the next heartbeat over equally used workers', () => {
    const liveness = new WorkerLiveness({ suspectAfterMs: 1_000, now: () => 0 });
    const table: NodeView[] = ['w1', 'w2', 'w3'].map((nodeId) => ({
      nodeId,
      url: `http://127.0.0.1:1/${nodeId}`,
      zone: 'z1',
      state: 'up',
      stateSince: 0,
      lastSeen: 0,
      diskUsed: 1_000_000,
      diskFree: 9_000_000,
      objectCount: 0,
    }));
    const chosen = new Map<string, number>();
    for (let i = 0; i < 30; i++) {
      const target = rankTargets(liveness.candidates(table), { size: 1000 })[0]!;
      liveness.reservePlacement(target.nodeId, 1000);
      chosen.set(target.nodeId, (chosen.get(target.nodeId) ?? 0) + 1);
    }
    expect(Object.fromEntries(chosen)).toEqual({ w1: 10, w2: 10, w3: 10 });

    // A heartbeat carries the worker's own figures, which now include those copies.
    liveness.heard({ nodeId: 'w1', diskUsed: 1_010_000, diskFree: 8_990_000, objectCount: 10, lastSeen: 0 });
    expect(liveness.candidates(table).find((n) => n.nodeId === 'w1')).toMatchObject({
      diskUsed: 1_010_000,
      objectCount: 10,
    });
    expect(liveness.candidates(table).find((n) => n.nodeId === 'w2')).toMatchObject({
      diskUsed: 1_010_000,
      objectCount: 10,
    });
  });
});
