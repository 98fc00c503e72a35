// One test per property of the Raft paper (Ongaro & Ousterhout, "In Search of an Understandable
// Consensus Algorithm", extended version), in the spirit of etcd's raft_paper_test.go. Sections
// 5.2 to 5.4 run with pre-vote and check-quorum off, as the paper describes them; those
// extensions have their own tests under tests/consensus/core/.

import { describe, expect, test } from 'vitest';
import type { Entry, Message, NodeId } from '../../src/consensus/types.ts';
import { Network, type NetworkOptions, storageWithLog } from './core/network.ts';

const paper: NetworkOptions = { preVote: false, checkQuorum: false };

function net(ids: NodeId[], opts: NetworkOptions = {}): Network {
  return new Network(ids, { ...paper, ...opts });
}

function logTerms(n: Network, id: NodeId): number[] {
  const s = n.node(id).storage;
  const ents = s.lastIndex() >= s.firstIndex() ? s.entries(s.firstIndex(), s.lastIndex() + 1, Infinity) : [];
  return ents.map((e) => e.term);
}

function ofType(msgs: Message[], type: Message['type']): Message[] {
  return msgs.filter((m) => m.type === type);
}

/** Makes `id` leader of a network where every message is delivered. */
function electedNet(ids: NodeId[], leader: NodeId, opts: NetworkOptions = {}): Network {
  const n = net(ids, opts);
  n.campaign(leader);
  expect(n.leaders()).toEqual([leader]);
  return n;
}

describe('5.1 terms', () => {
  test('a node that sees a higher term adopts it and reverts to follower (5.1)', () => {
    for (const role of ['follower', 'candidate', 'leader'] as const) {
      const n = electedNet(['a', 'b', 'c'], 'a');
      const subject = role === 'leader' ? 'a' : 'b';
      if (role === 'candidate') {
        n.isolate('b');
        n.campaign('b');
      }
      const before = n.core(subject).status();
      expect(before.role).toBe(role);
      n.core(subject).step({
        type: 'MsgHeartbeat',
        from: 'c',
        to: subject,
        term: before.term + 5,
        commit: 0,
      });
      const after = n.core(subject).status();
      expect(after.role).toBe('follower');
      expect(after.term).toBe(before.term + 5);
    }
  });

  test('a node rejects a request carrying a stale term, and the stale leader steps down (5.1)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.isolate('a');
    n.campaign('b');
    const newTerm = n.core('b').status().term;
    // The deposed leader still believes it leads and replicates a proposal at its old term.
    expect(n.core('a').propose('stale')).toBeNull();
    n.heal();
    n.stabilize();
    expect(n.node('b').applied).not.toContain('stale');
    expect(n.node('c').applied).not.toContain('stale');
    expect(n.core('a').status()).toMatchObject({ role: 'follower', term: newTerm });
  });
});

describe('5.2 leader election', () => {
  test('a follower that hears no leader for an election timeout becomes a candidate: term+1, votes for itself, requests votes from all (5.2)', () => {
    const n = net(['a', 'b', 'c']);
    const term = n.core('a').status().term;
    for (let i = 0; i < 20 && n.core('a').status().role === 'follower'; i++) n.core('a').tick();
    const st = n.core('a').status();
    expect(st).toMatchObject({ role: 'candidate', term: term + 1, vote: 'a' });
    const votes = ofType(n.drain('a'), 'MsgVote');
    expect(votes.map((m) => m.to).sort()).toEqual(['b', 'c']);
    for (const m of votes) expect(m).toMatchObject({ term: term + 1, index: 1, logTerm: 1 });
  });

  test('election timeouts are randomized within [electionTick, 2*electionTick) (5.2)', () => {
    const seen = new Set<number>();
    for (let seed = 1; seed <= 30; seed++) {
      const n = net(['a', 'b', 'c'], { seed, electionTick: 10 });
      let ticks = 0;
      while (n.core('a').status().role === 'follower' && ticks < 100) {
        n.core('a').tick();
        ticks++;
      }
      expect(ticks).toBeGreaterThanOrEqual(10);
      expect(ticks).toBeLessThan(20);
      seen.add(ticks);
    }
    expect(seen.size).toBeGreaterThan(3);
  });

  test('the leader sends heartbeats to every follower each heartbeat interval (5.2)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a', { heartbeatTick: 3 });
    n.drain('a');
    n.core('a').tick();
    n.core('a').tick();
    expect(ofType(n.drain('a'), 'MsgHeartbeat')).toEqual([]);
    n.core('a').tick();
    const hb = ofType(n.drain('a'), 'MsgHeartbeat');
    expect(hb.map((m) => m.to).sort()).toEqual(['b', 'c']);
    for (const m of hb) expect(m.term).toBe(n.core('a').status().term);
  });

  test('a candidate wins with votes from a majority of the cluster, and only then (5.2)', () => {
    const cases: { size: number; granted: number; rejected: number; role: string }[] = [
      { size: 1, granted: 0, rejected: 0, role: 'leader' },
      { size: 3, granted: 1, rejected: 0, role: 'leader' },
      { size: 3, granted: 0, rejected: 0, role: 'candidate' },
      { size: 5, granted: 1, rejected: 0, role: 'candidate' },
      { size: 5, granted: 2, rejected: 0, role: 'leader' },
      { size: 5, granted: 1, rejected: 2, role: 'candidate' },
      { size: 5, granted: 1, rejected: 3, role: 'follower' },
      { size: 3, granted: 0, rejected: 2, role: 'follower' },
    ];
    for (const c of cases) {
      const ids = ['a', 'b', 'c', 'd', 'e'].slice(0, c.size);
      const n = net(ids);
      const core = n.core('a');
      core.campaign();
      const term = core.status().term;
      const others = ids.slice(1);
      others.slice(0, c.granted).forEach((from) => {
        core.step({ type: 'MsgVoteResp', from, to: 'a', term });
      });
      others.slice(c.granted, c.granted + c.rejected).forEach((from) => {
        core.step({ type: 'MsgVoteResp', from, to: 'a', term, reject: true });
      });
      expect(core.status().role, JSON.stringify(c)).toBe(c.role);
    }
  });

  test('each node votes for at most one candidate per term, first come first served (5.2)', () => {
    const n = net(['a', 'b', 'c']);
    const b = n.core('b');
    const vote = (from: NodeId): Message => {
      b.step({ type: 'MsgVote', from, to: 'b', term: 2, index: 1, logTerm: 1 });
      const resp = ofType(n.drain('b'), 'MsgVoteResp');
      expect(resp).toHaveLength(1);
      return resp[0]!;
    };
    expect(vote('a').reject).toBeFalsy();
    expect(vote('c').reject).toBe(true);
    // A repeated request from the candidate it voted for is granted again (it may have lost the answer).
    expect(vote('a').reject).toBeFalsy();
    expect(b.status().vote).toBe('a');
  });

  test('a candidate returns to follower when it hears from a leader of at least its term (5.2)', () => {
    for (const [leaderTermDelta, role] of [
      [0, 'follower'],
      [1, 'follower'],
      [-1, 'candidate'],
    ] as const) {
      const n = net(['a', 'b', 'c']);
      const a = n.core('a');
      a.campaign();
      const term = a.status().term;
      a.step({
        type: 'MsgApp',
        from: 'b',
        to: 'a',
        term: term + leaderTermDelta,
        index: 1,
        logTerm: 1,
        entries: [],
        commit: 1,
      });
      expect(a.status().role).toBe(role);
      if (role === 'follower') expect(a.status().leader).toBe('b');
    }
  });

  test('a candidate that neither wins nor loses starts a new election after another timeout (5.2)', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.core('a');
    a.campaign();
    const term = a.status().term;
    n.drain('a');
    for (let i = 0; i < 20 && a.status().term === term; i++) a.tick();
    expect(a.status()).toMatchObject({ role: 'candidate', term: term + 1 });
    expect(
      ofType(n.drain('a'), 'MsgVote')
        .map((m) => m.to)
        .sort(),
    ).toEqual(['b', 'c']);
  });

  test('election safety: at most one leader is elected per term, and split votes resolve (5.2)', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const n = net(['a', 'b', 'c', 'd', 'e'], { seed, electionTick: 5 });
      const leaderOfTerm = new Map<number, NodeId>();
      for (let i = 0; i < 200; i++) {
        n.tickAll();
        for (const node of n.nodes.values()) {
          const st = node.core.status();
          if (st.role !== 'leader') continue;
          const known = leaderOfTerm.get(st.term);
          expect(known === undefined || known === st.id).toBe(true);
          leaderOfTerm.set(st.term, st.id);
        }
      }
      expect(leaderOfTerm.size).toBeGreaterThan(0);
      expect(n.leaders()).toHaveLength(1);
    }
  });
});

describe('5.3 log replication', () => {
  test('the leader appends a command to its log and sends it to every follower with the preceding index and term (5.3)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    const a = n.core('a');
    const { lastIndex, term } = a.status();
    expect(a.propose('x')).toBeNull();
    const apps = ofType(n.drain('a'), 'MsgApp');
    expect(apps.map((m) => m.to).sort()).toEqual(['b', 'c']);
    for (const m of apps) {
      expect(m).toMatchObject({ term, index: lastIndex, logTerm: term });
      expect(m.entries).toEqual([{ term, index: lastIndex + 1, type: 'normal', data: 'x' }]);
    }
    expect(a.status().lastIndex).toBe(lastIndex + 1);
  });

  test('an entry is committed once the leader has replicated it on a majority, not before (5.3)', () => {
    const n = electedNet(['a', 'b', 'c', 'd', 'e'], 'a');
    for (const id of ['c', 'd', 'e']) n.cutLink('a', id);
    expect(n.propose('a', 'x')).toBeNull();
    const index = n.core('a').status().lastIndex;
    expect(n.core('a').status().commit).toBeLessThan(index);
    expect(n.node('a').applied).toEqual([]);
    n.heal();
    n.cutLink('a', 'd');
    n.cutLink('a', 'e');
    n.tick('a');
    expect(n.core('a').status().commit).toBe(index);
    expect(n.node('a').applied).toEqual(['x']);
  });

  test('committing an entry commits every preceding entry of the leader, and all are applied in order (5.3)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.isolate('a');
    for (const x of ['x1', 'x2', 'x3']) expect(n.propose('a', x)).toBeNull();
    expect(n.node('a').applied).toEqual([]);
    n.heal();
    n.tick('a');
    for (const id of ['a', 'b', 'c']) expect(n.node(id).applied).toEqual(['x1', 'x2', 'x3']);
  });

  test('followers apply an entry once the leader commit index they receive covers it (5.3)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.cutLink('a', 'c');
    n.propose('a', 'x');
    expect(n.node('b').applied).toEqual(['x']);
    expect(n.node('c').applied).toEqual([]);
    n.heal();
    n.tick('a');
    expect(n.node('c').applied).toEqual(['x']);
  });

  test('a follower rejects AppendEntries whose preceding entry does not match, hinting where to retry (5.3)', () => {
    const n = net(['a', 'b'], {
      storage: (id) => (id === 'b' ? storageWithLog(['a', 'b'], [1, 2, 2]) : undefined),
    });
    const b = n.core('b');
    const cases = [
      { index: 3, logTerm: 3, hint: 3, hintTerm: 2 },
      { index: 3, logTerm: 1, hint: 1, hintTerm: 1 },
      { index: 6, logTerm: 3, hint: 3, hintTerm: 2 },
    ];
    for (const c of cases) {
      b.step({
        type: 'MsgApp',
        from: 'a',
        to: 'b',
        term: 3,
        index: c.index,
        logTerm: c.logTerm,
        entries: [],
        commit: 0,
      });
      const [resp] = ofType(n.drain('b'), 'MsgAppResp');
      expect(resp).toMatchObject({ reject: true, index: c.index, rejectHint: c.hint, logTerm: c.hintTerm });
    }
    expect(logTerms(n, 'b')).toEqual([1, 2, 2]);
  });

  test('a follower deletes a conflicting entry and all that follow it, then appends the leader entries (5.3)', () => {
    const n = net(['a', 'b'], {
      storage: (id) => (id === 'b' ? storageWithLog(['a', 'b'], [1, 2, 2, 2]) : undefined),
    });
    const b = n.core('b');
    const ents: Entry[] = [
      { term: 3, index: 2, type: 'normal', data: 'n2' },
      { term: 3, index: 3, type: 'normal', data: 'n3' },
    ];
    b.step({ type: 'MsgApp', from: 'a', to: 'b', term: 3, index: 1, logTerm: 1, entries: ents, commit: 1 });
    const [resp] = ofType(n.drain('b'), 'MsgAppResp');
    expect(resp).toMatchObject({ index: 3 });
    expect(resp!.reject).toBeFalsy();
    expect(logTerms(n, 'b')).toEqual([1, 3, 3]);
  });

  test('a follower keeps its later entries when a delayed AppendEntries matches what it has (5.3)', () => {
    const n = net(['a', 'b'], {
      storage: (id) => (id === 'b' ? storageWithLog(['a', 'b'], [1, 1, 1, 1]) : undefined),
    });
    const b = n.core('b');
    b.step({
      type: 'MsgApp',
      from: 'a',
      to: 'b',
      term: 1,
      index: 1,
      logTerm: 1,
      entries: [{ term: 1, index: 2, type: 'normal', data: 'e2' }],
      commit: 0,
    });
    const [resp] = ofType(n.drain('b'), 'MsgAppResp');
    expect(resp).toMatchObject({ index: 2 });
    expect(logTerms(n, 'b')).toEqual([1, 1, 1, 1]);
  });

  test('the leader forces divergent and lagging follower logs to match its own (5.3, Figure 7)', () => {
    const leaderLog = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6];
    const followers: Record<string, number[]> = {
      a: [1, 1, 1, 4, 4, 5, 5, 6, 6],
      b: [1, 1, 1, 4],
      c: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6],
      d: [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7],
      e: [1, 1, 1, 4, 4, 4, 4],
      f: [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3],
    };
    for (const [name, flog] of Object.entries(followers)) {
      const ids = ['L', 'F', 'X'];
      const n = net(ids, {
        storage: (id) => storageWithLog(ids, id === 'F' ? flog : leaderLog),
      });
      // Term 8 as in the figure: the leader's hard state is at term 7 before it campaigns.
      for (const id of ids) n.node(id).storage.setHardState({ term: 7, vote: null, commit: 0 });
      const rebuilt = new Network(ids, { ...paper, storage: (id) => n.node(id).storage });
      rebuilt.campaign('L');
      expect(rebuilt.leaders(), name).toEqual(['L']);
      expect(rebuilt.core('L').status().term).toBe(8);
      expect(logTerms(rebuilt, 'F'), name).toEqual(logTerms(rebuilt, 'L'));
      expect(logTerms(rebuilt, 'L')).toEqual([...leaderLog, 8]);
    }
  });
});

describe('5.4 safety', () => {
  test('followers reject a vote for a candidate whose log is less up-to-date (5.4.1)', () => {
    // Voter log: terms [1, 2, 2] (last index 3, last term 2).
    const cases = [
      { index: 3, logTerm: 1, granted: false },
      { index: 2, logTerm: 2, granted: false },
      { index: 100, logTerm: 1, granted: false },
      { index: 3, logTerm: 2, granted: true },
      { index: 4, logTerm: 2, granted: true },
      { index: 1, logTerm: 3, granted: true },
    ];
    for (const c of cases) {
      const n = net(['a', 'b'], {
        storage: (id) => (id === 'b' ? storageWithLog(['a', 'b'], [1, 2, 2]) : undefined),
      });
      n.core('b').step({ type: 'MsgVote', from: 'a', to: 'b', term: 5, index: c.index, logTerm: c.logTerm });
      const [resp] = ofType(n.drain('b'), 'MsgVoteResp');
      expect(!resp!.reject, JSON.stringify(c)).toBe(c.granted);
    }
  });

  test('a candidate missing a committed entry cannot win an election (5.4.1)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.cutLink('a', 'c');
    n.propose('a', 'x');
    expect(n.node('b').applied).toEqual(['x']);
    n.isolate('a');
    n.campaign('c');
    expect(n.core('c').status().role).not.toBe('leader');
    n.campaign('b');
    expect(n.leaders().filter((id) => id !== 'a')).toEqual(['b']);
  });

  test('a leader does not commit an entry of an earlier term by counting replicas (5.4.2)', () => {
    // a holds entries of terms 1 and 2 that were never committed, then wins term 3.
    const ids = ['a', 'b', 'c'];
    const n = net(ids, { storage: (id) => storageWithLog(ids, id === 'a' ? [1, 2] : [1]) });
    const a = n.core('a');
    a.campaign();
    const term = a.status().term;
    a.step({ type: 'MsgVoteResp', from: 'b', to: 'a', term });
    expect(a.status()).toMatchObject({ role: 'leader', term: 3, lastIndex: 3 });
    n.drain('a');
    // b now stores index 2 (term 2): a majority has it, but it is not of the leader's term.
    a.step({ type: 'MsgAppResp', from: 'b', to: 'a', term, index: 2 });
    expect(a.status().commit).toBe(0);
    a.step({ type: 'MsgAppResp', from: 'b', to: 'a', term, index: 3 });
    expect(a.status().commit).toBe(3);
  });

  test('committing an entry of its own term commits the earlier-term entries before it (5.4.2)', () => {
    const ids = ['a', 'b', 'c'];
    const n = net(ids, { storage: (id) => storageWithLog(ids, id === 'c' ? [1] : [1, 2]) });
    n.campaign('a');
    expect(n.leaders()).toEqual(['a']);
    const committed = n.node('c').storage.entries(1, 4, Infinity);
    expect(committed.map((e) => e.term)).toEqual([1, 2, n.core('a').status().term]);
    expect(n.core('c').status().commit).toBe(3);
  });

  test('a new leader appends an empty entry of its own term (5.4.2, section 8)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    const st = n.core('a').status();
    const last = n.node('a').storage.entries(st.lastIndex, st.lastIndex + 1, Infinity)[0]!;
    expect(last).toEqual({ term: st.term, index: st.lastIndex, type: 'normal', data: '' });
    expect(st.commit).toBe(st.lastIndex);
  });

  test('leader completeness and state machine safety hold across repeated leader failures (5.4.3)', () => {
    const ids = ['a', 'b', 'c', 'd', 'e'];
    const n = net(ids, { electionTick: 5, seed: 7 });
    const committedByIndex = new Map<number, string>();
    let proposals = 0;
    for (let round = 0; round < 12; round++) {
      for (let i = 0; i < 60 && n.leaders().length !== 1; i++) n.tickAll();
      const [leader] = n.leaders();
      expect(leader).toBeDefined();
      // Every entry committed so far is in the new leader's log (Leader Completeness).
      const ls = n.node(leader!).storage;
      for (const [index, data] of committedByIndex) {
        if (index < ls.firstIndex()) continue;
        expect(ls.entries(index, index + 1, Infinity)[0]!.data).toBe(data);
      }
      n.propose(leader!, `p${proposals++}`);
      n.cutLink(leader!, ids[round % ids.length]!);
      n.propose(leader!, `p${proposals++}`);
      for (const node of n.nodes.values()) {
        const st = node.core.status();
        for (let i = node.storage.firstIndex(); i <= st.commit; i++) {
          const e = node.storage.entries(i, i + 1, Infinity)[0]!;
          const known = committedByIndex.get(i);
          expect(known === undefined || known === e.data).toBe(true);
          committedByIndex.set(i, e.data);
        }
      }
      n.heal();
      n.isolate(leader!);
      n.tickAll(30);
      n.heal();
    }
    // State Machine Safety: applied sequences are prefixes of one another.
    const applied = [...n.nodes.values()].map((x) => x.applied).sort((x, y) => y.length - x.length);
    for (const seq of applied) expect(applied[0]!.slice(0, seq.length)).toEqual(seq);
    expect(applied[0]!.length).toBeGreaterThan(10);
  });
});

describe('6 cluster membership changes', () => {
  test('a new server joins as a learner: it receives the log but neither votes nor counts toward commit (6)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.propose('a', 'before');
    n.addNode('d');
    expect(n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBeNull();
    n.stabilize();
    n.tick('a');
    expect(n.node('d').applied).toEqual(['before']);
    expect(n.core('a').status().confState).toEqual({ voters: ['a', 'b', 'c'], learners: ['d'] });
    // With b and c unreachable, the learner's ack is not enough to commit.
    n.cutLink('a', 'b');
    n.cutLink('a', 'c');
    const commit = n.core('a').status().commit;
    n.propose('a', 'after');
    expect(n.core('a').status().commit).toBe(commit);
    expect(n.core('d').status().lastIndex).toBe(n.core('a').status().lastIndex);
    // And it never campaigns, however long it waits.
    n.isolate('d');
    n.tick('d', 100);
    expect(n.core('d').status().role).toBe('follower');
  });

  test('promoting a learner makes it count toward the quorum as soon as the change is applied (6)', () => {
    const n = electedNet(['a', 'b'], 'a');
    n.addNode('c');
    n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'c' });
    n.stabilize();
    n.tick('a');
    expect(n.core('a').proposeConfChange({ type: 'promote', nodeId: 'c' })).toBeNull();
    n.stabilize();
    expect(n.core('a').status().confState).toEqual({ voters: ['a', 'b', 'c'], learners: [] });
    expect(n.node('c').confState).toEqual({ voters: ['a', 'b', 'c'], learners: [] });
    // With three voters, a and c commit without b.
    n.isolate('b');
    n.propose('a', 'x');
    expect(n.node('a').applied).toEqual(['x']);
  });

  test('only one membership change may be pending at a time (6)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.isolate('a');
    expect(n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBeNull();
    expect(n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'e' })).toBe('ConfChangeInProgress');
    n.heal();
    n.tick('a');
    expect(n.core('a').status().confState.learners).toEqual(['d']);
    expect(n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'e' })).toBeNull();
  });

  test('a leader accepts no membership change before it has committed an entry of its term (6)', () => {
    const n = net(['a', 'b', 'c']);
    const a = n.core('a');
    a.campaign();
    a.step({ type: 'MsgVoteResp', from: 'b', to: 'a', term: a.status().term });
    expect(a.status().role).toBe('leader');
    expect(a.proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBe('ConfChangeInProgress');
    n.stabilize();
    expect(a.proposeConfChange({ type: 'addLearner', nodeId: 'd' })).toBeNull();
  });

  test('only an existing learner can be promoted, and the last voter cannot be removed (6)', () => {
    const n = electedNet(['a'], 'a');
    expect(n.core('a').proposeConfChange({ type: 'promote', nodeId: 'zz' })).toBe('ProposalDropped');
    expect(n.core('a').proposeConfChange({ type: 'remove', nodeId: 'a' })).toBe('ProposalDropped');
    expect(n.core('a').status().confState).toEqual({ voters: ['a'], learners: [] });
  });

  test('a removed leader steps down, and the remaining members elect a leader among themselves (6)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.propose('a', 'x');
    expect(n.core('a').proposeConfChange({ type: 'remove', nodeId: 'a' })).toBeNull();
    n.stabilize();
    expect(n.core('a').status()).toMatchObject({ role: 'follower', confState: { voters: ['b', 'c'] } });
    for (let i = 0; i < 60 && n.leaders().length === 0; i++) n.tickAll();
    const [leader] = n.leaders();
    expect(['b', 'c']).toContain(leader);
    // The cluster of two commits without a; a never campaigns again.
    n.propose(leader!, 'y');
    expect(n.node('b').applied).toEqual(['x', 'y']);
    expect(n.node('c').applied).toEqual(['x', 'y']);
    n.tickAll(60);
    expect(n.core('a').status().role).toBe('follower');
    expect(n.leaders()).toEqual([leader]);
  });

  test('a removed server cannot disrupt the cluster: members that hear from a leader ignore its votes (6, thesis 4.2.3)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a', { checkQuorum: true });
    n.core('a').proposeConfChange({ type: 'remove', nodeId: 'c' });
    n.stabilize();
    expect(n.core('a').status().confState.voters).toEqual(['a', 'b']);
    const term = n.core('a').status().term;
    // c never applied its removal (it was cut off first) and keeps campaigning at higher terms.
    n.core('c').step({ type: 'MsgHeartbeat', from: 'a', to: 'c', term: term + 10, commit: 0 });
    n.isolate('c');
    n.tick('c', 100);
    n.heal();
    n.tickAll(30);
    expect(n.leaders()).toContain('a');
    expect(n.core('a').status().term).toBe(term);
  });
});

describe('7 log compaction', () => {
  test("a follower behind the leader's first index is sent a snapshot and catches up from it (7)", () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.isolate('c');
    for (let i = 0; i < 10; i++) n.propose('a', `x${i}`);
    n.compact('a');
    expect(n.core('a').status().firstIndex).toBeGreaterThan(n.core('c').status().lastIndex + 1);
    n.heal();
    n.tick('a');
    const snaps = n.trace.filter((m) => m.type === 'MsgSnap' && m.to === 'c');
    expect(snaps).toHaveLength(1);
    expect(n.node('c').applied).toEqual(n.node('a').applied);
    n.propose('a', 'after');
    expect(n.node('c').applied.at(-1)).toBe('after');
    expect(n.core('a').status().progress?.c?.state).toBe('replicate');
  });

  test('a follower installing a snapshot discards its entire conflicting log (7)', () => {
    const ids = ['a', 'b'];
    const n = net(ids, { storage: (id) => (id === 'b' ? storageWithLog(ids, [1, 2, 2, 2, 2]) : undefined) });
    n.core('b').step({
      type: 'MsgSnap',
      from: 'a',
      to: 'b',
      term: 3,
      snapshot: { metadata: { index: 3, term: 3, confState: { voters: ids, learners: [] } }, data: '["s"]' },
    });
    const rd = n.handleReady('b')!;
    expect(rd.snapshot?.metadata.index).toBe(3);
    expect(rd.committedEntries).toEqual([]);
    expect(n.core('b').status()).toMatchObject({ firstIndex: 4, lastIndex: 3, commit: 3, applied: 3 });
    expect(n.node('b').applied).toEqual(['s']);
    expect(ofType(rd.messages, 'MsgAppResp')[0]).toMatchObject({ index: 3 });
  });

  test("a snapshot describing a prefix of the follower's log keeps the entries that follow it (7)", () => {
    const ids = ['a', 'b'];
    const n = net(ids, { storage: (id) => (id === 'b' ? storageWithLog(ids, [1, 2, 2, 2]) : undefined) });
    n.core('b').step({
      type: 'MsgSnap',
      from: 'a',
      to: 'b',
      term: 2,
      snapshot: { metadata: { index: 2, term: 2, confState: { voters: ids, learners: [] } }, data: '[]' },
    });
    const rd = n.handleReady('b')!;
    expect(rd.snapshot).toBeUndefined();
    expect(logTerms(n, 'b')).toEqual([1, 2, 2, 2]);
    expect(n.core('b').status().commit).toBe(2);
  });

  test('a snapshot carries the membership and the follower adopts it (7)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.addNode('d');
    n.core('a').proposeConfChange({ type: 'addLearner', nodeId: 'd' });
    n.isolate('d');
    n.stabilize();
    n.propose('a', 'x');
    n.compact('a');
    n.heal();
    n.tick('a');
    expect(n.core('d').status().confState).toEqual({ voters: ['a', 'b', 'c'], learners: ['d'] });
    expect(n.node('d').applied).toEqual(['x']);
  });

  test('after compaction the term of the last compacted entry still anchors the consistency check (7)', () => {
    const n = electedNet(['a', 'b', 'c'], 'a');
    n.propose('a', 'x');
    const snap = n.compact('a');
    const st = n.core('a').status();
    expect(st.firstIndex).toBe(snap.metadata.index + 1);
    n.propose('a', 'y');
    const apps = n.trace.filter((m) => m.type === 'MsgApp' && m.entries?.some((e) => e.data === 'y'));
    expect(apps.length).toBeGreaterThan(0);
    for (const m of apps)
      expect(m).toMatchObject({ index: snap.metadata.index, logTerm: snap.metadata.term });
    expect(n.node('b').applied).toEqual(['x', 'y']);
  });
});
