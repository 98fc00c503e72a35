// Objects with no copy left to repair from, against real tables and real workers
// (placementFixture.ts): lost (every worker the record names is up and holds no intact copy) told
// apart from unavailable (a worker that may hold a copy is down), repair that stops trying a lost
// object and counts it, reads that say so, and a copy that comes back undoing the verdict.

import { request } from 'undici';
import { afterEach, describe, expect, it } from 'vitest';
import { eventLog } from '../helpers/eventLog.ts';
import { sha256Of } from '../storagenode/workerHarness.ts';
import {
  cleanup,
  hearAll,
  metric,
  placementLoop,
  propose,
  putObject,
  type Setup,
  setup,
} from './placementFixture.ts';
import { readingImageService } from './readingImageService.ts';

afterEach(cleanup);

/** `gone` on w1 and w2, then both copies lost as the workers report them: w1's dropped, w2's kept as the last. */
async function lostObject(): Promise<{ s: Setup; bytes: Buffer }> {
  const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
  hearAll(s);
  const bytes = await putObject(s, 'gone', ['w1', 'w2']);
  await propose(s, { type: 'removeReplica', id: 'gone', nodeId: 'w1' });
  for (const nodeId of ['w1', 'w2']) await s.client.deleteBlob(s.workers.get(nodeId)!.url, 'gone');
  return { s, bytes };
}

describe('an object with no copy left', () => {
  it('is found lost once, counted, and not tried again on every pass', async () => {
    const { s } = await lostObject();
    const events = eventLog();
    const repair = placementLoop(s, { log: events.logger });
    expect((await repair.pass())?.outcomes.lost).toBe(1);
    const started = await metric(s, 'imgvault_repairs_started_total');
    for (let pass = 0; pass < 3; pass++) await repair.pass();
    expect(await metric(s, 'imgvault_repairs_started_total')).toBe(started);
    expect(events.count('repair.lost')).toBe(1);
    expect(events.count('repair.target_failed')).toBe(0);
    expect(events.count('repair.failed')).toBe(0);
    expect(await metric(s, 'imgvault_repair_objects_found_lost_total')).toBe(1);
    expect(await metric(s, 'imgvault_objects_lost')).toBe(1);
    expect(await metric(s, 'imgvault_objects_unavailable')).toBe(0);
    expect(await metric(s, 'imgvault_objects_under_replicated')).toBe(0);
    // The record keeps its last copy's worker: nothing is destroyed by the verdict.
    expect((await s.sm.getObject('gone'))?.replicas).toEqual(['w2']);
  });

  it('is readable and repaired again once a worker rejoins with a copy, and no longer counted lost', async () => {
    const { s, bytes } = await lostObject();
    const repair = placementLoop(s);
    await repair.pass();
    await repair.pass();
    expect(await metric(s, 'imgvault_objects_lost')).toBe(1);
    // w3 comes back holding a copy, which rejoin re-adopts.
    await s.client.putBlob(s.workers.get('w3')!.url, 'gone', sha256Of(bytes), bytes.length, bytes);
    await propose(s, { type: 'addReplica', id: 'gone', nodeId: 'w3' });
    await repair.pass();
    await repair.pass();
    expect(await metric(s, 'imgvault_objects_lost')).toBe(0);
    // w2's copy, recorded though missing, is dropped, and repair makes a second copy from w3's.
    const replicas = (await s.sm.getObject('gone'))?.replicas ?? [];
    expect(replicas).toHaveLength(2);
    expect(replicas).toContain('w3');
    for (const nodeId of replicas) expect((await s.workers.get(nodeId)!.store.stat('gone')).ok).toBe(true);
  });

  it('a copy put back where the record names it is noticed when the lost object is checked again', async () => {
    const { s, bytes } = await lostObject();
    const events = eventLog();
    const repair = placementLoop(s, { log: events.logger });
    await repair.pass();
    await s.client.putBlob(s.workers.get('w2')!.url, 'gone', sha256Of(bytes), bytes.length, bytes);
    s.clock.now += 61_000;
    hearAll(s);
    await repair.pass();
    await repair.pass();
    expect(events.count('repair.copy_back')).toBe(1);
    expect(await metric(s, 'imgvault_objects_lost')).toBe(0);
    expect((await s.sm.getObject('gone'))?.replicas.sort()).toEqual(['w1', 'w2']);
  });

  it('is unavailable, not lost, while a worker its record names is down', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'maybe', ['w1', 'w2']);
    await s.client.deleteBlob(s.workers.get('w2')!.url, 'maybe');
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    const events = eventLog();
    const repair = placementLoop(s, { log: events.logger });
    await repair.pass();
    const started = await metric(s, 'imgvault_repairs_started_total');
    await repair.pass();
    await repair.pass();
    expect(await metric(s, 'imgvault_repairs_started_total')).toBe(started);
    expect(await metric(s, 'imgvault_objects_lost')).toBe(0);
    expect(await metric(s, 'imgvault_objects_unavailable')).toBe(1);
    expect(events.count('repair.lost')).toBe(0);
  });

  it('counts every unavailable object, not only those one pass examined', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    for (let i = 0; i < 10; i++) await putObject(s, `u-${i}`, ['w1', 'w2'], 100);
    for (const nodeId of ['w1', 'w2'])
      await propose(s, { type: 'markNodeState', nodeId, state: 'down', at: s.clock.now });
    // One object a pass: a pass reads a few of the down workers' objects.
    const repair = placementLoop(s, { maxObjectsPerPass: 1 });
    for (let pass = 0; pass < 6; pass++) await repair.pass();
    expect(await metric(s, 'imgvault_objects_unavailable')).toBe(10);
    // w1 returns: every object has a copy to read again.
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'up', at: s.clock.now });
    await repair.pass();
    expect(await metric(s, 'imgvault_objects_unavailable')).toBe(0);
  });

  it("says the lost count is a lower bound until a new leader's walk has looked at every object", async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    for (let i = 0; i < 25; i++) await putObject(s, `a-${String(i).padStart(2, '0')}`, ['w1', 'w2'], 100);
    // Last in id order: the walk reaches it last.
    await putObject(s, 'z-gone', ['w1', 'w2']);
    await propose(s, { type: 'removeReplica', id: 'z-gone', nodeId: 'w1' });
    for (const nodeId of ['w1', 'w2']) await s.client.deleteBlob(s.workers.get(nodeId)!.url, 'z-gone');
    let leads = true;
    // Ten objects a pass: the walk covers the table in three.
    const repair = placementLoop(s, { maxObjectsPerPass: 10, raft: { ...s.raft, isLeader: () => leads } });
    const seen = async () => [
      await metric(s, 'imgvault_objects_lost'),
      await metric(s, 'imgvault_objects_lost_counted'),
    ];
    const passes = async () => {
      const after: number[][] = [];
      for (let pass = 0; pass < 3; pass++) {
        await repair.pass();
        after.push(await seen());
      }
      return after;
    };
    expect(await passes()).toEqual([
      [0, 0],
      [0, 0],
      [1, 1],
    ]);
    // Leadership lost and won again: the verdicts are gone, and so is the claim to a full count.
    leads = false;
    await repair.pass();
    expect(await seen()).toEqual([0, 0]);
    leads = true;
    expect(await passes()).toEqual([
      [0, 0],
      [0, 0],
      [1, 1],
    ]);
    // Lost and won again mid-walk: the walk goes on from where it was, round to that point.
    await repair.pass();
    leads = false;
    await repair.pass();
    leads = true;
    expect(await passes()).toEqual([
      [0, 0],
      [1, 0],
      [1, 1],
    ]);
  });

  it('finishes the count when the objects after where a new leader started were deleted meanwhile', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    // First in id order: the round that starts mid-table reaches it only after it wraps.
    await putObject(s, '0-gone', ['w1', 'w2']);
    await propose(s, { type: 'removeReplica', id: '0-gone', nodeId: 'w1' });
    for (const nodeId of ['w1', 'w2']) await s.client.deleteBlob(s.workers.get(nodeId)!.url, '0-gone');
    for (let i = 0; i < 25; i++) await putObject(s, `a-${String(i).padStart(2, '0')}`, ['w1', 'w2'], 100);
    let leads = true;
    const repair = placementLoop(s, { maxObjectsPerPass: 10, raft: { ...s.raft, isLeader: () => leads } });
    await repair.pass();
    leads = false;
    await repair.pass();
    leads = true;
    // The round starts at the walk's cursor, past the first ten; everything after it goes.
    for (let i = 9; i < 25; i++) {
      await propose(s, { type: 'deleteObject', id: `a-${String(i).padStart(2, '0')}` });
    }
    const counted: number[][] = [];
    for (let pass = 0; pass < 4; pass++) {
      await repair.pass();
      counted.push([
        await metric(s, 'imgvault_objects_lost'),
        await metric(s, 'imgvault_objects_lost_counted'),
      ]);
    }
    expect(counted.at(-1)).toEqual([1, 1]);
  });

  it('answers a read with Lost when every worker its record names answered it has no copy', async () => {
    const { s } = await lostObject();
    const { images, removeStaging } = await readingImageService({ metadata: s.sm, workers: s.client });
    try {
      await expect(images.open('gone', { method: 'GET' })).rejects.toMatchObject({ code: 'Lost' });
      // With the worker holding the last copy stopped, the copy may still exist: unavailable.
      await s.workers.get('w2')!.stop();
      await expect(images.open('gone', { method: 'GET' })).rejects.toMatchObject({ code: 'Unavailable' });
    } finally {
      await removeStaging();
    }
  });

  it('answers a direct read of a lost object with Lost, as a read through the manager', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'gone', ['w1', 'w2']);
    for (const nodeId of ['w1', 'w2']) await s.client.deleteBlob(s.workers.get(nodeId)!.url, 'gone');
    const { images, removeStaging } = await readingImageService({
      metadata: s.sm,
      workers: s.client,
      liveness: s.liveness,
    });
    try {
      await expect(images.open('gone', { method: 'GET' })).rejects.toMatchObject({ code: 'Lost' });
      const object = (await s.sm.getObject('gone'))!;
      const direct = await followLinks((await images.readLink(object))!);
      expect(direct.hops).toBe(1);
      expect(direct.status).toBe(500);
      expect(direct.error.code).toBe('Lost');
      expect(direct.error.message).toMatch(/every copy of gone is lost/);
      // With a worker the record names down, a copy may still exist there: unavailable both ways.
      await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
      await expect(images.open('gone', { method: 'GET' })).rejects.toMatchObject({ code: 'Unavailable' });
      const downed = await followLinks((await images.readLink((await s.sm.getObject('gone'))!))!);
      expect(downed.status).toBe(503);
      expect(downed.error.code).toBe('Unavailable');
    } finally {
      await removeStaging();
    }
  });

  it('answers a direct read with Unavailable, not Lost, when a copy is there but cannot be served', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'other', ['w1', 'w2']);
    await s.client.deleteBlob(s.workers.get('w1')!.url, 'other');
    // w2 holds other bytes under the id: not the record's, and no proof the record's are gone.
    await s.client.deleteBlob(s.workers.get('w2')!.url, 'other');
    const bytes = Buffer.alloc(2_000, 7);
    await s.client.putBlob(s.workers.get('w2')!.url, 'other', sha256Of(bytes), bytes.length, bytes);
    const { images, removeStaging } = await readingImageService({
      metadata: s.sm,
      workers: s.client,
      liveness: s.liveness,
    });
    try {
      await expect(images.open('other', { method: 'GET' })).rejects.toMatchObject({ code: 'Unavailable' });
      const direct = await followLinks((await images.readLink((await s.sm.getObject('other'))!))!);
      expect(direct.status).toBe(503);
      expect(direct.error.code).toBe('Unavailable');
    } finally {
      await removeStaging();
    }
  });

  it('answers a read with Unavailable, not Lost, while a worker its record names is down', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'maybe', ['w1', 'w2']);
    await s.client.deleteBlob(s.workers.get('w2')!.url, 'maybe');
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    const { images, removeStaging } = await readingImageService({ metadata: s.sm, workers: s.client });
    try {
      await expect(images.open('maybe', { method: 'GET' })).rejects.toMatchObject({ code: 'Unavailable' });
    } finally {
      await removeStaging();
    }
  });
});

/** Follows a direct-read link and the workers' redirects, as a client does: the last answer, and how many redirects. */
async function followLinks(
  link: string,
): Promise<{ status: number; hops: number; error: { code: string; message: string } }> {
  let url = link;
  for (let hops = 0; hops < 5; hops++) {
    const res = await request(url);
    const text = await res.body.text();
    const location = res.headers.location;
    if (res.statusCode === 307 && typeof location === 'string') {
      url = location;
      continue;
    }
    return { status: res.statusCode, hops, error: text ? JSON.parse(text).error : undefined };
  }
  throw new Error('more redirects than copies');
}
