import { describe, expect, it } from 'vitest';
import { type PlacementCandidate, rankTargets } from '../../src/manager/placement.ts';

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
