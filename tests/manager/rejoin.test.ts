// Rejoin and the inventory sweep against real tables and real workers (placementFixture.ts): a
// returning worker's copies re-adopted or traded for their stand-ins, corrupt, missing and orphan
// copies, strays, and the guards that keep an upload's or a recorded copy from being deleted.

import { randomBytes } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { afterEach, describe, expect, it } from 'vitest';
import { CLUSTER_SECRET_HEADER } from '../../src/http/clusterAuth.ts';
import { workerRoutes } from '../../src/manager/http/workerRoutes.ts';
import type { RaftAccess } from '../../src/manager/imageService.ts';
import type { WorkerClient } from '../../src/manager/workerClient.ts';
import { type InventoryLine, WorkerRegistry } from '../../src/manager/workerRegistry.ts';
import { type Command, decodeCommand } from '../../src/metadata/commands.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { LOST_COPIES_PATH } from '../../src/protocol/workerPaths.ts';
import { recordObjects } from '../helpers/recordedObjects.ts';
import { makeDataDir, removeDir, SECRET, sha256Of } from '../storagenode/workerHarness.ts';
import {
  cleanup,
  hearAll,
  log,
  onCleanup,
  placementFor,
  placementLoop,
  propose,
  putObject,
  rot,
  setup,
} from './placementFixture.ts';

const reconcilerFor = placementFor;

/**
 * `client` with its `holds` counted: each lacking copy is confirmed gone with its worker before it
 * is dropped, so `most()` is how many drops were decided at once.
 */
function countingHolds(client: WorkerClient): { workers: WorkerClient; most: () => number } {
  let asking = 0;
  let most = 0;
  const workers = Object.create(client) as WorkerClient;
  workers.holds = async (url: string, id: string) => {
    most = Math.max(most, ++asking);
    try {
      return await client.holds(url, id);
    } finally {
      asking -= 1;
    }
  };
  return { workers, most: () => most };
}

afterEach(cleanup);

describe('RejoinReconciler', () => {
  it('finds exactly the recorded copies an inventory lacks, across pages of the node index', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const sha = 'a'.repeat(64);
    const ids = Array.from({ length: 2_300 }, (_, i) => `many-${i.toString().padStart(5, '0')}`);
    await recordObjects(s.raft, ids, {
      replicas: ['w1', 'w2'],
      createdAt: s.clock.now - 60_000,
      sha256: sha,
    });
    // The inventory lacks the first id, two at the border of the index's 1,000-id pages, and the last.
    const lacking = new Set([ids[0]!, ids[999]!, ids[1000]!, ids[2_299]!]);
    const inventory = ids.filter((id) => !lacking.has(id)).map((id) => ({ id, size: 10, sha256: sha }));
    const reconciler = reconcilerFor(s, { metrics: s.metrics, orphanGraceMs: 10_000 });
    const summary = await reconciler.inventories.reconcile('w1', () => inventory, s.clock.now);
    // w1 holds none of them really: only those its inventory lacked are asked about and dropped.
    expect(summary.missingDropped).toBe(4);
    expect(summary.kept).toBe(ids.length - 4);
    for (const id of lacking) expect((await s.sm.getObject(id))?.replicas).toEqual(['w2']);
    expect((await s.sm.getObject(ids[1]!))?.replicas).toEqual(['w1', 'w2']);
  }, 60_000);

  it('drops every copy a worker back with an empty disk lacks, many at once', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const ids = Array.from({ length: 200 }, (_, i) => `emptied-${i.toString().padStart(4, '0')}`);
    await recordObjects(s.raft, ids, {
      replicas: ['w1', 'w2'],
      createdAt: s.clock.now - 60_000,
      sha256: 'b'.repeat(64),
    });
    const { workers, most } = countingHolds(s.client);
    const reconciler = reconcilerFor(s, { workers, metrics: s.metrics, orphanGraceMs: 10_000 });
    const summary = await reconciler.inventories.reconcile('w1', () => [], s.clock.now);
    expect(summary.missingDropped).toBe(ids.length);
    for (const id of ids) expect((await s.sm.getObject(id))?.replicas).toEqual(['w2']);
    expect(most()).toBeGreaterThan(1);
  }, 60_000);

  it('keeps exactly two copies, drops corrupt and missing ones, and deletes orphans only after the grace', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    // replaced: w1's copy was repaired onto w3 while w1 was away.
    await putObject(s, 'replaced', ['w3', 'w2']);
    const replacedRecord = await s.sm.getObject('replaced');
    const replacedBytes = await s.client.getBlob(s.workers.get('w2')!.url, 'replaced');
    await s.client.putBlob(
      w1.url,
      'replaced',
      replacedRecord!.sha256,
      replacedRecord!.size,
      Readable.from([Buffer.from(await replacedBytes.body.arrayBuffer())]),
    );
    // short: one live copy, and w1 holds the bytes without the record saying so.
    const shortBytes = await putObject(s, 'short', ['w2']);
    await s.client.putBlob(
      w1.url,
      'short',
      sha256Of(shortBytes),
      shortBytes.length,
      Readable.from([shortBytes]),
    );
    // corrupt: w1 holds other bytes under a recorded id.
    await putObject(s, 'corrupt', ['w1', 'w2']);
    const other = randomBytes(2_000);
    await w1.store.delete('corrupt');
    await s.client.putBlob(w1.url, 'corrupt', sha256Of(other), other.length, Readable.from([other]));
    // missing: recorded on w1, not held there.
    await putObject(s, 'missing', ['w1', 'w2']);
    await w1.store.delete('missing');
    // orphan: no record at all.
    const orphan = randomBytes(100);
    await s.client.putBlob(w1.url, 'orphan', sha256Of(orphan), orphan.length, Readable.from([orphan]));

    const proposed = new Map<string, string[]>();
    const raft: RaftAccess = {
      ...s.raft,
      propose(data, requestId) {
        const c = decodeCommand(data);
        if (c.ok && 'id' in c.command)
          proposed.set(c.command.id, [...(proposed.get(c.command.id) ?? []), c.command.type]);
        return s.raft.propose(data, requestId);
      },
    };
    const reconciler = reconcilerFor(s, { metrics: s.metrics, orphanGraceMs: 10_000, raft });
    const inventory: InventoryLine[] = [];
    for await (const e of w1.store.inventory()) inventory.push({ id: e.id, size: e.size, sha256: e.sha256 });
    const summary = await reconciler.inventories.reconcile('w1', () => inventory, s.clock.now);
    // The returning copy takes the replacement's place in one entry; a short object just gets it back.
    expect(proposed.get('replaced')).toEqual(['replaceReplica']);
    expect(proposed.get('short')).toEqual(['addReplica']);
    expect(summary).toMatchObject({
      excessRemoved: 1,
      readopted: 1,
      corruptDeleted: 1,
      missingDropped: 1,
      orphanPending: 1,
    });

    const replaced = await s.sm.getObject('replaced');
    expect(replaced?.replicas).toHaveLength(2);
    expect(replaced?.replicas).toContain('w1');
    const removed = ['w2', 'w3'].find((n) => !replaced!.replicas.includes(n))!;
    expect((await s.workers.get(removed)!.store.stat('replaced')).ok).toBe(false);
    expect((await s.sm.getObject('short'))?.replicas.sort()).toEqual(['w1', 'w2']);
    expect((await s.sm.getObject('corrupt'))?.replicas).toEqual(['w2']);
    expect((await w1.store.stat('corrupt')).ok).toBe(false);
    expect((await s.sm.getObject('missing'))?.replicas).toEqual(['w2']);

    // The orphan survives until it has been known for the grace period.
    expect(await reconciler.inventories.sweepOrphans()).toBe(0);
    expect((await w1.store.stat('orphan')).ok).toBe(true);
    s.clock.now += 10_001;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(1);
    expect((await w1.store.stat('orphan')).ok).toBe(false);

    // And repair restores the copies dropped as corrupt or missing.
    hearAll(s);
    const report = await placementLoop(s).pass();
    expect(report?.outcomes.copied).toBe(2);
    for (const id of ['corrupt', 'missing']) expect((await s.sm.getObject(id))?.replicas).toHaveLength(2);
  });

  it('spares an orphan whose record committed during the grace period', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    const bytes = randomBytes(300);
    await s.client.putBlob(w1.url, 'late', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    const reconciler = reconcilerFor(s, { orphanGraceMs: 1_000 });
    await reconciler.inventories.reconcile(
      'w1',
      () => [{ id: 'late', size: 300, sha256: sha256Of(bytes) }],
      s.clock.now,
    );
    await propose(s, {
      type: 'recordObject',
      id: 'late',
      size: 300,
      sha256: sha256Of(bytes),
      contentType: 'image/png',
      createdAt: s.clock.now,
      replicas: ['w1'],
    });
    s.clock.now += 5_000;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(0);
    expect((await w1.store.stat('late')).ok).toBe(true);
  });
});

describe('RejoinReconciler periodic sweep', () => {
  it('deletes an unrecorded copy of a healthy object after the grace, and re-adopts one of a short object', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const w3 = s.workers.get('w3')!;
    // A repair copy made by a leader that died before recording it.
    const healthy = await putObject(s, 'healthy', ['w1', 'w2']);
    await s.client.putBlob(w3.url, 'healthy', sha256Of(healthy), healthy.length, Readable.from([healthy]));
    const short = await putObject(s, 'short', ['w1']);
    await s.client.putBlob(w3.url, 'short', sha256Of(short), short.length, Readable.from([short]));
    const reconciler = reconcilerFor(s, { orphanGraceMs: 2_000 });
    expect(await reconciler.sweepInventories()).toBe(2);
    expect(await reconciler.inventories.sweepOrphans()).toBe(0);
    expect((await w3.store.stat('healthy')).ok).toBe(true);
    s.clock.now += 2_001;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(1);
    expect((await w3.store.stat('healthy')).ok).toBe(false);
    expect((await s.sm.getObject('healthy'))?.replicas).toEqual(['w1', 'w2']);
    expect((await s.sm.getObject('short'))?.replicas).toEqual(['w1', 'w3']);
    expect((await w3.store.stat('short')).ok).toBe(true);
  });
});

describe('RejoinReconciler periodic sweep, a worker named like a sweep', () => {
  it('sweeps a worker whose id is the name of a sweep', async () => {
    const s = await setup([{ id: 'inventories' }, { id: 'w2' }]);
    hearAll(s);
    await putObject(s, 'x', ['inventories', 'w2']);
    await s.workers.get('inventories')!.store.delete('x');
    const loop = reconcilerFor(s, { inventorySweepMs: 1_000 });
    await loop.pass();
    s.clock.now += 2_000;
    await loop.pass();
    await until(async () => !(await s.sm.getObject('x'))?.replicas.includes('inventories'), 'x dropped');
  });
});

describe('RejoinReconciler periodic sweep, copies a worker lacks', () => {
  it('drops a recorded copy its worker no longer holds (a rejoin cut short never looked), and repair restores it', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    await putObject(s, 'kept', ['w1', 'w2']);
    const bytes = await putObject(s, 'lost', ['w1', 'w2']);
    // w2 joined empty (or lost the blob) and its rejoin reconciliation never ran to the end.
    await s.workers.get('w2')!.store.delete('lost');
    const reconciler = reconcilerFor(s, { orphanGraceMs: 60_000 });
    await reconciler.sweepInventories();
    expect((await s.sm.getObject('lost'))?.replicas).toEqual(['w1']);
    expect((await s.sm.getObject('kept'))?.replicas).toEqual(['w1', 'w2']);
    expect((await placementLoop(s).pass())?.outcomes.copied).toBe(1);
    const now = await s.sm.getObject('lost');
    expect(now?.replicas).toHaveLength(2);
    const copy = now!.replicas.find((n) => n !== 'w1')!;
    const res = await s.client.getBlob(s.workers.get(copy)!.url, 'lost');
    expect(sha256Of(Buffer.from(await res.body.arrayBuffer()))).toBe(sha256Of(bytes));
  });
});

describe('RejoinReconciler periodic sweep, a worker that lost every copy', () => {
  it('drops them all, many at once', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    // Recorded on w1, which never received the bytes: its inventory lacks every one.
    const ids = Array.from({ length: 600 }, (_, i) => `swept-${i.toString().padStart(4, '0')}`);
    await recordObjects(s.raft, ids, { replicas: ['w1', 'w2'], createdAt: s.clock.now - 60_000 });
    const { workers, most } = countingHolds(s.client);
    await reconcilerFor(s, { workers, orphanGraceMs: 60_000 }).sweepInventories();
    for (const id of ids) expect((await s.sm.getObject(id))?.replicas).toEqual(['w2']);
    expect(most()).toBeGreaterThan(1);
  }, 60_000);
});

describe('RejoinReconciler and an id uploaded again', () => {
  it('re-adopts no unrecorded copy of other bytes for a short object, and deletes it after the grace', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const w3 = s.workers.get('w3')!;
    // w3 kept a copy of an earlier object under this id; the id now names other bytes on w1 alone.
    const earlier = randomBytes(200);
    await s.client.putBlob(w3.url, 'again', sha256Of(earlier), earlier.length, Readable.from([earlier]));
    await putObject(s, 'again', ['w1']);
    const reconciler = reconcilerFor(s, { orphanGraceMs: 2_000 });
    expect(await reconciler.sweepInventories()).toBe(1);
    s.clock.now += 2_001;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(1);
    expect((await s.sm.getObject('again'))?.replicas).toEqual(['w1']);
    expect((await w3.store.stat('again')).ok).toBe(false);
  });
});

describe('rejoin data-loss guards', () => {
  it('on rejoin, does not trade a good replacement copy for a returning copy rotten on disk', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    const bytes = await putObject(s, 'replaced', ['w3', 'w2']);
    await s.client.putBlob(w1.url, 'replaced', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    await rot(w1, 'replaced');
    const reconciler = reconcilerFor(s, { orphanGraceMs: 10_000 });
    // The inventory carries the index's claim, which still names the right checksum.
    const inventory: InventoryLine[] = [];
    for await (const e of w1.store.inventory()) inventory.push({ id: e.id, size: e.size, sha256: e.sha256 });
    expect(inventory[0]?.sha256).toBe(sha256Of(bytes));
    const summary = await reconciler.inventories.reconcile('w1', () => inventory, s.clock.now);
    expect(summary.excessRemoved).toBe(0);
    expect((await s.sm.getObject('replaced'))?.replicas.sort()).toEqual(['w2', 'w3']);
    for (const n of ['w2', 'w3']) expect((await s.workers.get(n)!.store.stat('replaced')).ok).toBe(true);
  });

  it('never deletes the blob of an upload this manager is running, however long past the grace', async () => {
    const s = await setup([{ id: 'w1' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    const bytes = randomBytes(300);
    await s.client.putBlob(w1.url, 'slow', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    await s.client.putBlob(w1.url, 'stale', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    const reconciler = reconcilerFor(s, { orphanGraceMs: 1_000 });
    const line = (id: string) => ({ id, size: 300, sha256: sha256Of(bytes) });
    await reconciler.inventories.reconcile('w1', () => [line('slow'), line('stale')], s.clock.now);
    // An upload of `slow` (a client retrying) holds its slot until its record has an outcome.
    onCleanup(async () => release());
    const release = await s.slots.hold('slow');
    s.clock.now += 60_000;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(1);
    expect((await w1.store.stat('slow')).ok).toBe(true);
    expect((await w1.store.stat('stale')).ok).toBe(false);
  });

  it('re-reads the table as of everything committed before deleting an orphan', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    const bytes = randomBytes(300);
    await s.client.putBlob(w1.url, 'late', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    // A record committed (under another leader) that this member has not applied yet; a
    // linearizable read applies it before answering.
    const unapplied: Command[] = [
      {
        type: 'recordObject',
        id: 'late',
        size: 300,
        sha256: sha256Of(bytes),
        contentType: 'image/png',
        createdAt: s.clock.now,
        replicas: ['w1'],
      },
    ];
    const raft: RaftAccess = {
      ...s.raft,
      async readIndex() {
        for (const c of unapplied.splice(0)) await proposeCommand(s.raft, c);
      },
    };
    const reconciler = reconcilerFor(s, { raft, orphanGraceMs: 1_000 });
    await reconciler.inventories.reconcile(
      'w1',
      () => [{ id: 'late', size: 300, sha256: sha256Of(bytes) }],
      s.clock.now,
    );
    s.clock.now += 5_000;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(0);
    expect((await w1.store.stat('late')).ok).toBe(true);
  });
});

/** An HTTP server on 127.0.0.1 that holds every request unanswered until `answer()`. */
async function holdingServer() {
  const held: { method: string; res: ServerResponse }[] = [];
  let ended = 0;
  const server = createServer((req, res) => {
    req.resume();
    res.on('close', () => {
      ended += 1;
    });
    held.push({ method: req.method ?? '', res });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const answer = () => {
    for (const h of held.splice(0)) h.res.writeHead(204).end();
  };
  onCleanup(async () => {
    answer();
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
  });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { url, held, answer, ended: () => ended };
}

/** Waits (bounded) until `cond` holds. */
async function until(cond: () => boolean | Promise<boolean>, what: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('the orphan sweep beside repair', () => {
  it('keeps due sightings on a worker not serving for when it serves again', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    const bytes = randomBytes(100);
    await s.client.putBlob(w1.url, 'orphan', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    const reconciler = reconcilerFor(s, { orphanGraceMs: 1_000 });
    const line = { id: 'orphan', size: 100, sha256: sha256Of(bytes) };
    expect((await reconciler.inventories.reconcile('w1', () => [line], s.clock.now)).orphanPending).toBe(1);
    // w1 goes silent and is condemned: its delete would only wait for a timeout.
    s.clock.now += 60_000;
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    expect(await reconciler.inventories.sweepOrphans()).toBe(0);
    expect((await w1.store.stat('orphan')).ok).toBe(true);
    // Back and heard: the sighting was kept, and its grace long passed.
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'up', at: s.clock.now });
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(1);
    expect((await w1.store.stat('orphan')).ok).toBe(false);
  });

  it("repairs a down worker's objects while an orphan delete on another worker hangs", async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    const hanging = await holdingServer();
    await propose(s, {
      type: 'registerWorker',
      nodeId: 'w4',
      url: hanging.url,
      zone: 'zone-w4',
      at: s.clock.now,
    });
    hearAll(s);
    await putObject(s, 'x', ['w1', 'w2']);
    const reconciler = reconcilerFor(s, { orphanGraceMs: 1_000 });
    const line = { id: 'orphan', size: 100, sha256: 'b'.repeat(64) };
    expect((await reconciler.inventories.reconcile('w4', () => [line], s.clock.now)).orphanPending).toBe(1);
    s.clock.now += 5_000;
    hearAll(s);
    s.liveness.heard({
      nodeId: 'w4',
      diskUsed: 900_000,
      diskFree: 100_000,
      objectCount: 1,
      lastSeen: s.clock.now,
    });
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'down', at: s.clock.now });
    const report = await reconciler.pass();
    // The pass did not wait for the orphan's delete: it is still unanswered (or not sent yet).
    expect(hanging.ended()).toBe(0);
    expect(report?.outcomes.copied).toBe(1);
    expect((await s.sm.getObject('x'))?.replicas).not.toContain('w1');
    // The sweep beside it goes on: its delete arrives, and ends once answered.
    await until(() => hanging.held.some((h) => h.method === 'DELETE'), 'the orphan delete');
    hanging.answer();
    await until(() => hanging.ended() > 0, 'the delete answered');
  });
});

describe('inventories observed by the loop', () => {
  it('reconciles two queued inventories of one worker one after the other, and resolves both', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    const loop = reconcilerFor(s, { intervalMs: 60_000 });
    loop.start();
    onCleanup(() => loop.stop());
    const read: number[] = [];
    const source = (n: number) => () => {
      read.push(n);
      return [];
    };
    // Both queued before a pass runs: the second waits for the first, then is reconciled too.
    let resolved = 0;
    for (const n of [1, 2]) void loop.reconcile('w1', source(n), s.clock.now).then(() => resolved++);
    await until(() => resolved === 2, 'both inventories reconciled');
    expect(new Set(read)).toEqual(new Set([1, 2]));
  });
});

describe('copies a worker reports lost', () => {
  it('answers a report whose drop could not be decided with an error, so the worker reports it again', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }]);
    hearAll(s);
    await putObject(s, 'lost', ['w1', 'w2']);
    await s.workers.get('w1')!.store.delete('lost');
    // The drop's commit fails once (a timeout, a lost leadership), then goes through.
    let failing = true;
    const raft: RaftAccess = {
      ...s.raft,
      propose: (data, requestId) =>
        failing ? Promise.reject(new Error('commit timed out')) : s.raft.propose(data, requestId),
    };
    const spoolDir = await makeDataDir();
    onCleanup(() => removeDir(spoolDir));
    const registry = new WorkerRegistry({
      raft,
      metadata: s.sm,
      liveness: s.liveness,
      log,
      heartbeatIntervalMs: 1_000,
      summaryIntervalMs: 5_000,
      spoolDir,
      reconciler: reconcilerFor(s, { raft }),
    });
    const app = workerRoutes({ registry, secret: SECRET, heartbeatIntervalMs: 1_000 });
    const report = () =>
      app.request(`http://127.0.0.1${LOST_COPIES_PATH}`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', [CLUSTER_SECRET_HEADER]: SECRET },
        body: JSON.stringify({ id: 'w1', blobs: ['lost'] }),
      });
    expect((await report()).status).toBe(503);
    expect((await s.sm.getObject('lost'))?.replicas).toEqual(['w1', 'w2']);
    failing = false;
    const again = await report();
    expect(again.status).toBe(200);
    expect(await again.json()).toEqual({ dropped: 1 });
    expect((await s.sm.getObject('lost'))?.replicas).toEqual(['w2']);
  });
});

describe('rejoin, an excess copy re-adopted meanwhile', () => {
  it('keeps a returning copy the record lists again by the time of its delete', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const w1 = s.workers.get('w1')!;
    const bytes = await putObject(s, 'back', ['w2', 'w3']);
    await s.client.putBlob(w1.url, 'back', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    // w1 is draining: its unlisted copy is excess once the two recorded copies read back whole.
    await propose(s, { type: 'markNodeState', nodeId: 'w1', state: 'draining', at: s.clock.now });
    const record = (await s.sm.getObject('back'))!;
    // Committed elsewhere meanwhile (not applied here yet): the copy is listed again.
    const unapplied: Command[] = [
      {
        type: 'addReplica',
        id: 'back',
        nodeId: 'w1',
        expected: { sha256: record.sha256, createdAt: record.createdAt },
      },
    ];
    let readIndexes = 0;
    const raft: RaftAccess = {
      ...s.raft,
      async readIndex() {
        readIndexes += 1;
        for (const c of unapplied.splice(0)) expect((await proposeCommand(s.raft, c)).ok).toBe(true);
      },
    };
    const reconciler = reconcilerFor(s, { raft, orphanGraceMs: 10_000 });
    const summary = await reconciler.inventories.reconcile(
      'w1',
      () => [{ id: 'back', size: bytes.length, sha256: sha256Of(bytes) }],
      s.clock.now,
    );
    expect(readIndexes).toBeGreaterThan(0);
    expect(summary.excessRemoved).toBe(0);
    expect((await s.sm.getObject('back'))?.replicas).toContain('w1');
    expect((await w1.store.stat('back')).ok).toBe(true);
  });
});

describe('the orphan sweep, a stray re-adopted during its read-backs', () => {
  it('keeps a stray copy the record lists by the time of its delete', async () => {
    const s = await setup([{ id: 'w1' }, { id: 'w2' }, { id: 'w3' }]);
    hearAll(s);
    const w3 = s.workers.get('w3')!;
    const bytes = await putObject(s, 'held', ['w1', 'w2']);
    await s.client.putBlob(w3.url, 'held', sha256Of(bytes), bytes.length, Readable.from([bytes]));
    const record = (await s.sm.getObject('held'))!;
    // While the recorded copies are read back, the stray is recorded (another path re-adopted it).
    let readopted = false;
    const workers = Object.assign(Object.create(s.client) as WorkerClient, {
      async verifyBlob(url: string, id: string) {
        if (!readopted) {
          readopted = true;
          const expected = { sha256: record.sha256, createdAt: record.createdAt };
          await propose(s, { type: 'addReplica', id: 'held', nodeId: 'w3', expected });
        }
        return s.client.verifyBlob(url, id);
      },
    });
    const reconciler = reconcilerFor(s, { workers, orphanGraceMs: 1_000 });
    expect(await reconciler.sweepInventories()).toBe(1);
    s.clock.now += 2_000;
    hearAll(s);
    expect(await reconciler.inventories.sweepOrphans()).toBe(0);
    expect(readopted).toBe(true);
    expect((await s.sm.getObject('held'))?.replicas).toContain('w3');
    expect((await w3.store.stat('held')).ok).toBe(true);
  });
});
