// The metadata state machine under the real Raft driver: three in-process managers, each with its
// own LevelDB log and tables in a temp folder, talking over real HTTP on 127.0.0.1. The tables
// must end byte for byte identical on every manager, including one that was down while the log
// was compacted past it and catches up from a snapshot.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { Command } from '../../src/metadata/commands.ts';
import type { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { MetadataTables } from '../../src/metadata/tables.ts';
import {
  closeAll,
  type InProcessManager,
  memberUrls,
  openMetadata,
  startCluster,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from './metadataFixture.ts';

const SNAPSHOT_THRESHOLD = 25;

type Manager = InProcessManager<MetadataStateMachine>;

let root: string;
let managers: Manager[] = [];

/** Starts a stopped manager again, as a founder of the same cluster. */
const restart = (m: Manager) => m.start(memberUrls(managers));

const running = () => managers.filter((m) => m.running);

function leader(): Promise<Manager> {
  return until('a leader', () => running().find((m) => m.node.isLeader()) ?? null);
}

/** Proposes on the current leader, retrying once the leadership settles if it moved meanwhile. */
async function propose(command: Command): Promise<unknown> {
  for (let attempt = 0; attempt < 5; attempt++) {
    const m = await leader();
    try {
      return await proposeCommand(m.node, command);
    } catch (err) {
      if (attempt === 4) throw err;
    }
  }
  throw new Error('unreachable');
}

/** Waits until every running manager has applied everything and returns their digests. */
async function settledDigests(): Promise<string[]> {
  return until('every manager at the same applied index', async () => {
    const ms = running();
    const digests = await Promise.all(ms.map((m) => m.sm.tableDigest()));
    const target = Math.max(...ms.map((m) => m.node.status().commit));
    return digests.every((d) => d.appliedIndex >= target && d.appliedIndex === digests[0]!.appliedIndex)
      ? digests.map((d) => d.sha256)
      : null;
  });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'imgvault-metadata-raft-'));
  managers = await startCluster(['m1', 'm2', 'm3'], {
    secret: 'metadata-test-secret-0123456789',
    root,
    openStateMachine: openMetadata,
    node: { tickMs: 20, snapshotThreshold: SNAPSHOT_THRESHOLD },
  });
});

afterAll(async () => {
  await closeAll(managers);
  await rm(root, { recursive: true, force: true });
});

describe('metadata tables replicated by Raft', () => {
  it('every manager holds identical tables, and the proposer gets typed results', async () => {
    for (const w of ['w1', 'w2', 'w3']) {
      expect(await propose(registerCmd(w))).toMatchObject({ ok: true, created: true });
    }
    for (let i = 0; i < 10; i++) {
      expect(await propose(recordCmd(`img-${i}`, ['w1', i % 2 ? 'w2' : 'w3'], 10 + i))).toMatchObject({
        ok: true,
        created: true,
      });
    }
    expect(await propose(recordCmd('img-0', ['w1', 'w2'], 10, 'f'.repeat(64)))).toMatchObject({
      ok: false,
      code: 'ObjectExists',
    });
    const digests = await settledDigests();
    expect(new Set(digests).size).toBe(1);
    for (const m of running()) expect((await m.sm.stats()).objects).toBe(10);
  });

  it('a manager that was down while the log was compacted catches up to identical tables', async () => {
    const follower = running().find((m) => !m.node.isLeader())!;
    const stoppedAt = follower.sm.appliedIndex();
    await follower.stop();
    // Enough entries for the leader to snapshot and compact past what the follower holds.
    for (let i = 0; i < SNAPSHOT_THRESHOLD + 10; i++) {
      await propose(
        i % 3 === 2 ? { type: 'deleteObject', id: `img-${i % 10}` } : recordCmd(`more-${i}`, ['w2', 'w3'], i),
      );
    }
    await propose({ type: 'replaceReplica', id: 'more-0', add: 'w1', remove: 'w3' });
    await propose({ type: 'markNodeState', nodeId: 'w3', state: 'down', at: 99_000 });
    const compacted = await until('the leader compacted its log', async () => {
      const s = (await leader()).node.status();
      return s.snapshotIndex > SNAPSHOT_THRESHOLD ? s.snapshotIndex : null;
    });
    // The entries after `stoppedAt` are gone from the leader's log: only a snapshot can catch up.
    expect(compacted).toBeGreaterThan(stoppedAt + 1);

    await restart(follower);
    const digests = await settledDigests();
    expect(running()).toHaveLength(3);
    expect(new Set(digests).size).toBe(1);
    expect(await follower.sm.getObject('more-0')).toMatchObject({ replicas: ['w2', 'w1'] });
    expect((await follower.sm.getNode('w3'))?.state).toBe('down');
  });
  it('builds a slow snapshot off the Raft loop: no election, and the snapshot holds its own index', async () => {
    // Each snapshot takes 800 ms more to serialise after its state was captured: inside the loop
    // that stopped heartbeats for 40 ticks, far past the election timeout.
    const original = MetadataTables.prototype.snapshot;
    const slow = vi.spyOn(MetadataTables.prototype, 'snapshot').mockImplementation(function (
      this: MetadataTables,
    ) {
      const captured = original.call(this);
      return new Promise((resolve) => setTimeout(resolve, 800)).then(() => captured);
    });
    try {
      const before = await leader();
      const term = before.node.status().term;
      const snapshotBefore = before.node.status().snapshotIndex;
      const follower = running().find((m) => m !== before)!;
      await follower.stop();
      // Proposals go on while the snapshots are being serialised.
      for (let i = 0; i < 2 * SNAPSHOT_THRESHOLD; i++) await propose(recordCmd(`slow-${i}`, ['w1', 'w2'], i));
      await until('the leader compacted its log again', async () =>
        before.node.status().snapshotIndex > snapshotBefore ? true : null,
      );
      expect(slow).toHaveBeenCalled();
      expect(before.node.isLeader()).toBe(true);
      expect(before.node.status().term).toBe(term);
      // The follower catches up from a snapshot built while later entries were applied.
      await restart(follower);
      const digests = await settledDigests();
      expect(new Set(digests).size).toBe(1);
      expect(before.node.status().term).toBe(term);
    } finally {
      slow.mockRestore();
    }
  });
});
