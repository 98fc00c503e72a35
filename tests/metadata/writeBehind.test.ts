// MetadataStateMachine.apply returns once its batch is started, not written (MetadataTables.
// writeBehind): the proposer answers its client while the synced write runs. Whatever the client
// does next must see what it was answered, so every read called after apply returned sees the
// batch. Real LevelDB with synced writes in temp folders; a batch's write is held back by wrapping
// classic-level's own chained-batch write, which then runs unchanged.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { ClassicLevel } from 'classic-level';
import { type Logger, pino } from 'pino';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { CommandOf } from '../../src/metadata/commands.ts';
import { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import {
  agreedDigests,
  closeAll,
  type InProcessManager,
  runningLeader,
  type SoleManager,
  startCluster,
  startSoleManager,
  stopSoleManager,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { applyOne, EntryLog, MetadataFixture, recordCmd, registerCmd, SHA_A } from './metadataFixture.ts';

const fx = new MetadataFixture();
const folders: string[] = [];
const opened: MetadataStateMachine[] = [];
const managers: InProcessManager<MetadataStateMachine>[] = [];
const soles: SoleManager[] = [];
/** Releases of held writes: a test that fails while holding one must not hang the cleanup. */
const releases: (() => void)[] = [];

afterEach(async () => {
  for (const release of releases.splice(0)) release();
  vi.useRealTimers();
  vi.restoreAllMocks();
  await closeAll(managers.splice(0));
  for (const m of soles.splice(0)) await stopSoleManager(m);
  for (const sm of opened.splice(0)) await sm.close();
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
  await fx.cleanup();
});

async function openMachine(): Promise<MetadataStateMachine> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-'));
  folders.push(dir);
  const sm = await MetadataStateMachine.open(dir, undefined, { syncedWrites: true });
  opened.push(sm);
  return sm;
}

type BatchWrite = (this: unknown, options: { sync?: boolean }) => Promise<void>;

/** classic-level's chained-batch prototype, the one the apply batches are written through. */
async function chainedBatch(): Promise<{ _write: BatchWrite }> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-probe-'));
  folders.push(dir);
  const probe = new ClassicLevel<string, string>(dir);
  await probe.open();
  const proto = Object.getPrototypeOf(probe.batch()) as { _write: BatchWrite };
  await probe.close();
  return proto;
}

/** classic-level's array batch, the one the KV state machine writes through. */
function arrayBatch(): { _batch: (this: unknown, ops: unknown[], options: unknown) => Promise<void> } {
  return ClassicLevel.prototype as unknown as {
    _batch: (this: unknown, ops: unknown[], options: unknown) => Promise<void>;
  };
}

/** Holds every chained batch write from now on until `release()`; each then runs as it would have. */
async function holdWrites(): Promise<{ held: () => number; release: () => void }> {
  const proto = await chainedBatch();
  const write = proto._write;
  const gates: (() => void)[] = [];
  let holding = true;
  vi.spyOn(proto, '_write').mockImplementation(function (this: unknown, options) {
    if (!holding) return write.call(this, options);
    return new Promise<void>((resolve) => gates.push(resolve)).then(() => write.call(this, options));
  });
  const release = () => {
    holding = false;
    for (const open of gates.splice(0)) open();
  };
  releases.push(release);
  return { held: () => gates.length, release };
}

const turns = async (n: number): Promise<void> => {
  for (let i = 0; i < n; i++) await new Promise((r) => setImmediate(r));
};

/**
 * Whether `p` settles within a few turns of the event loop and then 300 ms: time for a synced
 * LevelDB write that does not wait for the held batch to end, even on a loaded machine.
 */
async function settles(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await turns(5);
  await new Promise((r) => setTimeout(r, 300));
  return settled;
}

describe('apply answers before its batch is written', () => {
  it('every read called after apply returned sees the batch, point reads and scans alike', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    await applyOne(sm, log, registerCmd('w2'));
    const gate = await holdWrites();
    await sm.apply([
      log.command(recordCmd('o1', ['w1', 'w2'])),
      log.command({ type: 'createBucket', bucket: 'photos', at: 3000 }),
    ]);
    expect(gate.held()).toBe(1);
    expect(sm.appliedIndex()).toBe(log.lastIndex);

    expect(await sm.getObject('o1')).toMatchObject({ id: 'o1', replicas: ['w1', 'w2'] });
    expect((await sm.getObjects(['o1', 'o2'])).map((o) => o?.id ?? null)).toEqual(['o1', null]);
    expect(await sm.bucketExists('photos')).toBe(true);
    const scans = Promise.all([
      sm.listObjects(),
      sm.objectsOnNode('w1'),
      sm.stats(),
      sm.listBuckets(),
      sm.syncApplied(),
      sm.tableDigest(),
    ]);
    await turns(5);
    gate.release();
    const [objects, onNode, stats, buckets, synced, digest] = await scans;
    expect(objects.items.map((o) => o.id)).toEqual(['o1']);
    expect(onNode.items).toEqual(['o1']);
    expect(stats).toMatchObject({ appliedIndex: log.lastIndex, objects: 1, bytes: 100 });
    expect(buckets.map((b) => b.bucket)).toEqual(['photos']);
    expect(synced).toBe(log.lastIndex);
    expect(digest.appliedIndex).toBe(log.lastIndex);
  });

  it('a prefix seek waits for the batch: a bucket made only by a name in it exists', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    const gate = await holdWrites();
    // No bucket row: only the seek over the names says the bucket exists.
    const named: CommandOf<'putName'> = {
      type: 'putName',
      bucket: 'albums',
      key: 'k1',
      sha256: SHA_A,
      objectId: 'o1',
      mtime: 1,
      at: 2,
    };
    expect(await applyOne(sm, log, named)).toMatchObject({ ok: true });
    expect(gate.held()).toBe(1);
    const exists = sm.bucketExists('albums');
    expect(await settles(exists)).toBe(false);
    gate.release();
    expect(await exists).toBe(true);
  });

  it('syncApplied waits for the batch being written, and claims no batch started after its call', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    const gate = await holdWrites();
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    const written = log.lastIndex;
    // The next apply waits for the held batch (writeBehind), its waiter registered first.
    const next = sm.apply([log.command(recordCmd('o2', ['w1']))]);
    await turns(5);
    const synced = sm.syncApplied();
    expect(await settles(synced)).toBe(false);
    gate.release();
    // The next batch starts as the held one lands, before syncApplied resumes: it is not covered.
    expect(await synced).toBe(written);
    await next;
    await sm.flush();
    expect(await sm.syncApplied()).toBe(log.lastIndex);
  });

  it('a delete answered before its write lands is gone for point reads', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    const gate = await holdWrites();
    expect(await applyOne(sm, log, { type: 'deleteObject', id: 'o1' })).toMatchObject({ ok: true });
    expect(gate.held()).toBe(1);
    expect(await sm.getObject('o1')).toBeNull();
    expect(await sm.getObjects(['o1'])).toEqual([null]);
    gate.release();
    expect((await sm.listObjects()).items).toEqual([]);
  });

  it('plans the next apply against the batch being written, and writes its own batch after it', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    const gate = await holdWrites();
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    const next = sm.apply([log.command({ type: 'deleteObject', id: 'o1' })]);
    await turns(5);
    // One batch at a time: the second waits for the first before it starts.
    expect(gate.held()).toBe(1);
    gate.release();
    expect((await next)[0]?.result).toMatchObject({ ok: true });
    await sm.flush();
    await fx.expectReplicasAgree(sm, log.entries);
  });

  it('a snapshot called while a batch is being written holds that batch at its index', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    const gate = await holdWrites();
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    const snapshot = sm.snapshot();
    await turns(2);
    gate.release();
    const restored = await fx.machine();
    await restored.restore(await snapshot, log.lastIndex);
    expect(await restored.getObject('o1')).toMatchObject({ id: 'o1' });
    expect(await restored.tableDigest()).toEqual(await sm.tableDigest());
  });

  it('a batch whose write failed fails every later read and apply, so the driver stops', async () => {
    const sm = await openMachine();
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    const proto = await chainedBatch();
    vi.spyOn(proto, '_write').mockRejectedValueOnce(new Error('disk gone'));
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    await expect(sm.flush()).rejects.toThrow('disk gone');
    await expect(sm.getObject('w1')).rejects.toThrow('disk gone');
    await expect(sm.listObjects()).rejects.toThrow('disk gone');
    await expect(sm.syncApplied()).rejects.toThrow('disk gone');
    await expect(applyOne(sm, log, recordCmd('o2', ['w1']))).rejects.toThrow('disk gone');
  });
});

/** The `event` of every line `log` writes, in order. */
function eventLog(): { log: Logger; events: string[] } {
  const events: string[] = [];
  const sink = new Writable({
    write(line: Buffer, _encoding, done) {
      events.push(String((JSON.parse(line.toString()) as { event?: string }).event));
      done();
    },
  });
  return { log: pino(sink), events };
}

describe('a batch whose write fails after its entries were answered', () => {
  it('logs the failure and stops the Raft driver at once, though no further entry comes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-fatal-'));
    folders.push(dir);
    const { log, events } = eventLog();
    const fatal: unknown[] = [];
    const m = await startSoleManager(dir, {
      openStateMachine: (d) => MetadataStateMachine.open(join(d, 'metadata'), log, { syncedWrites: true }),
      node: { onFatal: (err) => fatal.push(err) },
    });
    soles.push(m);
    await until('leadership', () => m.node.isLeader());
    await proposeCommand(m.node, registerCmd('w1'));
    await m.sm.flush();
    const proto = await chainedBatch();
    vi.spyOn(proto, '_write').mockRejectedValueOnce(new Error('disk gone'));
    // Answered before its batch is written; then nothing more is proposed.
    await proposeCommand(m.node, recordCmd('o1', ['w1']));
    await until('the driver stopped', () => fatal.length > 0, 30_000);
    expect(String(fatal[0])).toContain('disk gone');
    expect(events).toContain('metadata.write_failed');
    await expect(proposeCommand(m.node, recordCmd('o2', ['w1']))).rejects.toThrow(/stopped/);
  }, 60_000);

  it('leaves no clean-stop marker, so unsynced tables are rebuilt at the next open', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-unclean-'));
    folders.push(dir);
    const sm = await MetadataStateMachine.open(dir);
    const log = new EntryLog();
    await applyOne(sm, log, registerCmd('w1'));
    await sm.flush();
    const proto = await chainedBatch();
    vi.spyOn(proto, '_write').mockRejectedValueOnce(new Error('disk gone'));
    await applyOne(sm, log, recordCmd('o1', ['w1']));
    await expect(sm.flush()).rejects.toThrow('disk gone');
    await sm.close();
    vi.restoreAllMocks();
    const reopened = await MetadataStateMachine.open(dir);
    opened.push(reopened);
    expect(reopened.appliedIndex()).toBe(0);
    expect((await reopened.listNodes()).map((n) => n.nodeId)).toEqual([]);
  });
});

describe('managers whose tables are written behind their answers', () => {
  it('see every answered command at once on the leader, and after ReadIndex on a follower', async () => {
    const root = await mkdtemp(join(tmpdir(), 'imgvault-behind-cluster-'));
    folders.push(root);
    managers.push(
      ...(await startCluster(['m1', 'm2', 'm3'], {
        secret: 'write-behind-secret',
        root,
        openStateMachine: (dir) =>
          MetadataStateMachine.open(join(dir, 'metadata'), undefined, { syncedWrites: true }),
        // Compaction (syncApplied) and snapshot files run among the writes.
        node: { tickMs: 20, snapshotThreshold: 10, snapshotCatchUpEntries: 3 },
        snapshotPieceBytes: 64 * 1024,
        replies: true,
      })),
    );
    const leader = await runningLeader(managers);
    const followers = managers.filter((m) => m !== leader);
    await proposeCommand(leader.node, registerCmd('w1'));
    await proposeCommand(leader.node, registerCmd('w2'));
    const seenAfterAnswer = async (id: string): Promise<void> => {
      await proposeCommand(leader.node, recordCmd(id, ['w1', 'w2']));
      const listed = async () => (await leader.sm.listObjects({ limit: 1000 })).items.map((o) => o.id);
      expect(await leader.sm.getObject(id)).toMatchObject({ id });
      expect(await listed()).toContain(id);
      for (const f of followers) {
        await f.node.readIndex();
        expect(await f.sm.getObject(id)).toMatchObject({ id });
      }
      await proposeCommand(leader.node, { type: 'deleteObject', id });
      expect(await leader.sm.getObject(id)).toBeNull();
      expect(await listed()).not.toContain(id);
    };
    // One at a time (c=1, where the answer most often beats the write), then many at once.
    for (let i = 0; i < 15; i++) await seenAfterAnswer(`one-${i}`);
    await Promise.all(Array.from({ length: 30 }, (_, i) => seenAfterAnswer(`many-${i}`)));
    const digests = await agreedDigests(managers);
    expect(new Set(digests.map((d) => d.sha256)).size).toBe(1);
  }, 120_000);
});

const put = (index: number, key: string) => ({
  term: 1,
  index,
  type: 'normal' as const,
  data: JSON.stringify({ op: 'put', key, value: `v${index}`, requestId: `r${index}` }),
});

describe('the KV state machine (bench:raft, drills)', () => {
  it('answers from its map before the batch is started or written, and a clean stop keeps every answered put', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-kv-'));
    folders.push(dir);
    let kv = await KvStateMachine.open(dir);
    const proto = arrayBatch();
    const write = proto._batch;
    const gates: (() => void)[] = [];
    vi.spyOn(proto, '_batch').mockImplementation(function (this: unknown, ops, options) {
      return new Promise<void>((resolve) => gates.push(resolve)).then(() => write.call(this, ops, options));
    });
    expect(await kv.apply([put(1, 'a')])).toEqual([
      { index: 1, requestId: 'r1', result: { key: 'a', index: 1 } },
    ]);
    // The answers go out first: the batch starts in a later turn of the event loop.
    expect(gates.length).toBe(0);
    await until('the batch started', () => gates.length === 1);
    expect(kv.get('a')).toBe('v1');
    expect(kv.appliedIndex()).toBe(1);
    // The next batch waits for the one being written.
    const second = kv.apply([put(2, 'b')]);
    await turns(5);
    expect(gates.length).toBe(1);
    vi.restoreAllMocks();
    for (const open of gates.splice(0)) open();
    await second;
    await kv.close();
    kv = await KvStateMachine.open(dir);
    expect([kv.get('a'), kv.get('b'), kv.appliedIndex()]).toEqual(['v1', 'v2', 2]);
    await kv.close();
  });

  it('joins the applies of a short while into one batch holding the applied index they reach', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-kv-'));
    folders.push(dir);
    let kv = await KvStateMachine.open(dir);
    const batches: number[] = [];
    const proto = arrayBatch();
    const write = proto._batch;
    vi.spyOn(proto, '_batch').mockImplementation(function (this: unknown, ops, options) {
      batches.push(ops.length);
      return write.call(this, ops, options);
    });
    // The 20 ms wait held still, so however slow this machine the ten applies fall within it.
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    for (let i = 1; i <= 10; i++) {
      await kv.apply([put(i, `k${i}`)]);
      await turns(1);
    }
    // A snapshot taken before the rows reach LevelDB is the map's, exact at the applied index.
    const streamed: Buffer[] = [];
    for await (const chunk of kv.snapshotChunks()) streamed.push(Buffer.from(chunk));
    expect(JSON.parse(Buffer.concat(streamed).toString('utf8'))).toMatchObject({
      applied: 10,
      kv: { k10: 'v10' },
    });
    await kv.flush();
    vi.useRealTimers();
    // Ten puts and the applied index, in one LevelDB call.
    expect(batches).toEqual([11]);
    // What close() finds queued is written before the clean-stop marker.
    await kv.apply([put(11, 'k11')]);
    await kv.close();
    expect(batches).toEqual([11, 2]);
    vi.restoreAllMocks();
    kv = await KvStateMachine.open(dir);
    expect([kv.get('k1'), kv.get('k11'), kv.size(), kv.appliedIndex()]).toEqual(['v1', 'v11', 11, 11]);
    await kv.close();
  });

  it('reports a failed batch at once, and leaves no clean-stop marker, so the map is rebuilt', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-behind-kv-'));
    folders.push(dir);
    const { log, events } = eventLog();
    let kv = await KvStateMachine.open(dir, log);
    const failures: unknown[] = [];
    kv.onWriteFailure((err) => failures.push(err));
    await kv.apply([put(1, 'a')]);
    await kv.flush();
    vi.spyOn(arrayBatch(), '_batch').mockRejectedValueOnce(new Error('disk gone'));
    await kv.apply([put(2, 'b')]);
    await until('the failure reported', () => failures.length > 0);
    expect(String(failures[0])).toContain('disk gone');
    expect(events).toContain('kv.write_failed');
    await expect(kv.flush()).rejects.toThrow('disk gone');
    // LevelDB lacks 'b': a snapshot taken now is the map's, exact at the applied index.
    const streamed: Buffer[] = [];
    for await (const chunk of kv.snapshotChunks()) streamed.push(Buffer.from(chunk));
    expect(JSON.parse(Buffer.concat(streamed).toString('utf8'))).toEqual({
      applied: 2,
      kv: { a: 'v1', b: 'v2' },
    });
    await kv.close();
    vi.restoreAllMocks();
    kv = await KvStateMachine.open(dir);
    expect([kv.get('a'), kv.appliedIndex()]).toEqual([undefined, 0]);
    await kv.close();
  });
});
