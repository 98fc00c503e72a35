// Repair against real tables and real workers (placementFixture.ts): down verdicts, repair with
// fallback and copy batches, unavailable objects, draining, trims, and the guards that keep a
// repair from losing a copy. The planner's decisions have their own table-driven tests
// (placementPlan.test.ts); rejoin has rejoin.test.ts.

import { randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { startDrain, undrain } from '../../src/manager/drain.ts';
import type { RaftAccess } from '../../src/manager/imageService.ts';
import { deleteCopy, ObjectSlots } from '../../src/manager/placement/execute.ts';
import { type CommandOf, decodeCommand } from '../../src/metadata/commands.ts';
import { eventLog } from '../helpers/eventLog.ts';
import { until } from '../helpers/until.ts';
import { sha256Of } from '../storagenode/workerHarness.ts';
import {
  cleanup,
  failureDetector,
  hearAll,
  metric,
  onCleanup,
  placementFor,
  placementLoop,
  propose,
  putObject,
  rot,
  type Setup,
  setup,
} from './placementFixture.ts';

afterEach(cleanup);

/** Objects a and b on w1 and w2, w1 down, w3 free: a pass copies both to w3 (one batch each at 2,000 bytes). */
async function twoToRepair(): Promise<Setup> {
  const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
  hearAll(s);
  for (const id of ['a', 'b']) await putObject(s, id, ['w1', 'w2']);
  await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
  return s;
}

/** `count` objects `<prefix>-<i>` on w1 and w2, w1 down, w3 free. */
async function objectsOnDownWorker(prefix: string, count: number): Promise<Setup> {
  const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
  hearAll(s);
  for (let i = 0; i < count; i++) await putObject(s, `${prefix}-${i}`, ['w1', 'w2']);
  await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
  return s;
}

/** `s.raft`, but a `replicaChanges` entry that `holds` picks waits until `open()` (at cleanup at the latest). */
function gatedRaft(
  s: Setup,
  holds: (command: CommandOf<'replicaChanges'>) => boolean,
): { raft: RaftAccess; open: () => void } {
  let open!: () => void;
  const gate = new Promise<void>((resolve) => (open = resolve));
  onCleanup(async () => open());
  const raft: RaftAccess = {
    ...s.raft,
    async propose(data, requestId) {
      const c = decodeCommand(data);
      if (c.ok && c.command.type === 'replicaChanges' && holds(c.command)) await gate;
      return s.raft.propose(data, requestId);
    },
  };
  return { raft, open };
}

describe('FailureDetector', () => {
  it('condemns a worker only after a full down timeout of silence counted from its own leadership', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    const told: string[] = [];
    const detector = failureDetector(s, (nodeId) => told.push(nodeId));
    // Silent for ages as far as the table goes, but this leader only started watching now.
    s.clock.now += 60_000;
    expect(await detector.check()).toEqual([]);
    s.clock.now += 4_000;
    s.liveness.heard({ nodeId: 'w2', diskUsed: 0, diskFree: 1, objectCount: 0, lastSeen: s.clock.now });
    expect(await detector.check()).toEqual([]);
    s.clock.now += 1_500;
    expect(told).toEqual([]);
    expect(await detector.check()).toEqual(['w1']);
    expect(told).toEqual(['w1']);
    expect((await s.sm.getNode('w1'))?.state).toBe('down');
    expect((await s.sm.getNode('w2'))?.state).toBe('up');
    expect(await metric(s, 'imgvault_nodes_marked_down_total')).toBe(1);
  });
});

describe('RepairLoop', () => {
  it('moves every object off a down worker, falls back past a target that refuses, and counts it', async () => {
    // w4 looks emptiest to the leader (stale usage) but its quota refuses any 2 kB copy.
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }, { id: 'w4', quotaBytes: 500 }]);
    hearAll(s, { w4: 0 });
    const objects = new Map<string, Buffer>();
    for (let i = 0; i < 6; i++) objects.set(`obj-${i}`, await putObject(s, `obj-${i}`, ['w1', 'w2']));
    await s.workers.get('w1')!.stop();
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });

    const report = await placementLoop(s).pass();
    expect(report?.outcomes.copied).toBe(6);
    // The gauge says what the pass left, not what it found.
    expect(await metric(s, 'imgvault_objects_under_replicated')).toBe(0);
    for (const [id, bytes] of objects) {
      const o = await s.sm.getObject(id);
      expect(o?.replicas.sort()).toEqual(['w2', 'w3']);
      const res = await s.client.getBlob(s.workers.get('w3')!.url, id);
      expect(sha256Of(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256Of(bytes));
    }
    expect((await s.sm.objectsOnNode('w1')).items).toEqual([]);
    expect(await metric(s, 'imgvault_repair_fallbacks_total')).toBe(6);
    expect(await metric(s, 'imgvault_repairs_succeeded_total')).toBe(6);
    expect(await metric(s, 'imgvault_repair_bytes_copied_total')).toBe(6 * 2_000);
    // Level-triggered: the next pass finds nothing left to do.
    const again = await placementLoop(s).pass();
    expect(again?.outcomes.copied).toBe(0);
    expect(await metric(s, 'imgvault_objects_under_replicated')).toBe(0);
  });

  it('counts the whole backlog as under-replicated, not only the objects one pass takes', async () => {
    const s = await objectsOnDownWorker('backlog', 6);
    const loop = placementLoop(s, { maxObjectsPerPass: 2 });
    const seen: { left: number; gauge: number }[] = [];
    for (let pass = 0; pass < 6 && (seen.at(-1)?.left ?? 6) > 0; pass++) {
      await loop.pass();
      const left = (await s.sm.objectsOnNode('w1')).items.length;
      seen.push({ left, gauge: await metric(s, 'imgvault_objects_under_replicated') });
    }
    expect(seen[0]!.left).toBeGreaterThan(0);
    expect(seen.at(-1)!.left).toBe(0);
    for (const { left, gauge } of seen) expect(gauge).toBe(left);
  });

  it('starts a pass when woken instead of waiting out its interval', async () => {
    const s = await objectsOnDownWorker('woken', 3);
    const loop = placementFor(s, { intervalMs: 600_000 });
    loop.wake(); // Not started: nothing runs.
    await new Promise((resolve) => setTimeout(resolve, 100));
    expect((await s.sm.objectsOnNode('w3')).items).toEqual([]);
    loop.start();
    onCleanup(() => loop.stop());
    loop.wake();
    const deadline = Date.now() + 10_000;
    while ((await s.sm.objectsOnNode('w3')).items.length < 3 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    expect((await s.sm.objectsOnNode('w3')).items).toHaveLength(3);
  });

  it('copies in batches: one copy-batch request and one entry per 32 objects, a failed copy falls back alone', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }, { id: 'w4' }]);
    hearAll(s, { w4: 500_000 });
    for (let i = 0; i < 40; i++) await putObject(s, `obj-${i}`, ['w1', 'w2']);
    // w3, the preferred target, holds other bytes under one id: its copy there fails (409).
    const other = randomBytes(2_000);
    await s.client.putBlob(s.workers.get('w3')!.url, 'obj-7', sha256Of(other), 2_000, Readable.from([other]));
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    const proposed: string[] = [];
    const raft: RaftAccess = {
      ...s.raft,
      propose(data, requestId) {
        const c = decodeCommand(data);
        if (c.ok) proposed.push(c.command.type);
        return s.raft.propose(data, requestId);
      },
    };

    const report = await placementLoop(s, { raft }).pass();
    expect(report?.outcomes.copied).toBe(40);
    // Two batches and one fallback: an entry each.
    expect(proposed).toEqual(['replicaChanges', 'replicaChanges', 'replicaChanges']);
    for (let i = 0; i < 40; i++) {
      expect((await s.sm.getObject(`obj-${i}`))?.replicas).toEqual([i === 7 ? 'w4' : 'w3', 'w2']);
    }
    const batchRequests = (await s.workers.get('w2')!.worker.metrics.requests.get()).values
      .filter((v) => v.labels.route === '/blobs/copy-batch')
      .reduce((t, v) => t + v.value, 0);
    // The fallback is a batch of one.
    expect(batchRequests).toBe(3);
    expect(await metric(s, 'imgvault_repair_fallbacks_total')).toBe(1);
    expect(await metric(s, 'imgvault_repairs_started_total')).toBe(40);
    expect(await metric(s, 'imgvault_repairs_succeeded_total')).toBe(40);
    expect((await s.sm.stats()).nodes).toMatchObject({
      w2: { objects: 40 },
      w3: { objects: 39 },
      w4: { objects: 1 },
    });
  });

  it('plans no more copies in one pass than its batches carry at once; the next pass takes the rest', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    for (let i = 0; i < 6; i++) await putObject(s, `big-${i}`, ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    const loop = placementLoop(s, { concurrency: 1, batchBytes: 5_000 });
    // One batch in flight of at most 5000 bytes: a pass plans 6000 bytes (three 2000-byte objects).
    const first = await loop.pass();
    expect(first?.outcomes).toMatchObject({ copied: 3, skipped: 3 });
    const second = await loop.pass();
    expect(second?.outcomes).toMatchObject({ copied: 3, skipped: 0 });
    expect((await s.sm.objectsOnNode('w3')).items).toHaveLength(6);
  });

  it('counts a batch its holder could not run as failed, with no fallback to other targets', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }, { id: 'w4' }]);
    hearAll(s);
    for (let i = 0; i < 3; i++) await putObject(s, `held-${i}`, ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    // w2 stops answering before the leader notices: it still looks like a serving holder.
    await s.workers.get('w2')!.stop();
    const report = await placementLoop(s).pass();
    expect(report?.outcomes).toMatchObject({ copied: 0, failed: 3 });
    expect(await metric(s, 'imgvault_repair_fallbacks_total')).toBe(0);
    expect(await metric(s, 'imgvault_repairs_failed_total')).toBe(3);
    for (let i = 0; i < 3; i++) expect((await s.sm.getObject(`held-${i}`))?.replicas).toEqual(['w1', 'w2']);
  });

  it('copies from another holder, to the same target, when a holder could not run the batch', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const bytes = await putObject(s, 'moved', ['w1', 'w2']);
    await putObject(s, 'moved-too', ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: s.clock.now });
    // w1, the first holder, stops answering before the leader notices: it still looks serving.
    await s.workers.get('w1')!.stop();
    const report = await placementLoop(s).pass();
    expect(report?.outcomes).toMatchObject({ copied: 2, failed: 0 });
    expect(await metric(s, 'imgvault_repair_fallbacks_total')).toBe(0);
    expect((await s.sm.getObject('moved'))?.replicas.sort()).toEqual(['w2', 'w3']);
    expect((await s.sm.getObject('moved-too'))?.replicas.sort()).toEqual(['w2', 'w3']);
    const copy = await s.client.getBlob(s.workers.get('w3')!.url, 'moved');
    expect(sha256Of(Buffer.from(await copy.body.arrayBuffer()))).toBe(sha256Of(bytes));
    // Every job of the failed batch gives up w1 at once: w2 serves both copies in one request.
    const batchRequests = (await s.workers.get('w2')!.worker.metrics.requests.get()).values
      .filter((v) => v.labels.route === '/blobs/copy-batch')
      .reduce((t, v) => t + v.value, 0);
    expect(batchRequests).toBe(1);
  });

  it("a holder without the bytes is not the target's fault: the same target gets the copy from the next holder", async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }, { id: 'w4' }]);
    hearAll(s, { w4: 500_000 });
    const bytes = await putObject(s, 'turn', ['w1', 'w2']);
    // w1, the first holder, holds other bytes under the id: it refuses to send them.
    const other = randomBytes(2_000);
    const w1 = s.workers.get('w1')!;
    await w1.store.delete('turn');
    await s.client.putBlob(w1.url, 'turn', sha256Of(other), other.length, Readable.from([other]));
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: s.clock.now });
    const events = eventLog();
    const report = await placementLoop(s, { log: events.logger }).pass();
    expect(report?.outcomes).toMatchObject({ copied: 1, failed: 0 });
    expect(await metric(s, 'imgvault_repair_fallbacks_total')).toBe(0);
    expect(events.count('repair.target_failed')).toBe(0);
    // w3, the first target, got w2's copy once w1 had none to send.
    expect((await s.sm.getObject('turn'))?.replicas.sort()).toEqual(['w2', 'w3']);
    const copy = await s.client.getBlob(s.workers.get('w3')!.url, 'turn');
    expect(sha256Of(Buffer.from(await copy.body.arrayBuffer()))).toBe(sha256Of(bytes));
  });

  it('counts each object once when a table read fails for some: the others are still copied', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    for (let i = 0; i < 3; i++) await putObject(s, `part-${i}`, ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    // The walk reads each object once to find it; the pass reads it again, under its slot, to plan it.
    const reads = new Map<string, number>();
    const metadata = Object.create(s.sm) as typeof s.sm;
    metadata.getObject = async (id) => {
      const n = (reads.get(id) ?? 0) + 1;
      reads.set(id, n);
      if (n === 2 && id === 'part-0') return null;
      if (n === 2 && id === 'part-1') throw new Error('table read failed');
      return s.sm.getObject(id);
    };
    const report = await placementLoop(s, { metadata }).pass();
    expect(report?.outcomes).toMatchObject({ skipped: 1, failed: 1, copied: 1 });
    expect((await s.sm.getObject('part-2'))?.replicas).toEqual(['w3', 'w2']);
    expect(Object.values(report!.outcomes).reduce((a, b) => a + b, 0)).toBe(3);
  });

  it('objects no worker has room for: one line names them, not one per object on every pass', async () => {
    const s = await objectsOnDownWorker('stuck', 5);
    // w3, the only worker beside the copies, is full.
    hearAll(s, { w3: 1_000_000 });
    const events = eventLog();
    const repair = placementLoop(s, { log: events.logger });
    for (let pass = 0; pass < 3; pass++) {
      expect((await repair.pass())?.outcomes.noTarget).toBe(5);
    }
    expect(events.count('repair.no_target')).toBe(1);
    // Room again: the copies are made. Then w2 goes down too, and with w1 down no worker is up
    // beside w3: the objects stuck again are named anew, once.
    hearAll(s);
    expect((await repair.pass())?.outcomes.copied).toBe(5);
    await propose(s, { type: 'markNodeState', nodeId: 'w2', state: 'down', at: s.clock.now });
    expect((await repair.pass())?.outcomes.noTarget).toBe(5);
    await repair.pass();
    expect(events.count('repair.no_target')).toBe(2);
  });

  it('leaves an object whose every copy is on a down worker for later and reports it unavailable', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'lonely', ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    await propose(s, { type: 'markNodeState', nodeId: 'w2', state: 'down', at: s.clock.now });
    const report = await placementLoop(s).pass();
    expect(report?.outcomes.unavailable).toBe(1);
    expect(await metric(s, 'imgvault_objects_unavailable')).toBe(1);
    expect((await s.sm.getObject('lonely'))?.replicas).toEqual(['w1', 'w2']);
  });

  it('repairs the objects with a live copy on two down workers while more than a pass takes on have none', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }, { id: 'w4' }]);
    hearAll(s);
    const record = (id: string, replicas: string[]) =>
      propose(s, {
        type: 'recordObject',
        id,
        size: 10,
        sha256: sha256Of(Buffer.from(id)),
        contentType: 'image/png',
        createdAt: s.clock.now,
        replicas,
      });
    // Both copies on the two workers that go down, first in both their indexes: nothing to copy from.
    for (let i = 0; i < 6; i++) await record(`a-${i}`, ['w1', 'w2']);
    // More healthy objects than one step of the backstop's walk over the object table takes.
    for (let i = 0; i < 1_000; i++) await record(`m-${i}`, ['w3', 'w4']);
    await putObject(s, 'z-0', ['w1', 'w3']);
    await putObject(s, 'z-1', ['w2', 'w4']);
    for (const nodeId of ['w1', 'w2'])
      await propose(s, { type: 'markNodeState', nodeId, state: 'down', at: s.clock.now });
    // Six objects without a copy to repair from on each, more than the four a pass takes on.
    await placementLoop(s, { maxObjectsPerPass: 4 }).pass();
    expect((await s.sm.getObject('z-0'))?.replicas.sort()).toEqual(['w3', 'w4']);
    expect((await s.sm.getObject('z-1'))?.replicas.sort()).toEqual(['w3', 'w4']);
    expect((await s.sm.getObject('a-0'))?.replicas).toEqual(['w1', 'w2']);
  });

  it('drains a worker: copies from it, records the new copy, deletes its copy, marks it drained', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    for (let i = 0; i < 3; i++) await putObject(s, `d-${i}`, ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: s.clock.now });
    const report = await placementLoop(s).pass();
    expect(report?.outcomes.copied).toBe(3);
    expect(report?.drained).toEqual(['w1']);
    expect((await s.sm.getNode('w1'))?.state).toBe('drained');
    expect((await s.workers.get('w1')!.store.stats()).blobCount).toBe(0);
  });
  it('stops moving objects off a worker once its drain is taken back (undrain)', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    for (let i = 0; i < 3; i++) await putObject(s, `u-${i}`, ['w1', 'w2']);
    await startDrain(s.raft, s.sm, 'w1');
    await undrain(s.raft, s.sm, 'w1');
    const report = await placementLoop(s).pass();
    expect(report?.outcomes.copied).toBe(0);
    expect(report?.drained).toEqual([]);
    expect((await s.sm.getNode('w1'))?.state).toBe('up');
    for (let i = 0; i < 3; i++) expect((await s.sm.getObject(`u-${i}`))?.replicas).toEqual(['w1', 'w2']);
    expect((await s.workers.get('w1')!.store.stats()).blobCount).toBe(3);
  });

  it('keeps a silent draining worker draining and copies its objects from the other holders', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    const detector = failureDetector(s);
    await detector.check(); // starts watching as leader
    hearAll(s);
    const bytes = await putObject(s, 'silent-drain', ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: s.clock.now });
    await s.workers.get('w1')!.stop();
    s.clock.now += 10_000;
    for (const id of ['w2', 'w3']) {
      s.liveness.heard({
        nodeId: id,
        diskUsed: 100_000,
        diskFree: 900_000,
        objectCount: 0,
        lastSeen: s.clock.now,
      });
    }

    expect(await detector.check()).toEqual([]);
    expect((await s.sm.getNode('w1'))?.state).toBe('draining');
    const report = await placementLoop(s).pass();
    expect(report?.outcomes.copied).toBe(1);
    expect(report?.drained).toEqual(['w1']);
    const object = await s.sm.getObject('silent-drain');
    expect(object?.replicas.sort()).toEqual(['w2', 'w3']);
    const copy = await s.client.getBlob(s.workers.get('w3')!.url, 'silent-drain', { method: 'GET' });
    expect(sha256Of(Buffer.from(await copy.body.arrayBuffer()))).toBe(sha256Of(bytes));
  });
});

describe('RepairLoop copies too many', () => {
  it('trims an object at three copies back to two, but not while another action on it is in flight', async () => {
    const s = await setup([
      { id: 'w1', zone: 'a' },
      { id: 'w2', zone: 'a' },
      { id: 'w3', zone: 'b' },
    ]);
    hearAll(s);
    await putObject(s, 'thrice', ['w1', 'w2', 'w3']);
    const placement = placementFor(s, { concurrency: 2 });
    // A rejoin deciding on a copy of the object (it may be removing one too) holds its slot.
    const release = placement.slots.claim('thrice')!;
    expect((await placement.repair.pass())?.outcomes.skipped).toBe(1);
    expect((await s.sm.getObject('thrice'))?.replicas).toHaveLength(3);
    release();
    expect((await placement.repair.pass())?.outcomes.trimmed).toBe(1);
    const replicas = (await s.sm.getObject('thrice'))!.replicas;
    // Zones stay distinct: the copy removed is one of the two in zone a.
    expect(replicas).toHaveLength(2);
    expect(replicas).toContain('w3');
    const removed = ['w1', 'w2'].find((n) => !replicas.includes(n))!;
    expect((await s.workers.get(removed)!.store.stat('thrice')).ok).toBe(false);
    expect((await placement.repair.pass())?.outcomes.trimmed).toBe(0);
    expect(placement.slots.size()).toBe(0);
  });
});

describe('one action per object at a time', () => {
  it('ObjectSlots: one holder per object; hold waits for it, release is idempotent', async () => {
    const slots = new ObjectSlots();
    const first = slots.claim('a');
    expect(first).not.toBeNull();
    expect(slots.claim('a')).toBeNull();
    const other = slots.claim('b');
    expect(other).not.toBeNull();
    let second: (() => void) | null = null;
    const waiting = slots.hold('a').then((r) => {
      second = r;
    });
    await new Promise((r) => setTimeout(r, 20));
    expect(second).toBeNull();
    first!();
    first!();
    await waiting;
    expect(second).not.toBeNull();
    expect(slots.claim('a')).toBeNull();
    second!();
    other!();
    expect(slots.size()).toBe(0);
  });

  it('deletes a copy only unlisted, reading the table as of everything committed', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    await putObject(s, 'x', ['w1', 'w2']);
    const w3 = s.workers.get('w3')!;
    const bytes = randomBytes(100);
    await s.client.putBlob(w3.url, 'x', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    const deps = { metadata: s.sm, workers: s.client, raft: s.raft };
    const node = (id: string) => ({ nodeId: id, url: s.workers.get(id)!.url });

    expect(await deleteCopy(deps, node('w1'), 'x')).toBe(false);
    expect((await s.workers.get('w1')!.store.stat('x')).ok).toBe(true);

    // Another path holds the object (a rejoin about to record w3's copy): a delete waits for it and
    // then finds the copy recorded.
    const release = s.slots.claim('x')!;
    const waited = s.slots.hold('x').then(async (mine) => {
      const deleted = await deleteCopy(deps, node('w3'), 'x');
      mine();
      return deleted;
    });
    await propose(s, { type: 'addReplica', id: 'x', nodeId: 'w3' });
    release();
    expect(await waited).toBe(false);
    expect((await w3.store.stat('x')).ok).toBe(true);

    await propose(s, { type: 'removeReplica', id: 'x', nodeId: 'w3' });
    // A manager that can no longer prove it leads deletes nothing: a newer leader may list the copy.
    const deposed = { ...deps, raft: { readIndex: () => Promise.reject(new Error('not the leader')) } };
    await expect(deleteCopy(deposed, node('w3'), 'x')).rejects.toThrow('not the leader');
    expect((await w3.store.stat('x')).ok).toBe(true);
    expect(await deleteCopy(deps, node('w3'), 'x')).toBe(true);
    expect((await w3.store.stat('x')).ok).toBe(false);
    expect(s.slots.size()).toBe(0);
  });

  it('repair lets go of every object it held when a table read fails halfway through a pass', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'a', ['w1', 'w2']);
    await putObject(s, 'b', ['w1', 'w2']);
    await s.workers.get('w1')!.stop();
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    // One batch (w2 to w3) for both; the pass's own read of b fails, while a is held.
    const getObject = s.sm.getObject.bind(s.sm);
    let readsOfB = 0;
    const spy = vi.spyOn(s.sm, 'getObject').mockImplementation(async (id: string) => {
      if (id === 'b' && ++readsOfB === 2) throw new Error('table read failed');
      return getObject(id);
    });
    try {
      const report = await placementLoop(s).pass();
      expect(report?.outcomes).toMatchObject({ failed: 1, copied: 1 });
    } finally {
      spy.mockRestore();
    }
    expect(s.slots.size()).toBe(0);
    expect((await placementLoop(s).pass())?.outcomes.copied).toBe(1);
    for (const id of ['a', 'b']) expect((await s.sm.getObject(id))?.replicas.sort()).toEqual(['w2', 'w3']);
  });

  it("repair gives an object back once its copy's batch has an outcome, not at the end of the pass", async () => {
    const s = await twoToRepair();
    // Two batches of one object each (2,000 bytes a batch); the second batch's entry waits.
    let entries = 0;
    const { raft, open } = gatedRaft(s, () => ++entries === 2);
    const pass = placementLoop(s, { raft, concurrency: 2, batchBytes: 2_000 }).pass();
    const copied = await until('one copy recorded', async () => {
      for (const id of ['a', 'b']) if ((await s.sm.getObject(id))?.replicas.includes('w3')) return id;
      return null;
    });
    // A delete of that object holds its slot now, while the pass still waits on the other batch.
    const release = await until('the slot of the copied object', () => s.slots.claim(copied));
    release();
    open();
    expect((await pass)?.outcomes.copied).toBe(2);
    expect(s.slots.size()).toBe(0);
  });

  it('a batch whose commit throws is counted failed; the batches still running keep their slots', async () => {
    const s = await twoToRepair();
    // Two batches of one object each. Once both are copied, the first commit waits at its entry and
    // the second one's table read fails.
    let copying = false;
    onCleanup(async () => {
      vi.restoreAllMocks();
    });
    const copyBatch = s.client.copyBatch.bind(s.client);
    vi.spyOn(s.client, 'copyBatch').mockImplementation((...args) => {
      copying = true;
      return copyBatch(...args);
    });
    let commitReads = 0;
    const listNodes = s.sm.listNodes.bind(s.sm);
    vi.spyOn(s.sm, 'listNodes').mockImplementation(async () => {
      if (copying && ++commitReads === 2) throw new Error('table read failed');
      return listNodes();
    });
    let waiting: string | undefined;
    const { raft, open } = gatedRaft(s, (command) => {
      waiting = command.changes[0]!.id;
      return true;
    });
    const pass = placementLoop(s, { raft, concurrency: 2, batchBytes: 2_000 }).pass();
    const held = await until('a commit waiting, the other failed', () => commitReads >= 2 && waiting);
    await new Promise((r) => setTimeout(r, 50));
    expect(s.slots.claim(held)).toBeNull();
    open();
    expect((await pass)?.outcomes).toMatchObject({ copied: 1, failed: 1 });
    expect(s.slots.size()).toBe(0);
  });

  it('repair leaves an object an upload or a delete is acting on to the next pass', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'x', ['w1', 'w2']);
    await s.workers.get('w1')!.stop();
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    // w3 is the only target; an upload of x (retried by its client) holds the object right now.
    const release = await s.slots.hold('x');
    const held = await placementLoop(s).pass();
    expect(held?.outcomes.copied ?? 0).toBe(0);
    expect((await s.workers.get('w3')!.store.stat('x')).ok).toBe(false);
    release();
    const next = await placementLoop(s).pass();
    expect(next?.outcomes.copied).toBe(1);
    expect((await s.sm.getObject('x'))?.replicas.sort()).toEqual(['w2', 'w3']);
    expect(s.slots.size()).toBe(0);
  });
});

describe('repair data-loss guards', () => {
  it('trims the copy whose bytes are wrong, never a good one, even when placement prefers otherwise', async () => {
    const s = await setup([
      { id: 'w1', zone: 'a' },
      { id: 'w2', zone: 'a' },
      { id: 'w3', zone: 'b' },
    ]);
    hearAll(s);
    const bytes = await putObject(s, 'thrice', ['w1', 'w2', 'w3']);
    // Placement alone would drop w1 or w2 (zone a twice) and keep w3, the rotten one.
    await rot(s.workers.get('w3')!, 'thrice');
    expect((await placementLoop(s).pass())?.outcomes.trimmed).toBe(1);
    expect((await s.sm.getObject('thrice'))?.replicas.sort()).toEqual(['w1', 'w2']);
    for (const n of ['w1', 'w2']) {
      const res = await s.client.getBlob(s.workers.get(n)!.url, 'thrice');
      expect(sha256Of(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256Of(bytes));
    }
  });

  it('refuses a trim planned on a record its predecessor changed since, and plans again', async () => {
    const s = await setup([
      { id: 'w1', zone: 'a' },
      { id: 'w2', zone: 'a' },
      { id: 'w3', zone: 'b' },
    ]);
    hearAll(s);
    await putObject(s, 'thrice', ['w1', 'w2', 'w3']);
    // A new leader plans on a table that has not applied its predecessor's trim of w3: that entry
    // commits just before this leader's own change.
    let predecessor: (() => Promise<void>) | null = async () => {
      await propose(s, { type: 'removeReplica', id: 'thrice', nodeId: 'w3' });
      await s.workers.get('w3')!.store.delete('thrice');
    };
    const raft: RaftAccess = {
      ...s.raft,
      async propose(data, requestId) {
        const first = predecessor;
        predecessor = null;
        await first?.();
        return s.raft.propose(data, requestId);
      },
    };
    const loop = placementLoop(s, { raft });
    expect((await loop.pass())?.outcomes).toMatchObject({ trimmed: 0, skipped: 1 });
    expect((await s.sm.getObject('thrice'))?.replicas.sort()).toEqual(['w1', 'w2']);
    for (const n of ['w1', 'w2']) expect((await s.workers.get(n)!.store.stat('thrice')).ok).toBe(true);
    expect((await loop.pass())?.examined).toBe(0);
  });

  it('keeps three copies when two good ones cannot be proved', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'thrice', ['w1', 'w2', 'w3']);
    await rot(s.workers.get('w1')!, 'thrice');
    await rot(s.workers.get('w2')!, 'thrice');
    expect((await placementLoop(s).pass())?.outcomes.skipped).toBe(1);
    expect((await s.sm.getObject('thrice'))?.replicas).toHaveLength(3);
    expect((await s.workers.get('w3')!.store.stat('thrice')).ok).toBe(true);
  });

  it('does not record a repair copy made from a holder whose bytes are not the recorded ones', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'obj', ['w1', 'w2']);
    // w1 holds other bytes under the id, consistently indexed: a copy would pass the target's check.
    const other = randomBytes(2_000);
    const w1 = s.workers.get('w1')!;
    await w1.store.delete('obj');
    await s.client.putBlob(w1.url, 'obj', sha256Of(other), other.length, Readable.from([other]));
    await propose(s, { type: 'markNodeState', nodeId: 'w2', state: 'down', at: s.clock.now });
    // w1's copy reads back as other bytes, w2 is down and may hold the one copy left: unavailable.
    expect((await placementLoop(s).pass())?.outcomes).toMatchObject({ copied: 0, noSource: 1 });
    expect(await metric(s, 'imgvault_objects_unavailable')).toBe(1);
    expect(await metric(s, 'imgvault_objects_lost')).toBe(0);
    expect((await s.sm.getObject('obj'))?.replicas).toEqual(['w1', 'w2']);
    expect((await s.workers.get('w3')!.store.stat('obj')).ok).toBe(false);
  });

  it('asks a holder that sent other bytes for no further copy: the next targets get the other holder', async () => {
    const s = await setup([{ id: 'w2' }, { id: 'w3' }, { id: 'w4' }, { id: 'w5' }]);
    // w1 answers copy-batch as a worker that ignores the sha256 asked for: it sends other bytes.
    let asked = 0;
    const w1 = createServer((req, res) => {
      asked += 1;
      req.resume().on('end', () => {
        const result = {
          id: 'obj',
          ok: true,
          target: 'w',
          targetStatus: 201,
          size: 2_000,
          sha256: 'c'.repeat(64),
        };
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ results: [result] }));
      });
    });
    await new Promise<void>((resolve) => w1.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise((resolve) => w1.close(() => resolve())));
    const url = `http://127.0.0.1:${(w1.address() as AddressInfo).port}`;
    await propose(s, { type: 'registerWorker', nodeId: 'w1', url, zone: 'zone-w1', at: s.clock.now });
    hearAll(s, { w3: 100_000, w4: 200_000, w5: 300_000 });
    s.liveness.heard({
      nodeId: 'w1',
      diskUsed: 900_000,
      diskFree: 100_000,
      objectCount: 1,
      lastSeen: s.clock.now,
    });
    const bytes = randomBytes(2_000);
    await s.client.putBlob(s.workers.get('w2')!.url, 'obj', sha256Of(bytes), 2_000, Readable.from([bytes]));
    await propose(s, {
      type: 'recordObject',
      id: 'obj',
      size: 2_000,
      sha256: sha256Of(bytes),
      contentType: 'image/png',
      createdAt: s.clock.now - 60_000,
      replicas: ['w1', 'w2'],
    });
    // w4, the second target, refuses the copy: it holds other bytes under the id.
    const other = randomBytes(2_000);
    await s.client.putBlob(s.workers.get('w4')!.url, 'obj', sha256Of(other), 2_000, Readable.from([other]));
    await propose(s, { type: 'markNodeState', nodeId: 'w2', state: 'draining', at: s.clock.now });
    // w3 from w1 (other bytes), w4 from w2 (refused), then w5 from w2 again, not from w1.
    expect((await placementLoop(s).pass())?.outcomes).toMatchObject({ copied: 1, failed: 0 });
    expect(asked).toBe(1);
    expect((await s.sm.getObject('obj'))?.replicas).toContain('w5');
    const copy = await s.client.getBlob(s.workers.get('w5')!.url, 'obj');
    expect(sha256Of(Buffer.from(await copy.body.arrayBuffer()))).toBe(sha256Of(bytes));
  });

  it('does not delete a draining copy while a recorded copy that stays is rotten', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }, { id: 'w4' }]);
    hearAll(s);
    const bytes = await putObject(s, 'obj', ['w1', 'w2', 'w3']);
    await rot(s.workers.get('w2')!, 'obj');
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: s.clock.now });
    const loop = placementLoop(s);
    // w2's own read check cuts off its rotten copy and removes it, so a pass may first only learn
    // that; a few passes settle it.
    for (let i = 0; i < 6; i++) {
      const o = (await s.sm.getObject('obj'))!;
      if (!o.replicas.includes('w1') && o.replicas.length === 2) break;
      await loop.pass();
    }
    const replicas = (await s.sm.getObject('obj'))!.replicas;
    // w2 may hold a fresh copy again; what counts is that every recorded copy has the right bytes.
    expect(replicas).not.toContain('w1');
    expect(replicas).toHaveLength(2);
    for (const n of replicas) {
      const res = await s.client.getBlob(s.workers.get(n)!.url, 'obj');
      expect(sha256Of(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256Of(bytes));
    }
  });

  it('keeps a repair copy whose commit timed out, since the entry may still commit', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'obj', ['w1', 'w2']);
    await propose(s, { type: 'markNodeState', nodeId: 'w2', state: 'down', at: s.clock.now });
    // The replica change is appended but the answer is lost: it commits after the timeout.
    const late: string[] = [];
    const raft: RaftAccess = {
      ...s.raft,
      propose(data, requestId) {
        const c = decodeCommand(data);
        if (c.ok && c.command.type === 'replicaChanges') {
          late.push(data);
          return Promise.reject(new Error('Timeout: no answer in time'));
        }
        return s.raft.propose(data, requestId);
      },
    };
    const loop = placementLoop(s, { raft, concurrency: 1 });
    expect((await loop.pass())?.outcomes).toMatchObject({ copied: 0, failed: 1 });
    expect(late).toHaveLength(1);
    // The entry commits after all (the result goes to nobody: its caller gave up).
    await s.raft.propose(late[0]!, 'nobody-waits');
    const replicas = (await s.sm.getObject('obj'))!.replicas;
    expect(replicas).toContain('w3');
    expect((await s.workers.get('w3')!.store.stat('obj')).ok).toBe(true);
  });
});
