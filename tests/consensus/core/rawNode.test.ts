// Ready semantics (types.ts `Ready`), configuration checks and determinism.

import { describe, expect, test } from 'vitest';
import type { RaftConfig } from '../../../src/consensus/api.ts';
import { bootstrapSnapshot, MemoryStorage, RaftCore } from '../../../src/consensus/core/index.ts';
import { Network, seededRandom } from './network.ts';

function config(over: Partial<RaftConfig> = {}): RaftConfig {
  return {
    id: 'a',
    storage: new MemoryStorage(bootstrapSnapshot(['a'])),
    electionTick: 10,
    heartbeatTick: 1,
    random: seededRandom(1),
    ...over,
  };
}

describe('Ready', () => {
  test('carries the hard state only when it changed, and soft state only on a role or leader change', () => {
    const n = new Network(['a', 'b', 'c']);
    expect(n.core('a').hasReady()).toBe(false);
    n.core('a').campaign();
    const rd = n.handleReady('a')!;
    expect(rd.softState).toEqual({ leader: null, role: 'preCandidate' });
    expect(rd.hardState).toBeUndefined();
    n.stabilize();
    n.tick('a');
    n.core('a').tick();
    const quiet = n.handleReady('a')!;
    expect(quiet.softState).toBeUndefined();
    expect(quiet.hardState).toBeUndefined();
    expect(quiet.messages).toEqual([]);
    expect(quiet.messagesBeforePersist.map((m) => m.type)).toEqual(['MsgHeartbeat', 'MsgHeartbeat']);
  });

  test('committed entries are handed out only once they have been persisted locally', () => {
    const storage = new MemoryStorage(bootstrapSnapshot(['a']));
    const core = new RaftCore(config({ storage }));
    core.campaign();
    let rd = core.ready();
    storage.append(rd.entries);
    if (rd.hardState) storage.setHardState(rd.hardState);
    core.advance();
    rd = core.ready();
    core.advance();
    expect(core.propose('x')).toBeNull();
    rd = core.ready();
    expect(rd.entries.map((e) => e.data)).toEqual(['x']);
    // A single voter counts itself only once x is durable: not committed, not applied yet.
    expect(rd.hardState).toBeUndefined();
    expect(rd.committedEntries).toEqual([]);
    storage.append(rd.entries);
    core.advance();
    rd = core.ready();
    expect(rd.hardState?.commit).toBe(rd.committedEntries[0]!.index);
    expect(rd.committedEntries.map((e) => e.data)).toEqual(['x']);
    core.advance();
    expect(core.status()).toMatchObject({ applied: rd.committedEntries[0]!.index });
  });

  test('an append acknowledgement is in the same Ready as the entries it acknowledges', () => {
    const n = new Network(['a', 'b']);
    n.campaign('a');
    n.core('a').propose('x');
    n.handleReady('a');
    const app = n.queue.find((m) => m.type === 'MsgApp' && m.to === 'b')!;
    n.queue = [];
    n.core('b').step(app);
    const rd = n.handleReady('b')!;
    expect(rd.entries.map((e) => e.data)).toEqual(['x']);
    expect(rd.messages).toMatchObject([{ type: 'MsgAppResp', index: rd.entries[0]!.index }]);
  });

  test('ready() must be followed by advance()', () => {
    const core = new RaftCore(config());
    core.campaign();
    expect(core.hasReady()).toBe(true);
    core.ready();
    expect(core.hasReady()).toBe(false);
    expect(() => core.ready()).toThrow(/not advanced/);
    core.advance();
    expect(() => core.advance()).toThrow(/no Ready/);
  });

  test('a restarted node hands out committed entries from its applied index on', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    for (const x of ['x', 'y', 'z']) n.propose('a', x);
    const b = n.node('b');
    const applied = b.appliedIndex;
    const restarted = new RaftCore({ ...config({ id: 'b', storage: b.storage }), applied: applied - 2 });
    const rd = restarted.ready();
    expect(rd.committedEntries.map((e) => e.data)).toEqual(['y', 'z']);
    expect(rd.entries).toEqual([]);
    expect(restarted.status()).toMatchObject({ role: 'follower', term: n.core('a').status().term });
  });
});

describe('restart', () => {
  test('an applied index above the stored commit (a deferred commit-only write) counts as committed', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    for (const x of ['x', 'y']) n.propose('a', x);
    const b = n.node('b');
    const hs = b.storage.initialState().hardState;
    b.storage.setHardState({ ...hs, commit: hs.commit - 2 });
    const restarted = new RaftCore({ ...config({ id: 'b', storage: b.storage }), applied: b.appliedIndex });
    expect(restarted.status()).toMatchObject({ commit: b.appliedIndex, applied: b.appliedIndex });
    const rd = restarted.ready();
    expect(rd.committedEntries).toEqual([]);
    expect(rd.hardState?.commit).toBe(b.appliedIndex);
  });

  test('an applied index beyond the stored log is refused', () => {
    const storage = new MemoryStorage(bootstrapSnapshot(['a']));
    expect(() => new RaftCore(config({ storage, applied: 5 }))).toThrow(/beyond last index/);
  });
});

describe('configuration and determinism', () => {
  test('invalid tick settings and out-of-range randomness are refused loudly', () => {
    expect(() => new RaftCore(config({ electionTick: 1, heartbeatTick: 1 }))).toThrow(/electionTick/);
    expect(() => new RaftCore(config({ heartbeatTick: 0 }))).toThrow(/heartbeatTick/);
    expect(() => new RaftCore(config({ random: () => 10 }))).toThrow(/random/);
  });

  test('the same seed and inputs give the same run, message for message', () => {
    const run = (seed: number) => {
      const n = new Network(['a', 'b', 'c', 'd', 'e'], { seed, electionTick: 5 });
      for (let i = 0; i < 40; i++) {
        n.tickAll();
        const [leader] = n.leaders();
        if (leader && i % 7 === 0) n.propose(leader, `p${i}`);
        if (i === 20 && leader) n.isolate(leader);
      }
      return JSON.stringify(n.trace);
    };
    expect(run(3)).toBe(run(3));
    expect(run(3)).not.toBe(run(4));
  });

  test('malformed input from the network is dropped instead of corrupting the log', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    const { term, lastIndex, commit } = n.core('a').status();
    const b = n.core('b');
    const gap = [{ term, index: lastIndex + 2, type: 'normal' as const, data: 'gap' }];
    b.step({
      type: 'MsgApp',
      from: 'a',
      to: 'b',
      term,
      index: lastIndex,
      logTerm: term,
      entries: gap,
      commit,
    });
    const future = [{ term: term + 1, index: lastIndex + 1, type: 'normal' as const, data: 'future' }];
    b.step({
      type: 'MsgApp',
      from: 'a',
      to: 'b',
      term,
      index: lastIndex,
      logTerm: term,
      entries: future,
      commit,
    });
    expect(b.hasReady()).toBe(false);
    expect(b.status().lastIndex).toBe(lastIndex);
    // An acknowledgement of entries the leader does not have is ignored, not counted.
    n.core('a').step({ type: 'MsgAppResp', from: 'b', to: 'a', term, index: lastIndex + 50 });
    expect(n.core('a').status()).toMatchObject({ commit, progress: { b: { match: lastIndex } } });
  });

  test('status reports progress on the leader only', () => {
    const n = new Network(['a', 'b', 'c']);
    n.campaign('a');
    const st = n.core('a').status();
    expect(Object.keys(st.progress ?? {}).sort()).toEqual(['a', 'b', 'c']);
    expect(st.progress?.b).toMatchObject({ state: 'replicate', match: st.lastIndex, isLearner: false });
    expect(n.core('b').status().progress).toBeUndefined();
    expect(n.core('b').status()).toMatchObject({ leader: 'a', role: 'follower', commit: st.commit });
  });
});
