// A manager joins by snapshot file while records keep being committed: the install overlaps the
// writes (many rows sent in small pieces, and an install that ends only once the leader has
// committed more after the file than the log it may keep in memory), and still the joiner ends
// with the leader's tables, every acknowledged record is on it, and the leader's log in memory
// stays within its budget the whole time: the log kept after the file for the joiner is on disk.
// Past snapshotHoldBytes of it the hold is given up and the joiner needs another file. Real
// LevelDB in temp folders, real HTTP on 127.0.0.1, managers in this process.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { entriesSize } from '../../src/consensus/core/index.ts';
import type { MemoryStorage } from '../../src/consensus/core/memoryStorage.ts';
import { LogStoreInvariantError } from '../../src/consensus/logStoreRules.ts';
import { type Command, encodeCommand } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { eventLog } from '../helpers/eventLog.ts';
import { type ClusterSetup, closeAll, InProcessManager, memberUrls } from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd, sameTables } from './metadataFixture.ts';

const SECRET = 'join-under-writes-secret-0123456789';
/** The leader's log budget: small, so the writes during the install exceed what it may hold. */
const BUDGET = 16 * 1024;
/** A joiner's install outlasts more writes than this many budgets: four times the old hold's bound. */
const INSTALL_BUDGETS = 16;
const PRELOAD = 1_500;
/** What the leader's log in memory may reach meanwhile: half the writes an install outlasts. */
const MEMORY_BOUND = (INSTALL_BUDGETS / 2) * BUDGET;

let root: string | null = null;
const managers: InProcessManager<MetadataStateMachine>[] = [];

afterEach(async () => {
  await closeAll(managers.splice(0));
  if (root) await rm(root, { recursive: true, force: true });
  root = null;
});

/** Records proposed to the leader in small concurrent batches until stopped; counts what is acknowledged. */
class Writer {
  readonly acked: string[] = [];
  ackedBytes = 0;
  stopped = false;
  private done: Promise<void> = Promise.resolve();

  constructor(private readonly leader: () => InProcessManager<MetadataStateMachine>) {}

  start(): void {
    this.done = this.run();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    await this.done;
  }

  private async run(): Promise<void> {
    for (let n = 0; !this.stopped; n += 10) {
      const commands = Array.from({ length: 10 }, (_, i) => recordCmd(`w-${n + i}`, ['w1', 'w2'], n + i));
      const results = await Promise.allSettled(commands.map((c) => proposeCommand(this.leader().node, c)));
      results.forEach((r, i) => {
        if (r.status !== 'fulfilled') return;
        this.acked.push(commands[i]!.id);
        this.ackedBytes += encodeCommand(commands[i]!).length;
      });
    }
  }
}

/**
 * The cluster's set-up: small log budgets and snapshot pieces, synced tables, and m4's install of a
 * file held until `holdInstall` (given the file's index) resolves.
 */
function joinSetup(
  logger: Logger,
  holdBytes: number | undefined,
  opts: {
    metrics?: boolean;
    accept?: ClusterSetup<MetadataStateMachine>['accept'];
    holdInstall: (index: number) => Promise<void>;
  },
): ClusterSetup<MetadataStateMachine> {
  return {
    secret: SECRET,
    root: root!,
    ...(opts.metrics ? { metrics: true } : {}),
    ...(opts.accept ? { accept: opts.accept } : {}),
    // Small pieces of many rows: the file takes many round trips to arrive.
    snapshotPieceBytes: 16 * 1024,
    openStateMachine: async (dir) => {
      const sm = await MetadataStateMachine.open(join(dir, 'metadata'), undefined, { syncedWrites: true });
      if (dir.endsWith('m4')) {
        const restore = sm.restoreChunks.bind(sm);
        sm.restoreChunks = async (chunks, index) => {
          await opts.holdInstall(index);
          return restore(chunks, index);
        };
      }
      return sm;
    },
    node: {
      tickMs: 20,
      snapshotThreshold: 50,
      snapshotCatchUpEntries: 10,
      logBudgetBytes: BUDGET,
      ...(holdBytes === undefined ? {} : { snapshotHoldBytes: holdBytes }),
      membershipTimeoutMs: 300_000,
      logger,
    },
  };
}

async function logMemoryBytes(m: InProcessManager<MetadataStateMachine>): Promise<number> {
  const metric = m.metrics.getSingleMetric('imgvault_raft_log_memory_bytes');
  if (!metric) throw new Error('no imgvault_raft_log_memory_bytes gauge');
  return (await metric.get()).values[0]?.value ?? 0;
}

/**
 * Three founders loaded with PRELOAD records, then a fourth joining by file while a writer goes on;
 * `follow`: the writes go on until the joiner has followed them after its install, else they stop
 * once it is installed. Returns once every manager has the same tables.
 */
async function joinWhileWriting(holdBytes: number, follow: boolean) {
  const events = eventLog();
  root = await mkdtemp(join(tmpdir(), 'imgvault-join-writes-'));
  let writer: Writer | null = null;
  let bytesAtInstall = 0;
  const installs: number[] = [];
  const setup = joinSetup(events.logger, holdBytes, {
    metrics: true,
    // The install ends only once the leader has committed, after the file, several times what
    // its log in memory may hold: as a ten-million-row install outlasts minutes of writes.
    holdInstall: async (index) => {
      installs.push(index);
      // Only the first: a later file (the hold given up) installs at its own pace.
      if (installs.length > 1) return;
      const w = writer!;
      bytesAtInstall = w.ackedBytes;
      await until(
        'writes past the hold bound',
        () => w.stopped || w.ackedBytes - bytesAtInstall > INSTALL_BUDGETS * BUDGET,
        120_000,
      );
    },
  });
  const founders = await Promise.all(['m1', 'm2', 'm3'].map((id) => InProcessManager.listen(id, setup)));
  managers.push(...founders);
  const urls = memberUrls(founders);
  await Promise.all(founders.map((m) => m.start(urls, urls)));
  const leader = await until('a leader', () => founders.find((m) => m.node.isLeader()) ?? null, 30_000);
  const propose = (commands: Command[]) => Promise.all(commands.map((c) => proposeCommand(leader.node, c)));
  await propose([registerCmd('w1', 1000, 'zA'), registerCmd('w2', 1000, 'zB')]);
  for (let at = 0; at < PRELOAD; at += 100) {
    await propose(Array.from({ length: 100 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
  }
  await until('the leader compacted', () => leader.node.status().snapshotIndex > PRELOAD / 2);

  const w = new Writer(() => leader);
  writer = w;
  w.start();
  let maxHeld = 0;
  const sampling = setInterval(() => {
    logMemoryBytes(leader).then((b) => {
      maxHeld = Math.max(maxHeld, b);
    });
  }, 5);
  let adding: Promise<void> = Promise.resolve();
  try {
    const joiner = await InProcessManager.listen('m4', setup);
    managers.push(joiner);
    await joiner.start(null, urls);
    // Promotion waits for the install: the add is awaited once the joiner has it.
    adding = leader.node.addMember('m4', joiner.url);
    adding.catch(() => {});
    await until('the joiner installed', () => joiner.sm.appliedIndex() >= (installs[0] ?? Infinity), 180_000);
    // It goes on from the log the leader kept after the file, while the writes go on.
    const during = w.acked.length;
    if (follow) {
      await until(
        'the joiner follows the writes',
        () => w.acked.length > during + 50 && joiner.sm.appliedIndex() >= leader.node.status().commit - 100,
        120_000,
      );
    }
  } finally {
    await w.stop();
    clearInterval(sampling);
  }
  await adding;
  const joiner = managers.find((m) => m.id === 'm4')!;
  const target = leader.node.status().commit;
  await until('the joiner caught up', () => joiner.sm.appliedIndex() >= target, 120_000);
  await sameTables(managers);
  return { events, installs, maxHeld, w, bytesAtInstall, joiner };
}

/** 600 records proposed while the joiner's install is held: several log budgets of entry data. */
async function writeDuring(propose: (commands: Command[]) => Promise<void>): Promise<void> {
  for (let at = 0; at < 600; at += 50) {
    await propose(Array.from({ length: 50 }, (_, i) => recordCmd(`during-${at + i}`, ['w1', 'w2'], at + i)));
  }
}

/** The joiner's addition settled, it applied the leader's commit index, and every table agrees. */
async function caughtUp(
  joiner: InProcessManager<MetadataStateMachine>,
  leaderOf: () => Promise<InProcessManager<MetadataStateMachine>>,
  adding: Promise<unknown>,
): Promise<void> {
  await adding.catch(() => {});
  const target = (await leaderOf()).node.status().commit;
  await until('the joiner caught up', () => joiner.sm.appliedIndex() >= target, 120_000);
  await sameTables(managers);
}

/**
 * Three founders loaded with 500 records, then a fourth added whose install of the file waits for
 * `release()` and which hears no appends meanwhile: its match stays at the file's index, and the
 * leader holds the log after it for as long as `holdBytes` (the default when undefined) allows.
 */
async function joinWithInstallHeld(holdBytes: number | undefined) {
  const events = eventLog();
  root = await mkdtemp(join(tmpdir(), 'imgvault-join-restart-'));
  let released = false;
  let release = () => {};
  const held = new Promise<void>((resolve) => {
    release = () => {
      released = true;
      resolve();
    };
  });
  let installing = false;
  const setup = joinSetup(events.logger, holdBytes, {
    accept: (to, msg) => !(to === 'm4' && msg.type === 'MsgApp' && installing && !released),
    holdInstall: async () => {
      installing = true;
      await held;
    },
  });
  const founders = await Promise.all(['m1', 'm2', 'm3'].map((id) => InProcessManager.listen(id, setup)));
  managers.push(...founders);
  const urls = memberUrls(founders);
  await Promise.all(founders.map((m) => m.start(urls, urls)));
  const leaderOf = () =>
    until('a leader', () => founders.find((m) => m.running && m.node.isLeader()) ?? null, 30_000);
  const leader = await leaderOf();
  const propose = async (commands: Command[]) => {
    const l = await leaderOf();
    await Promise.all(commands.map((c) => proposeCommand(l.node, c)));
  };
  await propose([registerCmd('w1', 1000, 'zA'), registerCmd('w2', 1000, 'zB')]);
  for (let at = 0; at < 500; at += 100) {
    await propose(Array.from({ length: 100 }, (_, i) => recordCmd(`img-${at + i}`, ['w1', 'w2'], at + i)));
  }
  await until('the leader compacted', () => leader.node.status().snapshotIndex > 250);
  const joiner = await InProcessManager.listen('m4', setup);
  managers.push(joiner);
  await joiner.start(null, urls);
  const adding = leader.node.addMember('m4', joiner.url);
  adding.catch(() => {});
  await until('the install started', () => installing, 60_000);
  return { leader, joiner, urls, propose, leaderOf, release, adding };
}

describe('a manager joining by snapshot while records keep being committed', () => {
  it('catches up, loses nothing acknowledged, and the leader keeps its log in memory bounded', async () => {
    const { events, installs, maxHeld, w, bytesAtInstall, joiner } = await joinWhileWriting(
      4 * INSTALL_BUDGETS * BUDGET,
      true,
    );
    // The install overlapped writes larger than the hold bound, and nothing acknowledged is missing.
    expect(w.ackedBytes - bytesAtInstall).toBeGreaterThan(INSTALL_BUDGETS * BUDGET);
    for (const id of w.acked) expect(await joiner.sm.getObject(id), id).not.toBeNull();
    expect(await joiner.sm.getObject(`img-${PRELOAD - 1}`)).not.toBeNull();
    // One file: the leader kept the log after it for the joiner, on disk, for as long as it took.
    expect(installs).toHaveLength(1);
    expect(events.count('raft.snapshot_file_build_started')).toBe(1);
    expect(events.count('raft.snapshot_file_hold_released')).toBe(0);
    // Its log in memory stayed within a few budgets (a compaction is decided after the Ready that
    // crosses one, and the entries applied while it runs wait for the next: on a loaded machine
    // 4.5 budgets were seen), at most half of the log it kept on disk for the joiner.
    expect(maxHeld).toBeGreaterThan(0);
    expect(maxHeld).toBeLessThanOrEqual(MEMORY_BOUND);
  }, 400_000);

  it('needs another file once the log kept on disk passes snapshotHoldBytes, and still loses nothing', async () => {
    const { events, installs, maxHeld, w, joiner } = await joinWhileWriting(2 * BUDGET, false);
    expect(events.count('raft.snapshot_file_hold_released')).toBeGreaterThan(0);
    expect(installs.length).toBeGreaterThan(1);
    for (const id of w.acked) expect(await joiner.sm.getObject(id), id).not.toBeNull();
    expect(maxHeld).toBeLessThanOrEqual(MEMORY_BOUND);
  }, 400_000);

  it('has a leader restarted while it keeps the log on disk load it whole and go on', async () => {
    const { leader, joiner, urls, propose, leaderOf, release, adding } = await joinWithInstallHeld(
      4 * INSTALL_BUDGETS * BUDGET,
    );
    try {
      await writeDuring(propose);
      // The core reads the log from the file on, the memory holds only its budget's worth.
      const memory = (leader.node as unknown as { storage: MemoryStorage }).storage;
      expect(leader.node.status().firstIndex).toBeLessThan(memory.firstIndex() - 100);

      await leader.stop();
      await leader.start(urls, urls);
      expect(leader.node.status().firstIndex).toBe(leader.store.firstIndex());
      for (let at = 0; at < 200; at += 50) {
        await propose(
          Array.from({ length: 50 }, (_, i) => recordCmd(`after-${at + i}`, ['w1', 'w2'], at + i)),
        );
      }
    } finally {
      release();
    }
    await caughtUp(joiner, leaderOf, adding);
    for (const id of ['img-499', 'during-599', 'after-199'])
      expect(await joiner.sm.getObject(id), id).not.toBeNull();
  }, 400_000);

  it('has a leader that steps down during a hold free the log it kept on disk at its next compaction', async () => {
    const { leader, joiner, propose, leaderOf, release, adding } = await joinWithInstallHeld(
      4 * INSTALL_BUDGETS * BUDGET,
    );
    try {
      await writeDuring(propose);
      const memory = (leader.node as unknown as { storage: MemoryStorage }).storage;
      const kept = memory.firstIndex() - 1;
      expect(leader.store.firstIndex()).toBeLessThan(kept - 100);
      const next = managers.find((m) => m !== leader && m !== joiner)!;
      await leader.node.transferLeadership(next.id);
      // A follower tracks no member: its next compaction gives the hold up and truncates the store.
      for (let at = 0; at < 200; at += 50) {
        await propose(
          Array.from({ length: 50 }, (_, i) => recordCmd(`after-${at + i}`, ['w1', 'w2'], at + i)),
        );
      }
      await until('the old leader truncated its store', () => leader.store.firstIndex() > kept, 60_000);
      expect(leader.node.isLeader()).toBe(false);
    } finally {
      release();
    }
    await caughtUp(joiner, leaderOf, adding);
  }, 400_000);

  it('keeps by default no more log on disk than a restart may load next to the log in memory', async () => {
    const { leader, joiner, propose, leaderOf, release, adding } = await joinWithInstallHeld(undefined);
    try {
      await writeDuring(propose);
      // The default bound is three log budgets: the whole log a restart would load (what the store
      // keeps) stays within the four budgets the log in memory could hold before, plus the
      // overshoot of one compaction and its catch-up window.
      // Read between the store's writes: a compaction in flight has deleted rows its bounds still
      // name (the core never reads there: its floor moves before the write starts).
      const { store } = leader;
      const kept = await until('a read of the whole stored log', () => {
        try {
          return entriesSize(store.entriesSync(store.firstIndex(), store.lastIndex() + 1, Infinity));
        } catch (err) {
          if (err instanceof LogStoreInvariantError) return null;
          throw err;
        }
      });
      expect(kept).toBeLessThanOrEqual(5 * BUDGET);
    } finally {
      release();
    }
    await caughtUp(joiner, leaderOf, adding);
  }, 400_000);
});
