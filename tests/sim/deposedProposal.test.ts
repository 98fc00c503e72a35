// Found by host seed 150 (lazy snapshots): a client's write reached a leader that had just heard of
// a newer term, before the driver's next Ready told it that it no longer led. The driver's role
// check let the proposal through, and the core, now a follower, forwarded it as a MsgProp, which
// the network delivered twice: one client write applied twice, at two indexes. A driver whose core
// has stepped down must refuse the proposal (NotLeader) as it refuses one on a follower.

import { expect, it } from 'vitest';
import { RaftError } from '../../src/consensus/raftNode.ts';
import { CALM_WORLD, ELECTION_TICK, type HostNode, HostWorld } from './hostWorld.ts';

it('a leader deposed before its proposal reaches the core refuses it, never forwards it', async () => {
  const world = new HostWorld({ ...CALM_WORLD, seed: 150, diskLatencyMax: 0 }, { onWriteApplied: () => {} });
  try {
    await world.bootstrap();
    let leader: HostNode | null = null;
    for (let t = 0; t < 20 * ELECTION_TICK && leader === null; t++) {
      await world.runTick();
      leader = world.leader();
    }
    if (leader?.raft == null) throw new Error('no leader elected');
    const raft = leader.raft;
    const other = world.nodes.find((n) => n !== leader)!;
    const term = raft.status().term;
    // A newer term reaches the leader's core; the driver learns of it only at its next Ready.
    raft.receive({ type: 'MsgHeartbeat', from: other.id, to: leader.id, term: term + 1, commit: 0 });
    let outcome: unknown = 'pending';
    raft.propose('w1', 'w1').then(
      (index) => {
        outcome = index;
      },
      (err: unknown) => {
        outcome = err;
      },
    );
    for (let t = 0; t < 10 * ELECTION_TICK && outcome === 'pending'; t++) await world.runTick();
    expect(outcome).toBeInstanceOf(RaftError);
    expect((outcome as RaftError).code).toBe('NotLeader');
  } finally {
    await world.cleanup();
  }
}, 60_000);
