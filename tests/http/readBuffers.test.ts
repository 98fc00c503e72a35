import { describe, expect, it } from 'vitest';
import { ReadBuffers } from '../../src/http/readBuffers.ts';

describe('ReadBuffers', () => {
  it('hands a released buffer out again, and a buffer still leased never', () => {
    const pool = new ReadBuffers(1024, 4);
    const a = pool.lease();
    const b = pool.lease();
    expect(b.buffer).not.toBe(a.buffer);
    a.release();
    expect(pool.lease().buffer).toBe(a.buffer);
    expect(pool.lease().buffer).not.toBe(b.buffer);
  });

  it('takes a buffer back once however often its lease is released', () => {
    const pool = new ReadBuffers(1024, 4);
    const a = pool.lease();
    a.release();
    a.release();
    expect(pool.idleCount).toBe(1);
    const next = pool.lease();
    expect(next.buffer).toBe(a.buffer);
    expect(pool.lease().buffer).not.toBe(a.buffer);
  });

  it('keeps at most `keep` idle buffers', () => {
    const pool = new ReadBuffers(1024, 2);
    const leases = [pool.lease(), pool.lease(), pool.lease()];
    for (const l of leases) l.release();
    expect(pool.idleCount).toBe(2);
  });
});
