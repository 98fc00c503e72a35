// What a Raft snapshot's `data` holds, and how the driver turns a state machine into one and back.
//
// Two forms, told apart by their first line:
// - inline (the only one before streamed snapshots, still written for the bootstrap snapshot and by
//   a driver without a snapshot folder, as the simulator's): JSON of the member URL map, a newline,
//   then the state machine's whole `snapshot()` string;
// - file: the line `imgvault.snapshot-file/1`, then JSON of { members, file } where `file` names a
//   snapshot file (snapshotFiles.ts) by index, term, size and sha256. The core, the log store and
//   MsgSnap then carry a few hundred bytes whatever the state's size; the bytes travel apart
//   (transport/snapshotSender.ts) and are in the receiver's folder before its core sees the MsgSnap.
// - tables: the line `imgvault.snapshot-tables/1`, then JSON of the member map. Written when the log
//   is compacted without a file (maybeSnapshot in raftNode.ts): the state is this node's own state
//   machine, durable at an applied index at or above the snapshot's (StateMachine.syncApplied). It
//   restores nothing and is never sent: a leader that must send it builds a file first.
// The URLs travel with the snapshot because the conf-change entries that carried them may be
// compacted away; JSON.stringify never emits a raw newline, so the first one is the separator.

import { z } from 'zod';
import type { SnapshotFileRef, SnapshotFolder } from './snapshotFiles.ts';
import { type StateMachine, snapshotAsChunks } from './stateMachine.ts';
import type { Index, Message, NodeId, Term } from './types.ts';

const FILE_FORM = 'imgvault.snapshot-file/1';
const TABLES_FORM = 'imgvault.snapshot-tables/1';

export type SnapshotContent =
  | { members: Record<NodeId, string>; state: string; file: null }
  | { members: Record<NodeId, string>; state: null; file: SnapshotFileRef }
  /** The tables form: the state machine itself holds the state. */
  | { members: Record<NodeId, string>; state: null; file: null };

const descriptorSchema = z.object({
  members: z.record(z.string(), z.string()),
  file: z.object({
    index: z.number().int().nonnegative(),
    term: z.number().int().nonnegative(),
    size: z.number().int().nonnegative(),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  }),
});

export function wrapSnapshot(members: Map<NodeId, string>, state: string): string {
  return `${JSON.stringify(Object.fromEntries(members))}\n${state}`;
}

export function describeSnapshot(members: Map<NodeId, string>, file: SnapshotFileRef): string {
  return `${FILE_FORM}\n${JSON.stringify({ members: Object.fromEntries(members), file })}`;
}

/** The tables form: the data of a log compacted without a file. */
export function describeTablesSnapshot(members: Map<NodeId, string>): string {
  return `${TABLES_FORM}\n${JSON.stringify(Object.fromEntries(members))}`;
}

/** Whether `data` is the tables form (no state of its own: never sent, never restored). */
export function isTablesSnapshot(data: string): boolean {
  return data.startsWith(`${TABLES_FORM}\n`);
}

export function unwrapSnapshot(data: string): SnapshotContent {
  if (data === '') return { members: {}, state: '', file: null };
  const nl = data.indexOf('\n');
  if (nl < 0) throw new Error('raft snapshot data has no member map');
  if (data.slice(0, nl) === TABLES_FORM) {
    return { members: JSON.parse(data.slice(nl + 1)) as Record<NodeId, string>, state: null, file: null };
  }
  if (data.slice(0, nl) === FILE_FORM) {
    const parsed = descriptorSchema.safeParse(JSON.parse(data.slice(nl + 1)));
    if (!parsed.success) throw new Error('raft snapshot descriptor is malformed');
    return { ...parsed.data, state: null };
  }
  return {
    members: JSON.parse(data.slice(0, nl)) as Record<NodeId, string>,
    state: data.slice(nl + 1),
    file: null,
  };
}

/** The file a snapshot's data names, or null for the inline form (or a malformed descriptor). */
export function snapshotFileOf(data: string): SnapshotFileRef | null {
  if (!data.startsWith(`${FILE_FORM}\n`)) return null;
  try {
    return unwrapSnapshot(data).file;
  } catch {
    return null;
  }
}

/**
 * Why a MsgSnap must not reach the core yet, or null: its data names a file this node does not
 * hold. The core persists a snapshot it accepts before the driver installs it, so stepping one
 * whose bytes are missing would leave a durable snapshot nothing can restore.
 */
export function missingSnapshotFile(msg: Message, folder: SnapshotFolder | null): string | null {
  if (msg.type !== 'MsgSnap' || msg.snapshot === undefined) return null;
  if (isTablesSnapshot(msg.snapshot.data)) return 'snapshot names no file (the tables form)';
  const file = snapshotFileOf(msg.snapshot.data);
  if (file === null) {
    return msg.snapshot.data.startsWith(`${FILE_FORM}\n`) ? 'malformed snapshot descriptor' : null;
  }
  if (file.index !== msg.snapshot.metadata.index || file.term !== msg.snapshot.metadata.term) {
    return 'snapshot descriptor names another index or term';
  }
  return folder?.holds(file) ? null : 'snapshot file not received';
}

/**
 * Captures the state machine's state now (StateMachine.snapshot), and returns what finishes the
 * snapshot's data off the Ready loop: with a folder, a snapshot file written chunk by chunk and its
 * descriptor; without one, the inline form.
 */
export function captureSnapshot(
  sm: StateMachine,
  folder: SnapshotFolder | null,
  at: { index: Index; term: Term },
  members: Map<NodeId, string>,
): () => Promise<{ data: string; file: SnapshotFileRef | null }> {
  if (folder === null) {
    const state = sm.snapshot();
    return async () => ({ data: wrapSnapshot(members, await state), file: null });
  }
  // SnapshotFolder.write is done with a chunk (hashed and written) before it asks for the next.
  const chunks = sm.snapshotChunks?.({ transient: true }) ?? snapshotAsChunks(sm.snapshot());
  return async () => {
    const file = await folder.write(at.index, at.term, chunks);
    return { data: describeSnapshot(members, file), file };
  };
}

/** Replaces the state machine's state with the snapshot's at `index`; returns what the data held. */
export async function restoreSnapshot(
  sm: StateMachine,
  folder: SnapshotFolder | null,
  data: string,
  index: Index,
): Promise<SnapshotContent> {
  const content = unwrapSnapshot(data);
  if (content.file === null && content.state === null) {
    // Compacted only after syncApplied covered `index`: a state machine behind it lost writes.
    if (sm.appliedIndex() >= index) return content;
    throw new Error(
      `the log was compacted at ${index} without a snapshot file, but the state machine holds only up to ${sm.appliedIndex()}`,
    );
  }
  if (content.file === null) {
    await sm.restore(content.state ?? '', index);
    return content;
  }
  const { file } = content;
  if (file.index !== index) throw new Error(`snapshot ${index} names a file of index ${file.index}`);
  if (folder === null || !folder.holds(file)) {
    throw new Error(
      `snapshot ${index} is in a snapshot file (${file.size} bytes, sha256 ${file.sha256}) that ${folder === null ? 'no snapshot folder was given for' : `is not in ${folder.dir}`}`,
    );
  }
  if (sm.restoreChunks) {
    await sm.restoreChunks(folder.read(file), index);
  } else {
    const parts: Buffer[] = [];
    for await (const chunk of folder.read(file)) parts.push(chunk);
    await sm.restore(Buffer.concat(parts).toString('utf8'), index);
  }
  return content;
}
