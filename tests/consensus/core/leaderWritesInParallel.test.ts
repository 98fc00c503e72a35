// The leader sends its appends while it writes them (Ready.messagesBeforePersist, thesis 10.2.1)
// and counts itself toward a commit only once its write is durable (Raft.selfDurable).

import { describe, expect, test } from 'vitest';
import type { RaftConfig } from '../../../src/consensus/api.ts';
import { bootstrapSnapshot, MemoryStorage, RaftCore } from '../../../src/consensus/core/index.ts';
import type { Message, Ready } from '../../../src/consensus/types.ts';
import { Network, seededRandom } from './network.ts';

function persist(storage: MemoryStorage, rd: Ready): void {
  if (rd.snapshot) storage.applySnapshot(rd.snapshot);
  storage.append(rd.entries);
  if (rd.hardState) storage.setHardState(rd.hardState);
}

/** A single voter `a` with a learner `l`, the case an earlier attempt got wrong. */
function singleVoterWithLearner(): { core: RaftCore; storage: MemoryStorage } {
  const snap = bootstrapSnapshot(['a']);
  snap.metadata.confState = { voters: ['a'], learners: ['l'] };
  const storage = new MemoryStorage(snap);
  const config: RaftConfig = {
    id: 'a',
    storage,
    electionTick: 10,
    heartbeatTick: 1,
    random: seededRandom(3),
  };
  return { core: new RaftCore(config), storage };
}

describe('the leader writes its own log in parallel with replicating it', () => {
  test('a single voter electing itself sends nothing to its learner before its new term is durable', () => {
    const { core, storage } = singleVoterWithLearner();
    core.campaign();
    expect(core.propose('x')).toBeNull();
    const rd = core.ready();
    expect(rd.softState?.role).toBe('leader');
    expect(rd.hardState?.term).toBe(2);
    // Sent before the write, an append of term 2 could outlive a crash that forgets the election:
    // the restarted node would win term 2 again and write other entries at the same indexes.
    expect(rd.messagesBeforePersist).toEqual([]);
    expect(rd.messages.some((m: Message) => m.type === 'MsgApp' && m.to === 'l')).toBe(true);
    expect(rd.hardState?.commit).toBe(1);
    persist(storage, rd);
    core.advance();
    expect(core.status().commit).toBe(3);
  });

  test('a single voter with a learner commits only its durable entries, and the learner never counts', () => {
    const { core, storage } = singleVoterWithLearner();
    core.campaign();
    let probe: Message | undefined;
    for (let i = 0; i < 5 && core.hasReady(); i++) {
      const rd = core.ready();
      persist(storage, rd);
      core.advance();
      probe = [...rd.messagesBeforePersist, ...rd.messages].find((m) => m.type === 'MsgApp') ?? probe;
    }
    // The learner holds the bootstrap snapshot and takes the probe: replicate from now on.
    const probed = (probe?.index ?? 0) + (probe?.entries?.length ?? 0);
    core.step({ type: 'MsgAppResp', from: 'l', to: 'a', term: 2, index: probed });
    if (core.hasReady()) {
      persist(storage, core.ready());
      core.advance();
    }
    expect(core.propose('x')).toBeNull();
    const rd = core.ready();
    const x = rd.entries[0]!.index;
    const toLearner = rd.messagesBeforePersist.find((m) => m.type === 'MsgApp' && m.to === 'l')!;
    expect(toLearner.entries?.map((e) => e.data)).toEqual(['x']);
    expect(toLearner.commit).toBeLessThan(x);
    // The learner acknowledges x before the leader's own write is done: no commit.
    core.step({ type: 'MsgAppResp', from: 'l', to: 'a', term: 2, index: x });
    expect(core.status().commit).toBeLessThan(x);
    persist(storage, rd);
    core.advance();
    expect(core.status().commit).toBe(x);
    const next = core.ready();
    expect(next.committedEntries.map((e) => e.data)).toEqual(['x']);
    // The learner hears of the commit in the next Ready.
    expect(next.messagesBeforePersist.some((m) => m.to === 'l' && m.commit === x)).toBe(true);
  });

  test('three voters: the leader and one follower must both have the entry on disk', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    n.stabilize();
    const a = n.core('a');
    expect(a.propose('x')).toBeNull();
    const rd = a.ready();
    const x = rd.entries[0]!.index;
    const toB = rd.messagesBeforePersist.find((m) => m.type === 'MsgApp' && m.to === 'b')!;
    expect(rd.messages).toEqual([]);
    n.core('b').step(toB);
    const rdB = n.core('b').ready();
    // The follower's acknowledgement waits for its own write.
    expect(rdB.messagesBeforePersist).toEqual([]);
    const ack = rdB.messages.find((m) => m.type === 'MsgAppResp')!;
    a.step(ack);
    expect(a.status().commit).toBeLessThan(x);
    persist(n.node('a').storage, rd);
    a.advance();
    expect(a.status().commit).toBe(x);
  });

  test('a leader ticking while its write is in flight sends its heartbeats at once, of its durable term only', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    n.stabilize();
    const a = n.core('a');
    expect(a.propose('x')).toBeNull();
    const rd = a.ready();
    a.tick();
    const beats = a.takeHeartbeats();
    expect(beats.map((m) => [m.type, m.to, m.term])).toEqual([
      ['MsgHeartbeat', 'b', rd.messagesBeforePersist[0]!.term],
      ['MsgHeartbeat', 'c', rd.messagesBeforePersist[0]!.term],
    ]);
    persist(n.node('a').storage, rd);
    a.advance();
    expect(a.ready().messagesBeforePersist.filter((m) => m.type === 'MsgHeartbeat')).toEqual([]);

    // An election not yet on disk: its heartbeats wait for the write, as its appends do.
    const { core, storage } = singleVoterWithLearner();
    core.campaign();
    const first = core.ready();
    expect(first.hardState?.term).toBe(2);
    core.tick();
    expect(core.takeHeartbeats()).toEqual([]);
    persist(storage, first);
    core.advance();
    core.tick();
    expect(core.ready().messagesBeforePersist.some((m) => m.type === 'MsgHeartbeat' && m.to === 'l')).toBe(
      true,
    );
  });

  test("a follower whose write is in flight answers its leader's heartbeat at once", () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    n.stabilize();
    const a = n.core('a');
    const b = n.core('b');
    expect(a.propose('x')).toBeNull();
    const append = a.ready().messagesBeforePersist.find((m) => m.type === 'MsgApp' && m.to === 'b')!;
    b.step(append);
    const inFlight = b.ready();
    expect(inFlight.entries.map((e) => e.data)).toEqual(['x']);
    a.tick();
    const beat = a.takeHeartbeats().find((m) => m.to === 'b')!;
    b.step(beat);
    expect(b.takeHeartbeats().map((m) => [m.type, m.to, m.term])).toEqual([
      ['MsgHeartbeatResp', 'a', beat.term],
    ]);
    // The append's answer still waits for the write.
    expect(inFlight.messages.map((m) => m.type)).toEqual(['MsgAppResp']);
  });
});
