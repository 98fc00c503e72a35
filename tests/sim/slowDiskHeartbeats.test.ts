// Issue 17, section 3: under a burst of uploads a synced write can take longer than the followers'
// election timeout. The leader must keep its heartbeats going meanwhile, or its followers elect
// another leader while it is merely slow (etcd warns "leader failed to send out heartbeat on time").
// The real driver runs in the host simulation, every synced write taking up to three election
// timeouts, with writes proposed throughout.

import { expect, it } from 'vitest';
import { CALM_WORLD, ELECTION_TICK, HostWorld } from './hostWorld.ts';

it('a leader whose synced writes outlast an election timeout keeps its followers and its term', async () => {
  const world = new HostWorld(
    { ...CALM_WORLD, seed: 17, diskLatencyMax: 3 * ELECTION_TICK },
    { onWriteApplied: () => {} },
  );
  try {
    await world.bootstrap();
    for (let t = 0; t < 100 * ELECTION_TICK && world.leader() === null; t++) await world.runTick();
    const leader = world.leader();
    expect(leader).not.toBeNull();
    const term = leader!.raft!.status().term;
    let acknowledged = 0;
    for (let t = 0; t < 50 * ELECTION_TICK; t++) {
      if (t % 3 === 0) {
        const value = `w${t}`;
        world.clientCall(leader!, () => {
          leader!.raft!.propose(value, value).then(
            () => acknowledged++,
            () => {},
          );
        });
      }
      await world.runTick();
    }
    expect(world.leader()?.id).toBe(leader!.id);
    expect(leader!.raft!.status().term).toBe(term);
    expect([...world.checker.leaders.keys()]).toEqual([term]);
    expect(acknowledged).toBeGreaterThan(10);
  } finally {
    await world.cleanup();
  }
}, 120_000);
