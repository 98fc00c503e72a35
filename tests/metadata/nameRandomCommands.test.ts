// Random sequences of the name, bucket and S3 key commands (with object records and deletes among
// them): the reference counts, the content index, the name counters and the bucket rules must equal
// a recount after every batch, and replicas fed the same log (or a snapshot) must be identical.

import { afterEach, describe, expect, it } from 'vitest';
import type { Entry } from '../../src/consensus/types.ts';
import type { Command } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { Prng } from '../sim/prng.ts';
import { EntryLog, MetadataFixture } from './metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

const SEED = Number(process.env.IMGVAULT_METADATA_SEED ?? 20261206);
const COMMANDS = 2500;
const BUCKETS = ['photos', 'raw-files', 'b.c'];
const KEYS = ['a.jpg', 'b/c.png', 'b/d.png', 'b/e/f.heic', 'z'];
const SHAS = ['1', '2', '3', '4'].map((c) => c.repeat(64));
/** Content ids and a couple of plain ids: names may point at either. */
const IDS = [...SHAS.map((s) => `c${s}`), 'plain-1', 'plain-2'];
const ACCESS_KEYS = ['AKIAAAAAAAAAAAAAAAAA', 'AKIABBBBBBBBBBBBBBBB'];
const SECRETS = ['s'.repeat(40), 't'.repeat(40)];

function randomCommand(rng: Prng, clock: number): Command {
  switch (rng.int(10)) {
    case 0: {
      const id = rng.pick(IDS);
      const sha256 = id.startsWith('c') ? id.slice(1) : rng.pick(SHAS);
      return {
        type: 'recordObject',
        id,
        size: 100 + SHAS.indexOf(sha256),
        sha256,
        contentType: 'image/png',
        createdAt: clock,
        replicas: ['w1', 'w2'],
      };
    }
    case 1:
      return { type: 'deleteObject', id: rng.pick(IDS) };
    case 2:
    case 3:
    case 4: {
      const withObject = rng.chance(0.7);
      return {
        type: 'putName',
        bucket: rng.pick(BUCKETS),
        key: rng.pick(KEYS),
        sha256: rng.pick(SHAS),
        ...(withObject ? { objectId: rng.pick(IDS) } : {}),
        mtime: clock - 5,
        at: clock,
        ...(rng.chance(0.5) ? { etag: 'f'.repeat(32) } : {}),
      };
    }
    case 5:
      return { type: 'deleteName', bucket: rng.pick(BUCKETS), key: rng.pick(KEYS) };
    case 6:
      return { type: 'createBucket', bucket: rng.pick(BUCKETS), at: clock };
    case 7:
      return { type: 'deleteBucket', bucket: rng.pick(BUCKETS) };
    case 8:
      return {
        type: 'putS3Key',
        accessKeyId: rng.pick(ACCESS_KEYS),
        secretAccessKey: rng.pick(SECRETS),
        at: clock,
      };
    default:
      return { type: 'deleteS3Key', accessKeyId: rng.pick(ACCESS_KEYS) };
  }
}

/** Recounts references from the names and checks every derived table and counter against it. */
async function expectConsistent(sm: MetadataStateMachine): Promise<void> {
  const refs = new Map<string, number>();
  let names = 0;
  let nameBytes = 0;
  const buckets = new Set<string>();
  for (const bucket of BUCKETS) {
    const page = await sm.listNames(bucket, { limit: 1000 });
    expect(page.next).toBeNull();
    if (page.names.length > 0) buckets.add(bucket);
    for (const n of page.names) {
      names++;
      nameBytes += n.size;
      const object = await sm.getObject(n.objectId);
      // A name never points at a missing object, nor at one holding other bytes.
      expect(object?.sha256).toBe(n.sha256);
      refs.set(n.objectId, (refs.get(n.objectId) ?? 0) + 1);
      // The content index names exactly one object per named sha256.
      expect(await sm.contentObject(n.sha256)).toBe(n.objectId);
    }
    if (await sm.bucketExists(bucket)) buckets.add(bucket);
    else expect(page.names).toEqual([]);
  }
  let contentBytes = 0;
  for (const id of refs.keys()) contentBytes += (await sm.getObject(id))!.size;
  const stats = await sm.nameStats();
  expect(stats.names).toEqual({ objects: names, bytes: nameBytes });
  expect(stats.content).toEqual({ objects: refs.size, bytes: contentBytes });
  expect((await sm.listBuckets()).map((b) => b.bucket)).toEqual([...buckets].sort());
  // Unnamed content is exactly the content ids no name refers to.
  const unnamed = await sm.unnamedContent({ createdBefore: Number.MAX_SAFE_INTEGER });
  const expected: string[] = [];
  for (const id of IDS) {
    if (id.startsWith('c') && !refs.has(id) && (await sm.getObject(id)) !== null) expected.push(id);
  }
  expect(unnamed.items.map((o) => o.id)).toEqual(expected.sort());
}

describe('random name, bucket and S3 key commands', () => {
  it(`keep references, content index, counters and buckets equal to a recount (seed ${SEED})`, async () => {
    const rng = new Prng(SEED);
    const log = new EntryLog();
    const sm = await fx.machine();
    await sm.apply(
      ['w1', 'w2'].map((nodeId) =>
        log.command({
          type: 'registerWorker',
          nodeId,
          url: `http://127.0.0.1:9/${nodeId}`,
          zone: 'z',
          at: 1,
        }),
      ),
    );
    const codes = new Map<string, number>();
    let clock = 1_000_000;
    while (log.lastIndex < COMMANDS) {
      const batch: Entry[] = [];
      for (let n = rng.range(1, 8); n > 0; n--) {
        clock += rng.int(50);
        batch.push(log.command(randomCommand(rng, clock)));
      }
      for (const { result } of await sm.apply(batch)) {
        const r = result as { ok: boolean; code?: string };
        codes.set(r.ok ? 'ok' : r.code!, (codes.get(r.ok ? 'ok' : r.code!) ?? 0) + 1);
      }
      if (log.lastIndex % 250 < batch.length) await expectConsistent(sm);
    }
    await expectConsistent(sm);
    for (const code of [
      'ok',
      'ObjectReferenced',
      'ContentNotFound',
      'NameNotFound',
      'BucketNotEmpty',
      'BucketNotFound',
      'KeyExists',
      'KeyNotFound',
    ]) {
      expect(codes.get(code), code).toBeGreaterThan(0);
    }

    const restored = await fx.expectReplicasAgree(sm, log.entries);
    await expectConsistent(restored);
    expect(await restored.listS3Keys()).toEqual(await sm.listS3Keys());
  });
});
