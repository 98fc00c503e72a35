// Uploads over a cap wait for room before they are refused (uploadAdmission.ts): a release admits
// the waiters that fit in arrival order, one client at its own cap does not hold back another,
// the wait and the queue are bounded, and every slot a waiter gets is given back.

import { expect, it } from 'vitest';
import { type Admission, UploadAdmission } from '../../src/manager/uploadAdmission.ts';

const limits = { maxUploads: 2, maxUploadsPerClient: 1, maxStagedBytes: 1_000, maxStagedBytesPerClient: 600 };
const LONG_WAIT = { waitMs: 60_000, maxWaiting: 4 };

function release(admission: Admission): void {
  if (!admission.ok) throw new Error(`expected an admission, got ${admission.refusal.message}`);
  admission.release();
}

it('admits a waiting upload when a slot frees, in arrival order', async () => {
  const admission = new UploadAdmission({ ...limits, maxUploadsPerClient: 5 }, LONG_WAIT);
  const first = await admission.acquire('a', 10);
  const second = await admission.acquire('a', 10);
  const order: string[] = [];
  const noted = (name: string) => (a: Admission) => {
    order.push(name);
    return a;
  };
  const third = admission.acquire('a', 10).then(noted('third'));
  const fourth = admission.acquire('a', 10).then(noted('fourth'));
  expect(admission.waiting()).toBe(2);
  release(first);
  expect((await third).ok).toBe(true);
  expect(admission.waiting()).toBe(1);
  release(second);
  expect((await fourth).ok).toBe(true);
  expect(order).toEqual(['third', 'fourth']);
  release(await third);
  release(await fourth);
  expect(admission.usage()).toEqual({ uploads: 0, bytes: 0 });
});

it('lets a client under its own cap pass a client waiting at its cap', async () => {
  const admission = new UploadAdmission({ ...limits, maxUploads: 3 }, LONG_WAIT);
  const a1 = await admission.acquire('a', 10);
  const b1 = await admission.acquire('b', 10);
  const a2 = admission.acquire('a', 10);
  const b2 = admission.acquire('b', 10);
  expect(admission.waiting()).toBe(2);
  release(b1);
  expect((await b2).ok).toBe(true);
  expect(admission.waiting()).toBe(1);
  release(a1);
  expect((await a2).ok).toBe(true);
  release(await a2);
  release(await b2);
  expect(admission.usage()).toEqual({ uploads: 0, bytes: 0 });
});

it('refuses after the wait, naming the wait and the cap still reached', async () => {
  const admission = new UploadAdmission(limits, { waitMs: 50, maxWaiting: 4 });
  const held = await admission.acquire('a', 10);
  const late = await admission.acquire('a', 10);
  expect(late.ok).toBe(false);
  if (!late.ok) {
    expect(late.refusal.code).toBe('TooManyUploads');
    expect(late.refusal.message).toMatch(/^waited 50 ms: .*maxUploadsPerClient = 1/);
  }
  expect(admission.waiting()).toBe(0);
  release(held);
  expect(admission.usage()).toEqual({ uploads: 0, bytes: 0 });
});

it('refuses at once past the queue, with no wait, and when no release could make room', async () => {
  const full = new UploadAdmission({ ...limits, maxUploadsPerClient: 5 }, { waitMs: 60_000, maxWaiting: 1 });
  const held = [await full.acquire('a', 10), await full.acquire('a', 10)];
  const queued = full.acquire('a', 10);
  expect((await full.acquire('a', 10)).ok).toBe(false);
  expect(full.waiting()).toBe(1);
  release(held[0]!);
  release(await queued);
  release(held[1]!);

  const noWait = new UploadAdmission(limits);
  const mine = await noWait.acquire('a', 10);
  expect((await noWait.acquire('a', 10)).ok).toBe(false);
  expect(noWait.waiting()).toBe(0);
  release(mine);

  const waits = new UploadAdmission(limits, LONG_WAIT);
  const tooBig = await waits.acquire('a', 601);
  expect(tooBig.ok).toBe(false);
  if (!tooBig.ok) expect(tooBig.refusal.code).toBe('StagingFull');
  expect(waits.waiting()).toBe(0);
});
