// The held commit notices on virtual time: what goes out when the hold ends, what a later append
// supersedes and what it must not, and what flush and clear do. The cluster test beside
// (tests/consensus/commitNotices.test.ts) counts notices on real nodes, where heartbeats also carry
// the commit index and so cannot show that the timer path sends anything.

import { describe, expect, test } from 'vitest';
import { CommitNotices } from '../../../src/consensus/node/commitNotices.ts';
import type { Entry, Message } from '../../../src/consensus/types.ts';
import { NodeClock, VirtualTime } from '../../sim/virtualTime.ts';

const HOLD_MS = 2;

function setup(holdMs = HOLD_MS) {
  const time = new VirtualTime();
  const sent: Message[][] = [];
  const notices = new CommitNotices(new NodeClock(time, 1), holdMs, (messages) => sent.push(messages));
  return { time, sent, notices };
}

function notice(to: string, term: number, commit: number): Message {
  return { type: 'MsgApp', from: 'n1', to, term, index: commit, logTerm: term, commit, entries: [] };
}

function append(to: string, term: number, commit: number): Message {
  const entry: Entry = { term, index: commit + 1, type: 'normal', data: 'x' };
  return { type: 'MsgApp', from: 'n1', to, term, index: commit, logTerm: term, commit, entries: [entry] };
}

const always = () => true;
const never = () => false;
const flat = (sent: Message[][]) =>
  sent.flat().map((m) => `${m.to}:${m.term}:${m.commit}:${m.entries?.length}`);

describe('CommitNotices', () => {
  test('a held notice goes out when the hold ends, once', () => {
    const { time, sent, notices } = setup();
    notices.sendOrHold([notice('n2', 1, 5), notice('n3', 1, 5)], always);
    expect(sent).toEqual([]);
    time.advanceTo(HOLD_MS - 1);
    expect(sent).toEqual([]);
    time.advanceTo(HOLD_MS);
    expect(flat(sent)).toEqual(['n2:1:5:0', 'n3:1:5:0']);
    time.advanceTo(10 * HOLD_MS);
    expect(sent).toHaveLength(1);
  });

  test('an append of the same term with at least the commit index supersedes the held notice', () => {
    const { time, sent, notices } = setup();
    notices.sendOrHold([notice('n2', 1, 5), notice('n3', 1, 5)], always);
    notices.sendOrHold([append('n2', 1, 5)], always);
    expect(flat(sent)).toEqual(['n2:1:5:1']);
    time.advanceTo(HOLD_MS);
    // n2's notice was carried by its append; n3's still goes out.
    expect(flat(sent)).toEqual(['n2:1:5:1', 'n3:1:5:0']);
  });

  test('an append of another term, or with a lower commit index, does not supersede it', () => {
    const { time, sent, notices } = setup();
    notices.sendOrHold([notice('n2', 1, 5), notice('n3', 1, 5)], always);
    notices.sendOrHold([append('n2', 2, 5), append('n3', 1, 4)], always);
    time.advanceTo(HOLD_MS);
    expect(flat(sent)).toEqual(['n2:2:5:1', 'n3:1:4:1', 'n2:1:5:0', 'n3:1:5:0']);
  });

  test('a newer notice replaces the one held, and the hold is not extended', () => {
    const { time, sent, notices } = setup();
    notices.sendOrHold([notice('n2', 1, 5)], always);
    time.advanceTo(1);
    notices.sendOrHold([notice('n2', 1, 6)], always);
    time.advanceTo(HOLD_MS);
    expect(flat(sent)).toEqual(['n2:1:6:0']);
  });

  test('what mayHold refuses goes out at once, in order, with the rest of the messages', () => {
    const { sent, notices } = setup();
    const vote: Message = { type: 'MsgHeartbeat', from: 'n1', to: 'n3', term: 1, commit: 5 };
    notices.sendOrHold([notice('n2', 1, 5), vote, notice('n3', 1, 5)], (m) => m.to === 'n2');
    expect(flat(sent)).toEqual(['n3:1:5:undefined', 'n3:1:5:0']);
  });

  test('flush sends what is held now; clear forgets it and its timer sends nothing', () => {
    const { time, sent, notices } = setup();
    notices.sendOrHold([notice('n2', 1, 5)], always);
    notices.flush();
    expect(flat(sent)).toEqual(['n2:1:5:0']);
    notices.sendOrHold([notice('n3', 1, 6)], always);
    notices.clear();
    time.advanceTo(10 * HOLD_MS);
    expect(flat(sent)).toEqual(['n2:1:5:0']);
  });

  test('a hold of 0 sends every message as it comes', () => {
    const { sent, notices } = setup(0);
    notices.sendOrHold([notice('n2', 1, 5)], always);
    expect(flat(sent)).toEqual(['n2:1:5:0']);
    notices.sendOrHold([notice('n2', 1, 6)], never);
    expect(sent).toHaveLength(2);
  });
});
