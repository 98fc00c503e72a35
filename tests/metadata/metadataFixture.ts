// Shared by the metadata tests: state machines in temp folders, and a log of entries to feed them.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Entry } from '../../src/consensus/types.ts';
import { type Command, type CommandOf, encodeCommand } from '../../src/metadata/commands.ts';
import { MetadataStateMachine } from '../../src/metadata/metadataStateMachine.ts';
import { until } from '../helpers/until.ts';

/** Temp folders and open state machines, released by `cleanup()` (call it in afterEach). */
export class MetadataFixture {
  private readonly folders: string[] = [];
  private readonly open = new Set<MetadataStateMachine>();

  async folder(): Promise<string> {
    const dir = await mkdtemp(join(tmpdir(), 'imgvault-metadata-'));
    this.folders.push(dir);
    return dir;
  }

  async machine(dir?: string): Promise<MetadataStateMachine> {
    const sm = await MetadataStateMachine.open(dir ?? (await this.folder()));
    this.open.add(sm);
    return sm;
  }

  async close(sm: MetadataStateMachine): Promise<void> {
    this.open.delete(sm);
    await sm.close();
  }

  /**
   * What replication promises of `sm`: another machine fed `entries` one at a time, and a third
   * restored from `sm`'s snapshot, each end with tables byte for byte `sm`'s. Returns the restored one.
   */
  async expectReplicasAgree(sm: MetadataStateMachine, entries: Entry[]): Promise<MetadataStateMachine> {
    const other = await this.machine();
    for (const e of entries) await other.apply([e]);
    const digest = await sm.tableDigest();
    expect(await other.tableDigest()).toEqual(digest);
    const restored = await this.machine();
    await restored.restore(await sm.snapshot(), sm.appliedIndex());
    expect(await restored.tableDigest()).toEqual(digest);
    return restored;
  }

  async cleanup(): Promise<void> {
    for (const sm of this.open) await sm.close();
    this.open.clear();
    for (const dir of this.folders.splice(0)) await rm(dir, { recursive: true, force: true });
  }
}

/** Builds consecutive log entries, the way the Raft log would hand them out. */
export class EntryLog {
  readonly entries: Entry[] = [];

  constructor(private readonly term = 1) {}

  get lastIndex(): number {
    return this.entries.length;
  }

  command(command: Command): Entry {
    return this.push('normal', encodeCommand(command));
  }

  /** An entry whose data bypassed validation (a buggy or future proposer). */
  raw(data: string): Entry {
    return this.push('normal', data);
  }

  /** The leader's empty entry of Raft section 8. */
  empty(): Entry {
    return this.push('normal', '');
  }

  confChange(): Entry {
    return this.push('confChange', JSON.stringify({ type: 'addLearner', nodeId: 'm4' }));
  }

  private push(type: Entry['type'], data: string): Entry {
    const entry: Entry = { term: this.term, index: this.entries.length + 1, type, data };
    this.entries.push(entry);
    return entry;
  }
}

/** Applies one command as the next entry of `log` and returns its result. */
export async function applyOne(sm: MetadataStateMachine, log: EntryLog, command: Command): Promise<unknown> {
  const results = await sm.apply([log.command(command)]);
  if (results.length !== 1) throw new Error(`expected one result, got ${results.length}`);
  return results[0]!.result;
}

export const SHA_A = 'a'.repeat(64);
export const SHA_B = 'b'.repeat(64);

export function registerCmd(nodeId: string, at = 1000, zone = 'z1'): CommandOf<'registerWorker'> {
  return { type: 'registerWorker', nodeId, url: `http://127.0.0.1:9000/${nodeId}`, zone, at };
}

export function recordCmd(
  id: string,
  replicas: string[],
  size = 100,
  sha256 = SHA_A,
): CommandOf<'recordObject'> {
  return { type: 'recordObject', id, size, sha256, contentType: 'image/png', createdAt: 2000, replicas };
}

/** Every manager reaches the same applied index, and then their tables' digests agree. */
export async function sameTables(managers: readonly { sm: MetadataStateMachine }[]): Promise<void> {
  const digests = await until(
    'every manager at the same applied index',
    async () => {
      const all = await Promise.all(managers.map((m) => m.sm.tableDigest()));
      return all.every((d) => d.appliedIndex === all[0]!.appliedIndex) ? all : null;
    },
    60_000,
  );
  expect(new Set(digests.map((d) => d.sha256)).size).toBe(1);
}
