// How the leader's callers (upload pipeline, repair, failure detector, API) commit a metadata
// command and get its typed result back.

import { randomUUID } from 'node:crypto';
import { type Command, encodeCommand, type ResultOf } from './commands.ts';

/** The part of the Raft node driver (src/consensus/raftNode.ts) a proposer needs. */
export interface CommandProposer {
  /** Resolves with the state machine's result once the entry carrying `requestId` is applied. */
  propose(data: string, requestId: string): Promise<unknown>;
}

/**
 * Validates `command`, stamps it with a fresh request id (the driver matches the apply result to
 * the waiting caller by it) and proposes it. Resolves with the command's result, e.g.
 * `{ ok: false, code: 'ObjectExists' }` for a command that did not fit the state; rejects with the
 * driver's error (NotLeader, Timeout...) when it was not committed here. Throws on a command that
 * fails validation: callers validate untrusted input with `parseCommand` first.
 */
export async function proposeCommand<C extends Command>(
  node: CommandProposer,
  command: C,
): Promise<ResultOf<C['type']>> {
  const requestId = randomUUID();
  const data = encodeCommand({ ...command, requestId });
  // The state machine returns, for an entry decoded as a command of type C, a ResultOf<C>; an
  // InvalidCommand cannot come back because `encodeCommand` validated the same schema.
  return (await node.propose(data, requestId)) as ResultOf<C['type']>;
}
