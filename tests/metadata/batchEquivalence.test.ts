// A commandBatch entry must leave the tables, and give each command the result, that the same
// commands in entries of their own would: random batchable commands whose ids, names, contents and
// nodes collide on purpose (an id recorded, deleted and recorded again within one entry, a name
// moved between contents, a node state changed against an expected one, heartbeats older than the
// last, replicaChanges nested in a batch), applied one entry each and again grouped in entries of
// random sizes, compared result by result and by the tables' digest.

import { isDeepStrictEqual } from 'node:util';
import { afterEach, expect, it } from 'vitest';
import { type Command, NODE_STATES, type ReplicaChange } from '../../src/metadata/commands.ts';
import { Prng } from '../sim/prng.ts';
import { EntryLog, MetadataFixture } from './metadataFixture.ts';

const fx = new MetadataFixture();
afterEach(() => fx.cleanup());

const SEEDS = Number(process.env.IMGVAULT_BATCH_SEEDS ?? 20);
const COMMANDS = 300;
const MAX_GROUP = 40;
const NODES = ['w1', 'w2', 'w3', 'w4'];
/** Few ids, two of them content ids (`c` and the sha256), so commands meet the same rows. */
const IDS = ['o1', 'o2', 'o3', `c${'1'.repeat(64)}`, `c${'2'.repeat(64)}`];
const SHAS = ['1', '2'].map((c) => c.repeat(64));
const BUCKETS = ['photos', 'raws'];
const KEYS = ['a', 'b/c'];

function otherNode(rng: Prng, not: string): string {
  const pick = rng.pick(NODES);
  return pick === not ? NODES[(NODES.indexOf(not) + 1) % NODES.length]! : pick;
}

function replicaChange(rng: Prng): ReplicaChange {
  const id = rng.pick(IDS);
  switch (rng.int(3)) {
    case 0:
      return { type: 'addReplica', id, nodeId: rng.pick(NODES) };
    case 1:
      return { type: 'removeReplica', id, nodeId: rng.pick(NODES) };
    default: {
      const add = rng.pick(NODES);
      return { type: 'replaceReplica', id, add, remove: otherNode(rng, add) };
    }
  }
}

function recordObject(rng: Prng, at: number): Command {
  const id = rng.pick(IDS);
  const sha256 = id.startsWith('c') ? id.slice(1) : rng.pick(SHAS);
  const a = rng.pick(NODES);
  const replicas = rng.chance(0.3) ? [a] : [a, otherNode(rng, a)];
  return {
    type: 'recordObject',
    id,
    size: 10 + SHAS.indexOf(sha256),
    sha256,
    contentType: 'image/png',
    createdAt: at,
    replicas,
  };
}

function randomCommand(rng: Prng, at: number): Command {
  switch (rng.int(12)) {
    case 0:
      return {
        type: 'registerWorker',
        nodeId: rng.pick(NODES),
        url: 'http://127.0.0.1:1/x',
        zone: rng.pick(['z1', 'z2']),
        at,
      };
    case 1: {
      const nodes = [...new Set([rng.pick(NODES), rng.pick(NODES)])];
      // lastSeen up to 2 behind the clock: some heartbeats are older than the one recorded.
      return {
        type: 'heartbeatSummary',
        nodes: nodes.map((nodeId) => ({
          nodeId,
          diskUsed: rng.int(100),
          diskFree: 5,
          objectCount: rng.int(9),
          lastSeen: at - rng.int(3),
        })),
      };
    }
    case 2:
    case 3:
      return recordObject(rng, at);
    case 4:
      return { type: 'deleteObject', id: rng.pick(IDS) };
    case 5:
      return replicaChange(rng);
    case 6:
      return {
        type: 'replicaChanges',
        changes: Array.from({ length: 1 + rng.int(4) }, () => replicaChange(rng)),
      };
    case 7:
      return {
        type: 'markNodeState',
        nodeId: rng.pick(NODES),
        state: rng.pick(NODE_STATES),
        at,
        ...(rng.chance(0.5) ? { expected: rng.pick(NODE_STATES) } : {}),
      };
    case 8:
    case 9:
      return {
        type: 'putName',
        bucket: rng.pick(BUCKETS),
        key: rng.pick(KEYS),
        sha256: rng.pick(SHAS),
        ...(rng.chance(0.7) ? { objectId: rng.pick(IDS) } : {}),
        mtime: at,
        at,
      };
    case 10:
      return { type: 'deleteName', bucket: rng.pick(BUCKETS), key: rng.pick(KEYS) };
    default:
      return { type: 'updateWorker', nodeId: rng.pick(NODES), zone: rng.pick(['z1', 'z2']) };
  }
}

interface Outcome {
  results: unknown[];
  digest: string;
}

async function oneEach(commands: Command[]): Promise<Outcome> {
  const sm = await fx.machine();
  const log = new EntryLog();
  const results: unknown[] = [];
  for (const c of commands) results.push((await sm.apply([log.command(c)]))[0]!.result);
  return { results, digest: (await sm.tableDigest()).sha256 };
}

async function grouped(commands: Command[], rng: Prng): Promise<Outcome> {
  const sm = await fx.machine();
  const log = new EntryLog();
  const results: unknown[] = [];
  for (let i = 0; i < commands.length; ) {
    const group = commands.slice(i, i + 1 + rng.int(MAX_GROUP));
    i += group.length;
    const [applied] = await sm.apply([log.command({ type: 'commandBatch', commands: group })]);
    const batch = applied!.result as { ok: boolean; results: unknown[] };
    expect(batch.results).toHaveLength(group.length);
    results.push(...batch.results);
  }
  return { results, digest: (await sm.tableDigest()).sha256 };
}

it(`grouped in random commandBatch entries, ${SEEDS} seeds of random colliding commands end as one entry each`, async () => {
  const seen = new Map<string, number>();
  for (let seed = 1; seed <= SEEDS; seed++) {
    const rng = new Prng(seed);
    const commands = Array.from({ length: COMMANDS }, (_, i) => randomCommand(rng, 1000 + i));
    const a = await oneEach(commands);
    const b = await grouped(commands, rng.fork(1));
    const firstDiff = a.results.findIndex((r, i) => !isDeepStrictEqual(r, b.results[i]));
    expect({ seed, firstDiff, command: commands[firstDiff] ?? null }).toEqual({
      seed,
      firstDiff: -1,
      command: null,
    });
    expect({ seed, digest: b.digest }).toEqual({ seed, digest: a.digest });
    for (const [i, c] of commands.entries()) {
      const r = a.results[i] as { ok: boolean; code?: string };
      const key = `${c.type}:${r.ok ? 'ok' : r.code}`;
      seen.set(key, (seen.get(key) ?? 0) + 1);
    }
    await fx.cleanup();
  }
  // The commands did meet the state both ways: each type both applied and, for most, refused.
  for (const type of [
    'recordObject',
    'deleteObject',
    'putName',
    'deleteName',
    'markNodeState',
    'addReplica',
    'replicaChanges',
  ]) {
    expect(seen.get(`${type}:ok`) ?? 0, type).toBeGreaterThan(0);
  }
  for (const code of [
    'recordObject:ObjectExists',
    'deleteObject:ObjectNotFound',
    'markNodeState:StateChanged',
  ]) {
    expect(seen.get(code) ?? 0, code).toBeGreaterThan(0);
  }
}, 120_000);
