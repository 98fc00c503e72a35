import type { PlacementCandidate } from '../../src/manager/placement.ts';

/** A worker as placement ranks it, up; `usedPercent`: how full its disk looks, 0..100. */
export function candidate(nodeId: string, zone: string, usedPercent = 0): PlacementCandidate {
  return {
    nodeId,
    zone,
    state: 'up',
    diskUsed: usedPercent * 1e10,
    diskFree: (100 - usedPercent) * 1e10,
    objectCount: 0,
  };
}
