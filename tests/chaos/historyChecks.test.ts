// The end-of-run judgement of the clients' history on hand-made cases: a lost upload and an undone
// delete are caught, and a final read that a later unknown write explains is not called lost.

import { describe, expect, it } from 'vitest';
import { historyProblems } from './checks.ts';
import type { Operation } from './linearizability.ts';

const A = 'a'.repeat(64);
const B = 'b'.repeat(64);

function op(
  client: string,
  input: Operation['input'],
  output: Operation['output'],
  call: number,
  ret: number,
) {
  return { id: 'x', client, input, output, call, ret } satisfies Operation;
}

describe('historyProblems', () => {
  it('accepts an upload read back from every manager', () => {
    const finals = ['m1', 'm2'].map((m, i) =>
      op(`final-${m}`, { kind: 'get' }, { kind: 'found', sha256: A }, 10 + i, 11 + i),
    );
    const history = [op('c1', { kind: 'put', sha256: A }, { kind: 'created' }, 0, 1), ...finals];
    expect(historyProblems(history, finals)).toEqual({ lost: [], problems: [] });
  });

  it('counts an acknowledged upload read as missing as lost', () => {
    const finals = [op('final-m1', { kind: 'get' }, { kind: 'notFound' }, 10, 11)];
    const history = [op('c1', { kind: 'put', sha256: A }, { kind: 'created' }, 0, 1), ...finals];
    const verdict = historyProblems(history, finals);
    expect(verdict.lost).toHaveLength(1);
    expect(verdict.problems.join()).toContain('not linearizable');
  });

  it('flags an acknowledged delete whose bytes are still read', () => {
    const finals = [op('final-m1', { kind: 'get' }, { kind: 'found', sha256: A }, 10, 11)];
    const history = [
      op('c1', { kind: 'put', sha256: A }, { kind: 'created' }, 0, 1),
      op('c1', { kind: 'delete' }, { kind: 'deleted' }, 2, 3),
      ...finals,
    ];
    const verdict = historyProblems(history, finals);
    expect(verdict.lost).toEqual([]);
    expect(verdict.problems.join()).toContain('acknowledged delete');
  });

  it('does not call an upload lost when a later write of unknown outcome explains the read', () => {
    const finals = [op('final-m1', { kind: 'get' }, { kind: 'found', sha256: B }, 10, 11)];
    const history = [
      op('c1', { kind: 'put', sha256: A }, { kind: 'created' }, 0, 1),
      op('c2', { kind: 'delete' }, { kind: 'unknown' }, 2, Number.POSITIVE_INFINITY),
      op('c3', { kind: 'put', sha256: B }, { kind: 'unknown' }, 4, Number.POSITIVE_INFINITY),
      ...finals,
    ];
    expect(historyProblems(history, finals)).toEqual({ lost: [], problems: [] });
  });
});
