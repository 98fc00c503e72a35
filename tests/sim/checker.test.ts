import { describe, expect, it } from 'vitest';
import type { Entry } from '../../src/consensus/types.ts';
import { Checker, SafetyViolation, type ViolationKind } from './checker.ts';
import { SimDisk } from './simDisk.ts';
import { SimStateMachine } from './stateMachine.ts';

// Hand-built histories for each invariant: the checker must accept the legal one and name the
// broken one. (The simulation tests show it also finds them in real runs.)

function violationOf(fn: () => void): ViolationKind | null {
  try {
    fn();
    return null;
  } catch (err) {
    if (err instanceof SafetyViolation) return err.violation.kind;
    throw err;
  }
}

function entry(index: number, term: number, data = `v${index}`): Entry {
  return { index, term, type: 'normal', data };
}

/** A disk holding `entries` after an empty log, saved and reported to the checker as `id`. */
function saveLog(checker: Checker, id: string, entries: Entry[], term: number, commit: number): SimDisk {
  const disk = new SimDisk();
  const before = { ...disk.hardState };
  const effect = disk.save({ entries, hardState: { term, vote: null, commit } });
  checker.onSave(id, before, disk, effect);
  return disk;
}

describe('Checker', () => {
  it('Election Safety: one leader per term, one vote per voter and term', () => {
    const c = new Checker();
    c.onLeader('n1', 2);
    c.onLeader('n1', 2);
    c.onLeader('n2', 3);
    expect(violationOf(() => c.onLeader('n3', 2))).toBe('election-safety');
    c.onVoteGranted('n1', 'n2', 4);
    c.onVoteGranted('n1', 'n2', 4);
    expect(violationOf(() => c.onVoteGranted('n1', 'n3', 4))).toBe('election-safety');
  });

  it('Log Matching: the same index and term must follow the same prefix on every node', () => {
    const c = new Checker();
    saveLog(c, 'n1', [entry(1, 1), entry(2, 1)], 1, 0);
    saveLog(c, 'n2', [entry(1, 1), entry(2, 1)], 1, 0);
    expect(violationOf(() => saveLog(c, 'n3', [entry(1, 1, 'other'), entry(2, 1)], 1, 0))).toBe(
      'log-matching',
    );
  });

  it('Leader Completeness: a later leader must hold every committed entry', () => {
    const c = new Checker();
    saveLog(c, 'n1', [entry(1, 1), entry(2, 1)], 1, 2);
    const complete = saveLog(c, 'n2', [entry(1, 1), entry(2, 1), entry(3, 2)], 2, 0);
    c.checkLeaderLog('n2', 2, complete);
    const short = saveLog(c, 'n3', [entry(1, 1)], 2, 0);
    expect(violationOf(() => c.checkLeaderLog('n3', 3, short))).toBe('leader-completeness');
    // A leader of the term that committed it (or earlier) is not bound by it.
    expect(violationOf(() => c.checkLeaderLog('n3', 1, short))).toBeNull();
  });

  it('a node at a later term never drops a committed entry from its log', () => {
    const c = new Checker();
    saveLog(c, 'n1', [entry(1, 1), entry(2, 1)], 1, 2);
    const disk = saveLog(c, 'n2', [entry(1, 1), entry(2, 1)], 1, 0);
    const before = { ...disk.hardState };
    const effect = disk.save({
      entries: [entry(2, 2, 'overwrite')],
      hardState: { term: 2, vote: null, commit: 0 },
    });
    expect(violationOf(() => c.onSave('n2', before, disk, effect))).toBe('leader-completeness');
  });

  it('State Machine Safety: no two nodes apply different entries at one index', () => {
    const c = new Checker();
    const a = new SimStateMachine();
    const b = new SimStateMachine();
    a.apply(entry(1, 1));
    c.onApply('n1', entry(1, 1), a.digest, 1);
    b.apply(entry(1, 2));
    expect(violationOf(() => c.onApply('n2', entry(1, 2), b.digest, 1))).toBe('state-machine-safety');
  });

  it('term and commit never go back on disk, and a vote never changes within a term', () => {
    const c = new Checker();
    const disk = new SimDisk();
    const steps = [
      { term: 2, vote: 'n1', commit: 0 },
      { term: 2, vote: 'n1', commit: 0 },
    ];
    for (const hs of steps) {
      const before = { ...disk.hardState };
      c.onSave('n1', before, disk, disk.save({ hardState: hs }));
    }
    const before = { ...disk.hardState };
    // The durable store refuses this itself; the checker must say so too when shown it.
    disk.hardState = { term: 1, vote: null, commit: 0 };
    expect(
      violationOf(() => c.onSave('n1', before, disk, { removed: [], written: [], snapshotInstalled: false })),
    ).toBe('monotonicity');
  });

  it('ReadIndex linearizability: a read must see what was committed before it started', () => {
    const c = new Checker();
    expect(violationOf(() => c.onReadServed('n1', 'r1', 5, 5, 5))).toBeNull();
    expect(violationOf(() => c.onReadServed('n1', 'r2', 6, 5, 4))).toBe('linearizability');
  });
});
