// Liveness/throughput: a follower that is fully caught up but was knocked back to probe (e.g. by
// reportUnreachable) must not stay in probe, where the leader sends it one MsgApp per round trip
// and no longer pipelines. Its match is exact, so its next heartbeat response restores replicate
// (etcd reaches the same state through an empty probe: testdata heartbeat_resp_recovers_from_probing).

import { describe, expect, test } from 'vitest';
import { Network } from './network.ts';

describe('a caught-up follower in probe', () => {
  test('goes back to replicate after one heartbeat round, without any new entry', () => {
    const n = new Network(['a', 'b', 'c'], { preVote: false });
    n.campaign('a');
    n.propose('a', 'x');
    const a = n.core('a');
    expect(a.status().progress?.b?.state).toBe('replicate');
    a.reportUnreachable('b');
    expect(a.status().progress?.b?.state).toBe('probe');
    n.tick('a'); // heartbeatTick is 1: one heartbeat round
    expect(a.status().progress?.b).toMatchObject({ state: 'replicate', match: a.status().lastIndex });
  });
});
