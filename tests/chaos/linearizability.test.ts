// The checker on histories whose answer is known by hand: it must accept every linearizable one
// (including overlapping and unknown-outcome operations) and reject every one that is not.

import { describe, expect, it } from 'vitest';
import { checkHistory, checkOne, type Input, type Operation, type Output } from './linearizability.ts';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

function op(client: string, input: Input, output: Output, call: number, ret: number): Operation {
  return { id: 'x', client, input, output, call, ret };
}
const put = (sha: string): Input => ({ kind: 'put', sha256: sha });
const get: Input = { kind: 'get' };
const del: Input = { kind: 'delete' };
const created: Output = { kind: 'created' };
const same: Output = { kind: 'same' };
const conflict: Output = { kind: 'conflict' };
const found = (sha: string): Output => ({ kind: 'found', sha256: sha });
const notFound: Output = { kind: 'notFound' };
const deleted: Output = { kind: 'deleted' };
const unknown: Output = { kind: 'unknown' };

describe('linearizable histories are accepted', () => {
  it('a sequential create, read, re-upload, conflict, delete, read', () => {
    expect(
      checkOne([
        op('c1', put(A), created, 0, 1),
        op('c1', get, found(A), 2, 3),
        op('c1', put(A), same, 4, 5),
        op('c1', put(B), conflict, 6, 7),
        op('c1', del, deleted, 8, 9),
        op('c1', get, notFound, 10, 11),
        op('c1', del, notFound, 12, 13),
      ]),
    ).toBe('ok');
  });

  it('a read overlapping a create may see either side', () => {
    const before = [op('c1', put(A), created, 0, 10), op('c2', get, notFound, 1, 2)];
    const after = [op('c1', put(A), created, 0, 10), op('c2', get, found(A), 1, 2)];
    expect(checkOne(before)).toBe('ok');
    expect(checkOne(after)).toBe('ok');
  });

  it('two concurrent creates of different bytes: one wins, the other conflicts', () => {
    expect(
      checkOne([
        op('c1', put(A), conflict, 0, 10),
        op('c2', put(B), created, 1, 9),
        op('c3', get, found(B), 11, 12),
      ]),
    ).toBe('ok');
  });

  it('an unknown create may have taken effect later, or never', () => {
    const seen = [
      op('c1', put(A), unknown, 0, Infinity),
      op('c2', get, notFound, 5, 6),
      op('c2', get, found(A), 7, 8),
    ];
    const never = [
      op('c1', put(A), unknown, 0, Infinity),
      op('c2', get, notFound, 5, 6),
      op('c2', put(B), created, 7, 8),
    ];
    expect(checkOne(seen)).toBe('ok');
    expect(checkOne(never)).toBe('ok');
  });

  it('an unknown delete explains a later notFound', () => {
    expect(
      checkOne([
        op('c1', put(A), created, 0, 1),
        op('c1', del, unknown, 2, Infinity),
        op('c2', get, notFound, 5, 6),
      ]),
    ).toBe('ok');
  });

  it('ids are checked apart: an id in an illegal history does not taint another', () => {
    const good = { ...op('c1', put(A), created, 0, 1), id: 'good' };
    const bad = { ...op('c1', get, found(A), 0, 1), id: 'bad' };
    const verdicts = checkHistory([good, bad]);
    expect(verdicts.find((v) => v.id === 'good')?.verdict).toBe('ok');
    expect(verdicts.find((v) => v.id === 'bad')?.verdict).toBe('illegal');
  });
});

describe('non-linearizable histories are rejected', () => {
  it('a lost acknowledged create (read notFound after the ack)', () => {
    expect(checkOne([op('c1', put(A), created, 0, 1), op('c2', get, notFound, 2, 3)])).toBe('illegal');
  });

  it('a stale read after an acknowledged delete', () => {
    expect(
      checkOne([
        op('c1', put(A), created, 0, 1),
        op('c1', del, deleted, 2, 3),
        op('c2', get, found(A), 4, 5),
      ]),
    ).toBe('illegal');
  });

  it('a read of bytes nobody wrote', () => {
    expect(checkOne([op('c1', put(A), created, 0, 1), op('c2', get, found(B), 2, 3)])).toBe('illegal');
  });

  it('two acknowledged creates of different bytes with no delete between', () => {
    expect(checkOne([op('c1', put(A), created, 0, 5), op('c2', put(B), created, 1, 6)])).toBe('illegal');
  });

  it('reads that go back in time (new value, then old value, sequentially)', () => {
    expect(
      checkOne([
        op('c1', put(A), created, 0, 1),
        op('c1', del, unknown, 2, Infinity),
        op('c2', get, notFound, 3, 4),
        op('c3', get, found(A), 5, 6),
      ]),
    ).toBe('illegal');
  });

  it('a re-upload answered `same` when nothing is stored', () => {
    expect(checkOne([op('c1', put(A), same, 0, 1)])).toBe('illegal');
  });

  it('a delete answered `deleted` twice with no create between', () => {
    expect(
      checkOne([op('c1', put(A), created, 0, 1), op('c1', del, deleted, 2, 3), op('c2', del, deleted, 4, 5)]),
    ).toBe('illegal');
  });
});

describe('the search is bounded', () => {
  it('returns unknown, not a verdict, when the budget runs out', () => {
    const ops = Array.from({ length: 12 }, (_, i) => op(`c${i}`, put(i % 2 ? A : B), unknown, i, Infinity));
    ops.push(op('z', get, found(B), 100, 101));
    expect(checkOne(ops, 3)).toBe('unknown');
    expect(checkOne(ops)).toBe('ok');
  });
});
