// Progress states, the inflight window and message batching (etcd tracker/ and design.md).

import { describe, expect, test } from 'vitest';
import { Inflights } from '../../../src/consensus/core/index.ts';
import { Progress } from '../../../src/consensus/core/progress.ts';
import { Network } from './network.ts';

describe('Inflights', () => {
  test('fills up to its count limit and frees acknowledged messages in order', () => {
    const w = new Inflights(3);
    w.add(2, 10);
    w.add(5, 10);
    w.add(9, 10);
    expect(w.full()).toBe(true);
    expect(() => w.add(10, 1)).toThrow(/full/);
    w.freeLE(5);
    expect(w.count).toBe(1);
    expect(w.bytes).toBe(10);
    expect(w.full()).toBe(false);
    w.freeLE(4);
    expect(w.count).toBe(1);
    w.freeFirstOne();
    expect(w.count).toBe(0);
  });

  test('is also bounded by bytes', () => {
    const w = new Inflights(100, 50);
    w.add(1, 30);
    expect(w.full()).toBe(false);
    w.add(2, 30);
    expect(w.full()).toBe(true);
    w.freeLE(1);
    expect(w.full()).toBe(false);
  });

  test('refuses indexes that do not increase', () => {
    const w = new Inflights(5);
    w.add(3, 1);
    expect(() => w.add(3, 1)).toThrow();
  });

  test('stays correct over many add/free cycles', () => {
    const w = new Inflights(4);
    let next = 1;
    for (let round = 0; round < 1000; round++) {
      while (!w.full()) w.add(next++, 1);
      w.freeLE(next - 3);
      expect(w.count).toBe(2);
    }
  });
});

describe('Progress', () => {
  test('probe sends one message and then pauses until an answer', () => {
    const pr = new Progress(5, 10, false);
    expect(pr.isPaused()).toBe(false);
    pr.sentEntries(2, 10, 6);
    expect(pr.isPaused()).toBe(true);
    expect(pr.next).toBe(5);
    expect(pr.maybeUpdate(6)).toBe(true);
    expect(pr.isPaused()).toBe(false);
    expect(pr.next).toBe(7);
  });

  test('replicate advances next optimistically and pauses when the window is full', () => {
    const pr = new Progress(1, 2, false);
    pr.becomeReplicate();
    pr.sentEntries(3, 3, 3);
    pr.sentEntries(3, 3, 6);
    expect(pr.next).toBe(7);
    expect(pr.isPaused()).toBe(true);
    pr.maybeUpdate(3);
    pr.inflights.freeLE(3);
    expect(pr.isPaused()).toBe(false);
  });

  test('a rejection in replicate falls back to match+1; stale rejections are ignored', () => {
    const pr = new Progress(1, 10, false);
    pr.maybeUpdate(5);
    pr.becomeReplicate();
    pr.sentEntries(5, 5, 10);
    expect(pr.maybeDecrTo(4, 4)).toBe(false);
    expect(pr.maybeDecrTo(8, 4)).toBe(true);
    expect(pr.next).toBe(6);
  });

  test('a rejection in probe uses the hint but never goes below match+1, and only for the current probe', () => {
    const pr = new Progress(10, 10, false);
    pr.maybeUpdate(3);
    pr.next = 10;
    expect(pr.maybeDecrTo(7, 2)).toBe(false);
    expect(pr.maybeDecrTo(9, 6)).toBe(true);
    expect(pr.next).toBe(7);
    expect(pr.maybeDecrTo(6, 0)).toBe(true);
    expect(pr.next).toBe(4);
  });

  test('snapshot state pauses; leaving it probes just after the snapshot', () => {
    const pr = new Progress(3, 10, false);
    pr.becomeSnapshot(20);
    expect(pr.isPaused()).toBe(true);
    pr.becomeProbe();
    expect(pr.next).toBe(21);
  });
});

describe('replication flow control', () => {
  function leaderWithFollowers(config: Record<string, number>) {
    const n = new Network(['a', 'b', 'c'], { config });
    n.campaign('a');
    return n;
  }

  test('MsgApp are batched up to maxSizePerMsg bytes of entry data', () => {
    const n = leaderWithFollowers({ maxSizePerMsg: 250 });
    n.cutLink('a', 'b');
    for (let i = 0; i < 10; i++) n.core('a').propose('x'.repeat(100));
    n.drain('a');
    n.heal();
    n.tick('a');
    const apps = n.trace.filter((m) => m.type === 'MsgApp' && m.to === 'b' && (m.entries?.length ?? 0) > 0);
    for (const m of apps) expect(m.entries!.length).toBeLessThanOrEqual(2);
    expect(apps.reduce((s, m) => s + m.entries!.length, 0)).toBeGreaterThanOrEqual(10);
    expect(n.node('b').applied).toHaveLength(10);
  });

  test('a follower in replicate state has at most maxInflightMsgs appends outstanding', () => {
    const n = leaderWithFollowers({ maxInflightMsgs: 3 });
    expect(n.core('a').status().progress?.b?.state).toBe('replicate');
    const a = n.core('a');
    for (let i = 0; i < 10; i++) a.propose(`p${i}`);
    const toB = n.drain('a').filter((m) => m.type === 'MsgApp' && m.to === 'b');
    expect(toB).toHaveLength(3);
    // Acknowledging the first frees one slot: exactly one more goes out, carrying the rest.
    const first = toB[0]!;
    a.step({ type: 'MsgAppResp', from: 'b', to: 'a', term: first.term, index: first.entries!.at(-1)!.index });
    const more = n.drain('a').filter((m) => m.type === 'MsgApp' && m.to === 'b');
    expect(more).toHaveLength(1);
    expect(more[0]!.entries!.map((e) => e.data)).toEqual(['p3', 'p4', 'p5', 'p6', 'p7', 'p8', 'p9']);
  });

  test('a follower in probe state gets one MsgApp per heartbeat interval until it answers', () => {
    const n = leaderWithFollowers({});
    const a = n.core('a');
    a.reportUnreachable('b');
    expect(a.status().progress?.b?.state).toBe('probe');
    a.propose('p1');
    a.propose('p2');
    expect(n.drain('a').filter((m) => m.type === 'MsgApp' && m.to === 'b')).toHaveLength(1);
    a.propose('p3');
    expect(n.drain('a').filter((m) => m.type === 'MsgApp' && m.to === 'b')).toHaveLength(0);
    a.tick();
    const hb = n.drain('a').find((m) => m.type === 'MsgHeartbeat' && m.to === 'b')!;
    a.step({ type: 'MsgHeartbeatResp', from: 'b', to: 'a', term: hb.term });
    expect(n.drain('a').filter((m) => m.type === 'MsgApp' && m.to === 'b')).toHaveLength(1);
  });

  test('fast backtracking skips a whole divergent term per round trip', () => {
    // a holds 50 uncommitted entries of its old term where the cluster has since committed 50 of a
    // later term, and the current leader c starts probing a at its own last index: one-by-one
    // backtracking would take 50 round trips, the term hints take one or two.
    const n = new Network(['a', 'b', 'c'], { preVote: false, checkQuorum: false });
    n.campaign('a');
    n.isolate('a');
    for (let i = 0; i < 50; i++) n.core('a').propose(`lost${i}`);
    n.drain('a');
    n.campaign('b');
    for (let i = 0; i < 50; i++) n.propose('b', `kept${i}`);
    n.core('b').transferLeadership('c');
    n.stabilize();
    expect(n.core('c').status().role).toBe('leader');
    expect(n.core('c').status().progress?.a?.next).toBe(n.core('c').status().lastIndex);
    n.heal();
    n.trace.length = 0;
    n.tick('c', 2);
    const rejects = n.trace.filter((m) => m.type === 'MsgAppResp' && m.from === 'a' && m.reject);
    expect(rejects.length).toBeGreaterThan(0);
    expect(rejects.length).toBeLessThanOrEqual(2);
    expect(n.node('a').applied).toEqual(n.node('c').applied);
    expect(n.node('a').applied).toHaveLength(50);
  });

  test('proposals beyond maxUncommittedEntriesSize are dropped until entries are applied', () => {
    const n = leaderWithFollowers({ maxUncommittedEntriesSize: 25 });
    n.isolate('a');
    const a = n.core('a');
    expect(a.propose('x'.repeat(10))).toBeNull();
    expect(a.propose('x'.repeat(10))).toBeNull();
    expect(a.propose('x'.repeat(10))).toBe('ProposalDropped');
    n.heal();
    n.tick('a');
    expect(n.node('a').applied).toHaveLength(2);
    expect(a.propose('x'.repeat(10))).toBeNull();
  });

  test('an unreachable report moves a replicating follower back to probe', () => {
    const n = leaderWithFollowers({});
    n.core('a').reportUnreachable('c');
    expect(n.core('a').status().progress?.c?.state).toBe('probe');
    // A caught-up follower answers the next heartbeat; the next append finds it and resumes streaming.
    n.tick('a');
    n.propose('a', 'x');
    expect(n.core('a').status().progress?.c?.state).toBe('replicate');
  });
});
