// withMinimumRate: one timer a window judges it, whether a read is waiting when it fires or not.

import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it } from 'vitest';
import { BodyTooSlow, withMinimumRate } from '../../src/http/requestBody.ts';

const RATE = { bytesPerSecond: 10_000, windowMs: 200 };

async function drain(source: AsyncIterable<Uint8Array>): Promise<number> {
  let bytes = 0;
  for await (const chunk of source) bytes += chunk.byteLength;
  return bytes;
}

it('passes a body that keeps up, across several windows, chunk for chunk', async () => {
  async function* steady() {
    for (let i = 0; i < 12; i++) {
      await sleep(50);
      yield Buffer.alloc(5_000);
    }
  }
  // 200 bytes a 300 ms window are needed; every chunk alone brings more.
  expect(await drain(withMinimumRate(steady(), { bytesPerSecond: 1_000, windowMs: 300 }))).toBe(60_000);
});

it('cuts a body that stalls while a read waits, within two windows', async () => {
  const started = performance.now();
  async function* stalls() {
    yield Buffer.alloc(5_000);
    await sleep(60_000);
    yield Buffer.alloc(1);
  }
  await expect(drain(withMinimumRate(stalls(), RATE))).rejects.toBeInstanceOf(BodyTooSlow);
  expect(performance.now() - started).toBeLessThan(5_000);
});

it('judges a window that ended while the consumer held the last chunk', async () => {
  async function* trickle() {
    yield Buffer.alloc(100);
    yield Buffer.alloc(100);
  }
  const cut = (async () => {
    for await (const _ of withMinimumRate(trickle(), RATE)) await sleep(300);
  })();
  await expect(cut).rejects.toBeInstanceOf(BodyTooSlow);
});
