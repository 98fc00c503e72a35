// Section 3 of the durability work: a manager's table batches are not fsynced, and LevelDB skips a
// torn record of its own log and replays the ones after it, so a power cut can leave the tables
// with a later batch but not an earlier one, under an applied index that claims both. The test
// makes exactly that damage to a real manager's tables (real LevelDB log, tables and driver), and
// shows that after an unclean stop the manager rebuilds them from its Raft snapshot and log and
// ends with the same tables as before the loss; after a clean stop it keeps them as they are.

import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { afterEach, describe, expect, it } from 'vitest';
import type { Command } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { proposeCommand } from '../../src/metadata/proposeCommand.ts';
import { MetadataTables, type TableDigest } from '../../src/metadata/tables.ts';
import {
  CLEAN_STOP_MARKER,
  openMetadata,
  type SoleManager,
  startSoleManager,
  stopSoleManager,
} from '../helpers/raftManagers.ts';
import { until } from '../helpers/until.ts';
import { recordCmd, registerCmd } from '../metadata/metadataFixture.ts';

let root: string | null = null;
let running: SoleManager | null = null;

afterEach(async () => {
  if (running) await stop(running);
  running = null;
  if (root) await rm(root, { recursive: true, force: true });
  root = null;
});

async function start(dir: string): Promise<SoleManager> {
  running = await startSoleManager(dir, { openStateMachine: openMetadata, node: { snapshotThreshold: 4 } });
  return running;
}

async function stop(m: SoleManager): Promise<void> {
  await stopSoleManager(m);
  running = null;
}

const history: Command[] = [
  registerCmd('w1', 1000, 'zA'),
  registerCmd('w2', 1000, 'zB'),
  registerCmd('w3', 1000, 'zA'),
  recordCmd('a.png', ['w1', 'w2'], 100),
  recordCmd('b.png', ['w2', 'w3'], 200),
  recordCmd('c.png', ['w3', 'w1'], 300),
  recordCmd('d.png', ['w1', 'w3'], 400),
];

/** Runs the history on a fresh manager, stops it cleanly, and returns its tables' digest. */
async function buildManager(dir: string): Promise<TableDigest> {
  const m = await start(dir);
  await until('leadership', () => m.node.isLeader());
  for (const command of history) await proposeCommand(m.node, command);
  const digest = await m.sm.tableDigest();
  await stop(m);
  return digest;
}

/** The power cut: the batch that recorded a.png is lost, every later one and the applied index kept. */
async function tearTables(tablesDir: string): Promise<void> {
  const db = new ClassicLevel<string, string>(tablesDir, { keyEncoding: 'utf8', valueEncoding: 'utf8' });
  await db.open();
  const lost: string[] = [];
  for await (const key of db.keys()) if (/\/(o\/a\.png|x\/w[12]\/a\.png)$/.test(key)) lost.push(key);
  expect(lost).toHaveLength(3);
  await db.batch(lost.map((key) => ({ type: 'del' as const, key })));
  await db.close();
}

async function digestOf(tablesDir: string): Promise<TableDigest> {
  const tables = await MetadataTables.open(tablesDir);
  try {
    return await tables.digest();
  } finally {
    await tables.close();
  }
}

describe('a manager whose tables were torn by a power cut', () => {
  it('rebuilds them from the Raft snapshot and log after an unclean stop, and serves the committed state', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-torn-'));
    const tablesDir = join(root, 'metadata');
    const before = await buildManager(root);

    // A power cut leaves no clean-stop marker, and a torn LevelDB log drops an earlier batch.
    await rm(join(tablesDir, CLEAN_STOP_MARKER));
    await tearTables(tablesDir);
    const torn = await digestOf(tablesDir);
    expect(torn.appliedIndex).toBe(before.appliedIndex);
    expect(torn.sha256).not.toBe(before.sha256);

    const m = await start(root);
    await until('the log re-applied', () => m.sm.appliedIndex() >= before.appliedIndex);
    const healed = await m.sm.tableDigest();
    expect(healed.sha256).toBe(before.sha256);
    expect(await m.sm.getObject('a.png')).not.toBeNull();
  });

  it('keeps the tables of a clean stop as they are (only an unclean stop triggers the rebuild)', async () => {
    root = await mkdtemp(join(tmpdir(), 'imgvault-torn-'));
    const tablesDir = join(root, 'metadata');
    const before = await buildManager(root);
    expect((await stat(join(tablesDir, CLEAN_STOP_MARKER))).isFile()).toBe(true);

    const sm = await MetadataStateMachine.open(tablesDir);
    expect(sm.appliedIndex()).toBe(before.appliedIndex);
    expect((await sm.tableDigest()).sha256).toBe(before.sha256);
    // Opening consumed the marker: a crash from here on is an unclean stop.
    await expect(stat(join(tablesDir, CLEAN_STOP_MARKER))).rejects.toThrow();
    await sm.close();
  });
});
