import { describe, expect, test } from 'vitest';
import { ReadOnly } from '../../../src/consensus/core/index.ts';
import type { Message } from '../../../src/consensus/types.ts';

function req(ctx: string, from = 'a'): Message {
  return { type: 'MsgReadIndex', from, to: 'a', term: 0, context: ctx };
}

describe('ReadOnly (ReadIndex bookkeeping)', () => {
  test('collects acks per context', () => {
    const ro = new ReadOnly();
    ro.addRequest(5, req('r1'));
    expect(ro.recvAck('a', 'r1')?.size).toBe(1);
    expect([...(ro.recvAck('b', 'r1') ?? [])].sort()).toEqual(['a', 'b']);
    expect(ro.recvAck('b', 'unknown')).toBeUndefined();
  });

  test('advancing to a context releases it and every request queued before it, in order', () => {
    const ro = new ReadOnly();
    ro.addRequest(5, req('r1'));
    ro.addRequest(6, req('r2', 'b'));
    ro.addRequest(7, req('r3'));
    expect(ro.lastPendingRequestCtx()).toBe('r3');
    const done = ro.advance('r2');
    expect(done.map((s) => [s.req.context, s.index, s.req.from])).toEqual([
      ['r1', 5, 'a'],
      ['r2', 6, 'b'],
    ]);
    expect(ro.pendingCount).toBe(1);
    expect(ro.advance('r2')).toEqual([]);
    expect(ro.advance('r3').map((s) => s.index)).toEqual([7]);
    expect(ro.lastPendingRequestCtx()).toBeUndefined();
  });

  test('a duplicate context keeps the first request', () => {
    const ro = new ReadOnly();
    ro.addRequest(5, req('r1'));
    ro.addRequest(9, req('r1'));
    expect(ro.pendingCount).toBe(1);
    expect(ro.advance('r1')[0]?.index).toBe(5);
  });
});
