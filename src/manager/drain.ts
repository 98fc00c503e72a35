// Draining a worker: an operator marks it `draining`; from then on placement never picks it, the
// repair loop moves every object it holds to other workers (using it as a copy source while it
// serves) and marks it `drained` once its node index is empty (placement/repair.ts, finishDrains).
// A drain started by mistake is taken back with `undrain`: the node is `up` again, so the repair
// loop no longer counts it as leaving and placement may pick it; copies already moved off stay moved.
// A drained worker being retired is then removed: its row leaves the node table and its id is
// remembered, so it never registers again (removeWorker in metadata/applyCommand.ts).

import { NODE_ID_PATTERN, type NodeState, type NodeView } from '../metadata/commands.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import { ImageError, type RaftAccess, raftFailure } from './imageService.ts';

export class DrainError extends Error {
  constructor(
    readonly code:
      | 'InvalidId'
      | 'NodeUnknown'
      | 'NodeDown'
      | 'NotDraining'
      | 'StateChanged'
      | 'NodeNotDrained'
      | 'NodeHoldsCopies',
    message: string,
  ) {
    super(message);
    this.name = 'DrainError';
  }
}

export interface DrainStatus {
  nodeId: string;
  state: NodeState;
  /** Objects the tables still place on the node. */
  objectsLeft: number;
}

async function countObjects(metadata: MetadataStateMachine, nodeId: string): Promise<number> {
  const stats = await metadata.stats();
  return stats.nodes[nodeId]?.objects ?? 0;
}

export async function drainStatus(
  metadata: MetadataStateMachine,
  nodeId: string,
): Promise<DrainStatus | null> {
  const node = await metadata.getNode(nodeId);
  if (!node) return null;
  return { nodeId, state: node.state, objectsLeft: await countObjects(metadata, nodeId) };
}

/** The leader's answer, or the error a follower or a leaderless manager gives instead. */
function requireLeader(raft: RaftAccess): void {
  if (raft.isLeader()) return;
  const leader = raft.leaderInfo();
  if (leader?.url) throw new ImageError('NotLeader', 'this manager is not the leader', leader.url);
  throw new ImageError('NoLeader', 'no leader is known right now; retry shortly');
}

/** The registered node `nodeId` names, read on the leader: what a drain or an undrain starts from. */
async function nodeToChange(
  raft: RaftAccess,
  metadata: MetadataStateMachine,
  nodeId: string,
): Promise<NodeView> {
  if (!NODE_ID_PATTERN.test(nodeId)) throw new DrainError('InvalidId', `invalid node id ${nodeId}`);
  requireLeader(raft);
  const node = await metadata.getNode(nodeId);
  if (!node) throw new DrainError('NodeUnknown', `node ${nodeId} is not registered`);
  return node;
}

const leaving = (state: NodeState) => state === 'draining' || state === 'drained';

/** Commits `state` only if the node is still `expected` then (another change may have landed since it was read). */
async function markState(
  raft: RaftAccess,
  nodeId: string,
  state: NodeState,
  expected: NodeState,
): Promise<void> {
  const result = await proposeCommand(raft, {
    type: 'markNodeState',
    nodeId,
    state,
    expected,
    at: Date.now(),
  });
  if (!result.ok) throw new DrainError(result.code, result.message);
}

/** Commits `draining` (idempotent; a drained node stays drained). Leader only. */
export async function startDrain(
  raft: RaftAccess,
  metadata: MetadataStateMachine,
  nodeId: string,
): Promise<DrainStatus> {
  const node = await nodeToChange(raft, metadata, nodeId);
  if (node.state === 'down') {
    // Its copies are already being repaired elsewhere; draining needs a worker that can serve.
    throw new DrainError('NodeDown', `node ${nodeId} is down; its objects are repaired without a drain`);
  }
  if (!leaving(node.state)) await markState(raft, nodeId, 'draining', node.state);
  return (await drainStatus(metadata, nodeId)) as DrainStatus;
}

/**
 * Takes a drain back: commits `up` for a `draining` or `drained` node. Leader only. Any other
 * state is refused (NotDraining): `up` would be a no-op, and turning a down node up is the
 * failure detector's and the worker's own registration's business, not an operator's.
 */
export async function undrain(
  raft: RaftAccess,
  metadata: MetadataStateMachine,
  nodeId: string,
): Promise<DrainStatus> {
  const node = await nodeToChange(raft, metadata, nodeId);
  if (!leaving(node.state)) {
    throw new DrainError('NotDraining', `node ${nodeId} is ${node.state}, not draining or drained`);
  }
  await markState(raft, nodeId, 'up', node.state);
  return (await drainStatus(metadata, nodeId)) as DrainStatus;
}

export interface RemovalStatus {
  nodeId: string;
  /** Proposer time of the removal. */
  removedAt: number;
  /** The id was removed before this request (a retry whose first answer was lost finds it so). */
  alreadyRemoved: boolean;
}

/**
 * Removes a drained worker that holds no copy from the node table, for good. Leader only. The
 * checks here give the operator a clear answer; the state machine checks the same at apply
 * (NodeNotDrained, NodeHoldsCopies), where no upload or undrain can land in between.
 */
export async function removeWorker(
  raft: RaftAccess,
  metadata: MetadataStateMachine,
  nodeId: string,
): Promise<RemovalStatus> {
  if (!NODE_ID_PATTERN.test(nodeId)) throw new DrainError('InvalidId', `invalid node id ${nodeId}`);
  requireLeader(raft);
  // Every committed entry applied: a drain that just finished must not read as still draining.
  await raft.readIndex().catch(raftFailure);
  const removed = await metadata.getRemovedNode(nodeId);
  if (removed) return { nodeId, removedAt: removed.removedAt, alreadyRemoved: true };
  const node = await metadata.getNode(nodeId);
  if (!node) throw new DrainError('NodeUnknown', `node ${nodeId} is not registered`);
  if (node.state !== 'drained') {
    throw new DrainError(
      'NodeNotDrained',
      `node ${nodeId} is ${node.state}; only a drained worker can be removed (imgvault worker drain ${nodeId} first)`,
    );
  }
  const held = await countObjects(metadata, nodeId);
  if (held > 0) {
    throw new DrainError('NodeHoldsCopies', `${held} object records still name copies on node ${nodeId}`);
  }
  const at = Date.now();
  const result = await proposeCommand(raft, { type: 'removeWorker', nodeId, at });
  if (!result.ok) throw new DrainError(result.code, result.message);
  return { nodeId, removedAt: at, alreadyRemoved: false };
}
