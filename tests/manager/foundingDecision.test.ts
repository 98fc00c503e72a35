// When a manager with an empty Raft store may found the cluster (bootstrapGuard.ts,
// foundingDecision), on constructed peer answers: only with a leader's word or every member's.

import { describe, expect, it } from 'vitest';
import { foundingDecision, type PeerAnswer, StartRefused } from '../../src/manager/bootstrapGuard.ts';
import { foundingView } from '../../src/manager/foundingWait.ts';

const PEERS = { m1: 'http://127.0.0.1:1', m2: 'http://127.0.0.1:2', m3: 'http://127.0.0.1:3' };
const IDS = Object.keys(PEERS);

function answer(id: 'm1' | 'm2', over: Partial<PeerAnswer['view']> = {}): PeerAnswer {
  return { id, url: PEERS[id], view: { ...foundingView(id, PEERS), ...over } };
}

const leader = (id: 'm1' | 'm2', lastIndex: number, m3Match: number) =>
  answer(id, {
    role: 'leader',
    term: 3,
    lastIndex,
    leader: { id, url: PEERS[id] },
    peers: {
      m3: { match: m3Match, next: m3Match + 1, state: 'probe', isLearner: false, lastContactMs: null },
    },
  });

describe('foundingDecision', () => {
  it('founds when every other member answers with an empty log, or bootstrapped and campaigning', () => {
    expect(foundingDecision('m3', IDS, [answer('m1'), answer('m2')]).found).toBe(true);
    const campaigning = answer('m2', { role: 'candidate', term: 4, lastIndex: 1 });
    expect(foundingDecision('m3', IDS, [answer('m1'), campaigning]).found).toBe(true);
  });

  it('waits for a member that does not answer', () => {
    const d = foundingDecision('m3', IDS, [answer('m1')]);
    expect(d).toMatchObject({ found: false });
    expect(d.why).toContain('waiting for m2');
  });

  it('waits while a member holds entries and no leader answers for them', () => {
    const d = foundingDecision('m3', IDS, [answer('m1', { lastIndex: 40, term: 2 }), answer('m2')]);
    expect(d).toMatchObject({ found: false });
    expect(d.why).toContain('m1 (log index 40)');
  });

  it("founds beside the cluster's first leader, which holds nothing but its own first entry", () => {
    expect(foundingDecision('m3', IDS, [leader('m1', 2, 0)]).found).toBe(true);
  });

  it('refuses when a leader remembers an acknowledgement, or holds more than its first entry', () => {
    expect(() => foundingDecision('m3', IDS, [leader('m1', 9, 9)])).toThrow(
      /leader m1 holds its acknowledgement of log index 9/,
    );
    // A leader elected since knows nothing of what m3 acknowledged before: its history decides.
    expect(() => foundingDecision('m3', IDS, [leader('m1', 9, 0)])).toThrow(
      /the cluster already holds log entries/,
    );
    expect(() => foundingDecision('m3', IDS, [leader('m1', 9, 0)])).toThrow(StartRefused);
  });
});
