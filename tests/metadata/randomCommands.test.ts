import { afterEach, describe, expect, it } from 'vitest';
import type { Entry } from '../../src/consensus/types.ts';
import {
  type Command,
  NODE_STATES,
  type ObjectView,
  type ReplicaChange,
} from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { Prng } from '../sim/prng.ts';
import { EntryLog, MetadataFixture } from './metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

const SEED = Number(process.env.IMGVAULT_METADATA_SEED ?? 20261126);
const COMMANDS = 3000;
const NODES = Array.from({ length: 8 }, (_, i) => `node-${i}`);
const IDS = Array.from({ length: 150 }, (_, i) => `obj-${i}`);
const SHAS = ['1', '2', '3'].map((c) => c.repeat(64));

/** Random commands, valid by schema, many of which do not fit the state they meet. */
function randomCommand(rng: Prng, clock: number): Command {
  const node = () => rng.pick(NODES);
  const id = () => rng.pick(IDS);
  const twoNodes = () => rng.shuffle([...NODES]).slice(0, rng.range(1, 3));
  const replicaChange = (): ReplicaChange => {
    switch (rng.int(3)) {
      case 0:
        return { type: 'addReplica', id: id(), nodeId: node() };
      case 1:
        return { type: 'removeReplica', id: id(), nodeId: node() };
      default: {
        const [add, remove] = rng.shuffle([...NODES]);
        return { type: 'replaceReplica', id: id(), add: add!, remove: remove! };
      }
    }
  };
  switch (rng.int(11)) {
    case 0:
      return {
        type: 'registerWorker',
        nodeId: node(),
        url: `http://127.0.0.1:${rng.range(1, 9)}`,
        zone: 'z',
        at: clock,
      };
    case 1:
      return { type: 'markNodeState', nodeId: node(), state: rng.pick(NODE_STATES), at: clock };
    case 2:
      return {
        type: 'heartbeatSummary',
        nodes: rng
          .shuffle([...NODES])
          .slice(0, rng.range(1, 4))
          .map((nodeId) => ({
            nodeId,
            diskUsed: rng.int(1e6),
            diskFree: rng.int(1e6),
            objectCount: rng.int(100),
            lastSeen: clock - rng.int(3),
          })),
      };
    case 3:
    case 4:
    case 5:
      return {
        type: 'recordObject',
        id: id(),
        size: rng.int(3) === 0 ? 1000 : rng.int(1 << 20),
        sha256: rng.pick(SHAS),
        contentType: 'image/jpeg',
        createdAt: clock,
        replicas: twoNodes(),
      };
    case 6:
      return { type: 'deleteObject', id: id() };
    case 7:
    case 8:
    case 9:
      return replicaChange();
    default: {
      // A few ids only, so changes of one entry often meet the same object and counter rows.
      const few = rng.shuffle([...IDS]).slice(0, 3);
      return {
        type: 'replicaChanges',
        changes: Array.from({ length: rng.range(1, 12) }, () => ({ ...replicaChange(), id: rng.pick(few) })),
      };
    }
  }
}

async function allObjects(sm: MetadataStateMachine): Promise<ObjectView[]> {
  const items: ObjectView[] = [];
  let after: string | undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await sm.listObjects({ limit: 64, after });
    items.push(...page.items);
    if (page.next === null) return items;
    after = page.next;
  }
  throw new Error('listObjects did not end');
}

async function allOnNode(sm: MetadataStateMachine, nodeId: string): Promise<string[]> {
  const ids: string[] = [];
  let after: string | undefined;
  for (let guard = 0; guard < 1000; guard++) {
    const page = await sm.objectsOnNode(nodeId, { limit: 64, after });
    ids.push(...page.items);
    if (page.next === null) return ids;
    after = page.next;
  }
  throw new Error('objectsOnNode did not end');
}

/** Recounts everything from the object table and checks the counters and the node index agree. */
async function expectConsistent(sm: MetadataStateMachine): Promise<void> {
  const objects = await allObjects(sm);
  const registered = new Set((await sm.listNodes()).map((n) => n.nodeId));
  const perNode: Record<string, { objects: number; bytes: number }> = {};
  const holdings = new Map<string, string[]>();
  let bytes = 0;
  for (const o of objects) {
    bytes += o.size;
    expect(o.replicas.length).toBeGreaterThan(0);
    expect(new Set(o.replicas).size).toBe(o.replicas.length);
    for (const n of o.replicas) {
      expect(registered.has(n)).toBe(true);
      const c = perNode[n] ?? { objects: 0, bytes: 0 };
      c.objects++;
      c.bytes += o.size;
      perNode[n] = c;
      holdings.set(n, [...(holdings.get(n) ?? []), o.id]);
    }
  }
  const stats = await sm.stats();
  expect({ objects: stats.objects, bytes: stats.bytes, nodes: stats.nodes }).toEqual({
    objects: objects.length,
    bytes,
    nodes: perNode,
  });
  for (const n of NODES) expect(await allOnNode(sm, n)).toEqual((holdings.get(n) ?? []).sort());
}

describe('random command sequences', () => {
  it(`keeps counters and the node index equal to a recount (seed ${SEED})`, async () => {
    const rng = new Prng(SEED);
    const log = new EntryLog();
    const dir = await fx.folder();
    let sm = await fx.machine(dir);
    const codes = new Map<string, number>();
    let clock = 1_000_000;
    const entries: Entry[] = [];
    while (log.lastIndex < COMMANDS) {
      // Batches of entries as a Ready would hand them out, with the leader's occasional empty entry.
      const batch: Entry[] = [];
      for (let n = rng.range(1, 12); n > 0; n--) {
        clock += rng.int(50);
        batch.push(rng.chance(0.02) ? log.empty() : log.command(randomCommand(rng, clock)));
      }
      entries.push(...batch);
      for (const { result } of await sm.apply(batch)) {
        const r = result as { ok: boolean; code?: string };
        const key = r.ok ? 'ok' : r.code!;
        codes.set(key, (codes.get(key) ?? 0) + 1);
      }
      if (log.lastIndex % 1000 < batch.length) {
        await expectConsistent(sm);
        // A restart in the middle: the recorded index and tables carry on from where they were.
        const digest = await sm.tableDigest();
        await fx.close(sm);
        sm = await fx.machine(dir);
        expect(await sm.tableDigest()).toEqual(digest);
      }
    }
    await expectConsistent(sm);
    // The sequence exercised both outcomes and most of the rejection codes, or it tested little.
    expect(codes.get('ok')).toBeGreaterThan(COMMANDS / 5);
    for (const code of [
      'ObjectExists',
      'ObjectNotFound',
      'NodeUnknown',
      'ReplicaExists',
      'ReplicaNotFound',
    ]) {
      expect(codes.get(code), code).toBeGreaterThan(0);
    }
    expect((await sm.stats()).objects).toBeGreaterThan(20);

    // Another replica fed the same log one entry at a time ends byte for byte identical, and so
    // does a third restored from the first one's snapshot.
    const restored = await fx.expectReplicasAgree(sm, entries);
    await expectConsistent(restored);
  });
});
