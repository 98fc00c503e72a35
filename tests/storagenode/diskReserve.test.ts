// The disk reserve a worker keeps (src/diskReserve.ts), on a real folder: one deleted
// while the worker runs is noticed at the next periodic look, and one that cannot be made for
// another reason than a full disk is tried again after a doubling wait and logged once per cause.

import { mkdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { DiskReserve, RESERVE_FILE } from '../../src/diskReserve.ts';
import { eventLog } from '../helpers/eventLog.ts';
import { makeDataDir, removeDir } from './workerHarness.ts';

const BYTES = 64 * 1024;
const ROOM = 1 << 30;
/** The worker's holder, as blobStore.ts names it. */
const WORKER = { name: 'worker', refusing: 'takes no new blob (507)' };

let dir = '';
beforeEach(async () => {
  dir = await makeDataDir();
});
afterEach(async () => {
  await removeDir(dir);
});

const reserveSize = async () => (await stat(path.join(dir, RESERVE_FILE)).catch(() => null))?.size ?? 0;

/** A periodic look at the disk (each heartbeat's), waited for. */
async function look(reserve: DiskReserve, freeBytes: number): Promise<void> {
  reserve.restoreIfRoom(freeBytes);
  await reserve.settled();
}

/** Makes the reserve fail with EISDIR, not a full disk: its temporary name is a folder that is not empty. */
async function block(): Promise<void> {
  await mkdir(path.join(dir, `${RESERVE_FILE}.tmp`, 'x'), { recursive: true });
}
async function unblock(): Promise<void> {
  await rm(path.join(dir, `${RESERVE_FILE}.tmp`), { recursive: true, force: true });
}

describe('the disk reserve', () => {
  it('notices at the next look a reserve deleted while the worker runs, and makes it again once there is room', async () => {
    const events = eventLog();
    const reserve = new DiskReserve(dir, BYTES, events.logger, WORKER);
    await reserve.makeIfRoom(ROOM);
    expect(reserve.inPlace).toBe(true);
    await rm(reserve.file);
    // No room for it now: the store takes no new blob meanwhile, as after a release.
    await look(reserve, BYTES);
    expect(reserve.inPlace).toBe(false);
    await look(reserve, BYTES);
    expect(events.count('storage.reserve_gone')).toBe(1);
    await look(reserve, ROOM);
    expect(reserve.inPlace).toBe(true);
    expect(await reserveSize()).toBe(BYTES);
  });

  it('tries a reserve that fails for another reason than a full disk again after a doubling, capped wait, logged once', async () => {
    const events = eventLog();
    const clock = { now: 0 };
    const reserve = new DiskReserve(dir, BYTES, events.logger, WORKER, () => clock.now);
    await block();
    await look(reserve, ROOM);
    expect(reserve.inPlace).toBe(false);
    // Every heartbeat within the wait: no attempt (it would succeed, unblocked) and no log line.
    for (let i = 0; i < 5; i++) await look(reserve, ROOM);
    expect(events.count('storage.reserve_failed')).toBe(1);
    await unblock();
    clock.now = 999;
    await look(reserve, ROOM);
    expect(reserve.inPlace).toBe(false);
    // Failed again at 1 s: the next try waits 2 s more.
    await block();
    clock.now = 1_000;
    await look(reserve, ROOM);
    await unblock();
    clock.now = 2_999;
    await look(reserve, ROOM);
    expect(reserve.inPlace).toBe(false);
    expect(events.count('storage.reserve_failed')).toBe(1);
    // Many failures later the wait is the cap, a minute, not more.
    await block();
    for (let i = 0; i < 12; i++) {
      clock.now += 60_000;
      await look(reserve, ROOM);
    }
    await unblock();
    clock.now += 59_999;
    await look(reserve, ROOM);
    expect(reserve.inPlace).toBe(false);
    clock.now += 1;
    await look(reserve, ROOM);
    expect(reserve.inPlace).toBe(true);
    expect(events.count('storage.reserve_failed')).toBe(1);
    expect(events.count('storage.reserve_made')).toBe(1);
  });
});
