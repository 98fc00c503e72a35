// Object records committed straight through a proposer, without bytes on any worker: a table at the
// size of pages and batches for the tests of the reconcilers that read it.

import { expect } from 'vitest';
import { type CommandProposer, proposeCommand } from '../../src/metadata/proposeCommand.ts';

export interface RecordedObject {
  replicas: string[];
  createdAt: number;
  size?: number;
  sha256?: string;
}

/** Records each of `ids` (10 bytes of sha256 'aaa…' unless told) on `replicas`, one command each, in order. */
export async function recordObjects(
  raft: CommandProposer,
  ids: readonly string[],
  record: RecordedObject,
): Promise<void> {
  for (const id of ids) {
    const result = await proposeCommand(raft, {
      type: 'recordObject',
      id,
      size: record.size ?? 10,
      sha256: record.sha256 ?? 'a'.repeat(64),
      contentType: 'image/png',
      createdAt: record.createdAt,
      replicas: record.replicas,
    });
    expect(result.ok).toBe(true);
  }
}
