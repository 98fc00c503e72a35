// A manager joining a cluster that compacts without files catches up by one snapshot file the
// leader builds on demand: it installs that file off its Ready loop (the log goes on arriving,
// the state machine waits for the install), and the leader keeps the log after the file until
// the joiner has reached it, so a file that took long to arrive is still followed by the log and
// not by another file. Real LevelDB in temp folders, real HTTP on 127.0.0.1, managers in this
// process.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { MemoryStorage } from '../../src/consensus/core/memoryStorage.ts';
import type { Message } from '../../src/consensus/types.ts';
import type { Command } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { eventLog } from '../helpers/eventLog.ts';
import { type ClusterSetup, closeAll, InProcessManager, memberUrls } from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd, sameTables } from './metadataFixture.ts';

const SECRET = 'snapshot-join-secret-0123456789abc';

let root: string | null = null;
const managers: InProcessManager<MetadataStateMachine>[] = [];

afterEach(async () => {
  await closeAll(managers.splice(0));
  if (root) await rm(root, { recursive: true, force: true });
  root = null;
});

/** A release the test holds until it opens it. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open = () => {};
  const wait = new Promise<void>((resolve) => {
    open = resolve;
  });
  return { wait, open };
}

/** Three founders with a compacted log (no file anywhere) and a fourth that listens, not started. */
async function compactedCluster(
  setup: Omit<ClusterSetup<MetadataStateMachine>, 'secret' | 'root'> & { name: string },
) {
  root = await mkdtemp(join(tmpdir(), `imgvault-${setup.name}-`));
  const full: ClusterSetup<MetadataStateMachine> = { ...setup, secret: SECRET, root };
  const founders = await Promise.all(['m1', 'm2', 'm3'].map((id) => InProcessManager.listen(id, full)));
  managers.push(...founders);
  const urls = memberUrls(founders);
  await Promise.all(founders.map((m) => m.start(urls, urls)));
  const leader = await until('a leader', () => founders.find((m) => m.node.isLeader()) ?? null, 30_000);
  const propose = (commands: Command[]) => Promise.all(commands.map((c) => proposeCommand(leader.node, c)));
  await propose([registerCmd('w1', 1000, 'zA'), registerCmd('w2', 1000, 'zB')]);
  for (let at = 0; at < 300; at += 50) {
    await propose(Array.from({ length: 50 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
  }
  await until('the leader compacted', () => leader.node.status().snapshotIndex > 150);
  const joiner = await InProcessManager.listen('m4', full);
  managers.push(joiner);
  return { leader, joiner, urls, propose };
}

describe('a joining manager installing a snapshot file', () => {
  it('goes on taking the log while it installs, and applies nothing after the snapshot before it is in', async () => {
    const install = gate();
    const installs: number[] = [];
    const { leader, joiner, urls, propose } = await compactedCluster({
      name: 'slow-install',
      // The joiner's install waits for the test: as one of millions of rows would take minutes.
      openStateMachine: async (dir) => {
        const sm = await MetadataStateMachine.open(join(dir, 'metadata'), undefined, {
          syncedWrites: true,
        });
        if (dir.endsWith('m4')) {
          const restore = sm.restoreChunks.bind(sm);
          sm.restoreChunks = async (chunks, index) => {
            installs.push(index);
            await install.wait;
            return restore(chunks, index);
          };
        }
        return sm;
      },
      node: { tickMs: 20, snapshotThreshold: 50, snapshotCatchUpEntries: 10 },
      snapshotPieceBytes: 64 * 1024,
    });
    await joiner.start(null, urls);
    const adding = leader.node.addMember('m4', joiner.url);
    await until('the install started', () => installs.length > 0, 60_000);
    const snapshotAt = installs[0]!;

    // Entries keep coming while the install is held: the joiner's log takes them, and its commit
    // index follows the leader's, but its state machine stays where it was.
    for (let at = 300; at < 400; at += 20) {
      await propose(Array.from({ length: 20 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
    }
    const leaderLast = leader.node.status().lastIndex;
    await until('the joiner holds the log the leader appended', () => {
      const st = joiner.node.status();
      return st.lastIndex >= leaderLast && st.commit >= leaderLast;
    });
    expect(joiner.node.status().snapshotIndex).toBe(snapshotAt);
    expect(joiner.sm.appliedIndex()).toBeLessThan(snapshotAt);
    expect(await joiner.sm.getObject('img-0')).toBeNull();

    install.open();
    await adding;
    await until('the joiner applied the leader commit', () => joiner.sm.appliedIndex() >= leaderLast, 60_000);
    expect(installs).toEqual([snapshotAt]);
    expect(await joiner.sm.getObject('img-399')).not.toBeNull();
    await sameTables(managers);
  }, 300_000);
});

describe('a snapshot file that takes long to reach the joiner', () => {
  it('is followed by the log the leader kept after it, not by another file', async () => {
    const events = eventLog();
    // The joiner's MsgSnap is lost (answered as delivered) while the test holds it back: a
    // transfer of gigabytes takes minutes, during which the leader goes on writing and compacting.
    let holdSnapshot = true;
    const { leader, joiner, urls, propose } = await compactedCluster({
      name: 'slow-transfer',
      openStateMachine: (dir) =>
        MetadataStateMachine.open(join(dir, 'metadata'), undefined, { syncedWrites: true }),
      accept: (to: string, msg: Message) => !(to === 'm4' && msg.type === 'MsgSnap' && holdSnapshot),
      node: {
        tickMs: 20,
        snapshotThreshold: 50,
        snapshotCatchUpEntries: 10,
        logger: events.logger,
      },
      snapshotPieceBytes: 64 * 1024,
    });
    await joiner.start(null, urls);
    const adding = leader.node.addMember('m4', joiner.url);
    await until('the file built', () => events.count('raft.snapshot_taken') > 0, 60_000);
    const fileAt = leader.node.status().snapshotIndex;

    // Far more entries than the compaction threshold and the catch-up window after the file.
    for (let at = 300; at < 600; at += 50) {
      await propose(Array.from({ length: 50 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
    }
    expect(leader.node.status().applied).toBeGreaterThan(fileAt + 200);
    // The log after the file is still there for the joiner.
    expect(leader.node.status().firstIndex).toBeLessThanOrEqual(fileAt + 1);

    holdSnapshot = false;
    await adding;
    const target = leader.node.status().commit;
    await until('the joiner caught up', () => joiner.sm.appliedIndex() >= target, 60_000);
    expect(joiner.node.status().snapshotIndex).toBe(fileAt);
    expect(events.count('raft.snapshot_file_build_started')).toBe(1);
    expect(events.count('raft.snapshot_installed')).toBe(1);

    // Once the joiner has it, the leader compacts past the file again.
    await propose(Array.from({ length: 100 }, (_, i) => recordCmd(`late-${i}`, ['w1', 'w2'], i)));
    await until('the leader compacted past the file', () => leader.node.status().snapshotIndex > fileAt);
    await sameTables(managers);
  }, 300_000);
});

describe('a joiner whose appends after the file lag while writes go on', () => {
  it('goes on from the log the leader kept, not from a second file', async () => {
    const events = eventLog();
    // The MsgSnap is held back as above; once it is through, the joiner's appends are held back
    // too (a long log to stream after the file) while the leader writes more than its compaction
    // threshold: its match is the file's index, not past the point a compaction would cut at.
    let holdSnapshot = true;
    let holdAppends = false;
    let snapshotDelivered = false;
    const { leader, joiner, urls, propose } = await compactedCluster({
      name: 'lagging-appends',
      openStateMachine: (dir) =>
        MetadataStateMachine.open(join(dir, 'metadata'), undefined, { syncedWrites: true }),
      accept: (to: string, msg: Message) => {
        if (to !== 'm4') return true;
        if (msg.type === 'MsgSnap') {
          if (!holdSnapshot && !snapshotDelivered) {
            snapshotDelivered = true;
            holdAppends = true;
          }
          return !holdSnapshot;
        }
        return !(msg.type === 'MsgApp' && holdAppends);
      },
      node: { tickMs: 20, snapshotThreshold: 50, snapshotCatchUpEntries: 10, logger: events.logger },
      snapshotPieceBytes: 64 * 1024,
    });
    await joiner.start(null, urls);
    const adding = leader.node.addMember('m4', joiner.url);
    adding.catch(() => {});
    await until('the file built', () => events.count('raft.snapshot_taken') > 0, 60_000);
    const fileAt = leader.node.status().snapshotIndex;
    for (let at = 300; at < 600; at += 50) {
      await propose(Array.from({ length: 50 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
    }
    expect(leader.node.status().firstIndex).toBeLessThanOrEqual(fileAt + 1);

    holdSnapshot = false;
    await until(
      'the joiner acknowledged the file',
      () => (leader.node.status().progress?.m4?.match ?? 0) >= fileAt,
      60_000,
    );
    // The entries the leader's driver (not its core, which sends them) reads from the log in
    // memory kept for the joiner: none at each Ready (the compaction's conf change check once
    // scanned it whole, quadratic in the log kept).
    const storage = (leader.node as unknown as { storage: MemoryStorage }).storage;
    const entries = storage.entries.bind(storage);
    let readBehind = 0;
    storage.entries = (lo, hi, maxSize) => {
      const got = entries(lo, hi, maxSize);
      if (lo <= fileAt + 1 && !new Error().stack?.includes('RaftLog.')) readBehind += got.length;
      return got;
    };
    for (let at = 600; at < 700; at += 10) {
      await propose(Array.from({ length: 10 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
    }
    // The joiner has nothing after the file yet: the log after it must still be there.
    expect(leader.node.status().firstIndex).toBeLessThanOrEqual(fileAt + 1);
    storage.entries = entries;
    expect(readBehind).toBe(0);
    holdAppends = false;
    await adding;
    const target = leader.node.status().commit;
    await until('the joiner caught up', () => joiner.sm.appliedIndex() >= target, 120_000);
    expect(events.count('raft.snapshot_file_build_started')).toBe(1);
    expect(events.count('raft.snapshot_installed')).toBe(1);
    expect(events.count('raft.snapshot_file_hold_released')).toBe(0);
    await sameTables(managers);
  }, 300_000);
});

describe('a voter installing a snapshot file', () => {
  it('can be elected: a leadership transfer to it succeeds, and reads on it wait for the install', async () => {
    const install = gate();
    let installing = false;
    // m3 hears nothing while the others write and compact: it comes back needing a file.
    let cut = true;
    const { leader, joiner, propose } = await compactedCluster({
      name: 'installing-leader',
      accept: (to: string) => !(to === 'm3' && cut),
      openStateMachine: async (dir) => {
        const sm = await MetadataStateMachine.open(join(dir, 'metadata'), undefined, { syncedWrites: true });
        if (dir.endsWith('m3')) {
          const restore = sm.restoreChunks.bind(sm);
          sm.restoreChunks = async (chunks, index) => {
            installing = true;
            await install.wait;
            return restore(chunks, index);
          };
        }
        return sm;
      },
      node: { tickMs: 20, snapshotThreshold: 50, snapshotCatchUpEntries: 10 },
      snapshotPieceBytes: 64 * 1024,
    });
    // No joiner here: the member installing is a founder.
    await closeAll(managers.splice(managers.indexOf(joiner), 1));
    const m3 = managers.find((m) => m.node.id === 'm3')!;
    cut = false;
    await until('the install started', () => installing, 60_000);
    await propose([recordCmd('during-install', ['w1', 'w2'], 1)]);
    await until('m3 holds the log', () => m3.node.status().lastIndex >= leader.node.status().lastIndex);

    // A graceful handover (or the most up-to-date voter after a crash) picks it: it must lead.
    await leader.node.transferLeadership('m3');
    await until('m3 leads', () => m3.node.isLeader(), 30_000);
    expect(m3.sm.appliedIndex()).toBeLessThan(m3.node.status().snapshotIndex);
    let read = false;
    const reading = m3.node.readIndex().then(() => {
      read = true;
    });
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(read).toBe(false);

    install.open();
    await reading;
    expect(await m3.sm.getObject('during-install')).not.toBeNull();
    await proposeCommand(m3.node, recordCmd('after-install', ['w1', 'w2'], 2));
    await sameTables(managers);
  }, 300_000);
});
