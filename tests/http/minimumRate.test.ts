// withMinimumRate: one timer a window judges it, whether a read is waiting when it fires or not,
// counting only time spent reading from the client.

import { setTimeout as sleep } from 'node:timers/promises';
import { expect, it, vi } from 'vitest';
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

it('judges a client only on time spent reading from it, not while the consumer holds a chunk', async () => {
  async function* prompt() {
    yield Buffer.alloc(100);
    yield Buffer.alloc(100);
  }
  // Each hold is longer than a window; the client answered every read at once.
  let chunks = 0;
  for await (const _ of withMinimumRate(prompt(), RATE)) {
    chunks += 1;
    await sleep(300);
  }
  expect(chunks).toBe(2);
});

it('still cuts a client that stalls between reads a slow consumer makes', async () => {
  const started = performance.now();
  async function* stalls() {
    yield Buffer.alloc(100);
    await sleep(60_000);
    yield Buffer.alloc(1);
  }
  const cut = (async () => {
    for await (const _ of withMinimumRate(stalls(), RATE)) await sleep(300);
  })();
  await expect(cut).rejects.toBeInstanceOf(BodyTooSlow);
  expect(performance.now() - started).toBeLessThan(5_000);
});

it('sets one timer a window, not one a read', async () => {
  async function* quick() {
    for (let i = 0; i < 50; i++) {
      await new Promise((resolve) => setImmediate(resolve));
      yield Buffer.alloc(1_000);
    }
  }
  const timers = vi.spyOn(globalThis, 'setTimeout');
  try {
    // 50 reads well inside one 60 s window.
    expect(await drain(withMinimumRate(quick(), { bytesPerSecond: 1, windowMs: 60_000 }))).toBe(50_000);
    expect(timers.mock.calls.length).toBeLessThanOrEqual(2);
  } finally {
    timers.mockRestore();
  }
});
