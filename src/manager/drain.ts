// Draining a worker: an operator marks it `draining`; from then on placement never picks it, the
// repair loop moves every object it holds to other workers (using it as a copy source while it
// serves) and marks it `drained` once its node index is empty (RepairLoop.finishDrains).

import { NODE_ID_PATTERN, type NodeState } from '../metadata/commands.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import { ImageError, type RaftAccess } from './imageService.ts';

export class DrainError extends Error {
  constructor(
    readonly code: 'InvalidId' | 'NodeUnknown' | 'NodeDown',
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

/** Commits `draining` (idempotent; a drained node stays drained). Leader only. */
export async function startDrain(
  raft: RaftAccess,
  metadata: MetadataStateMachine,
  nodeId: string,
): Promise<DrainStatus> {
  if (!NODE_ID_PATTERN.test(nodeId)) throw new DrainError('InvalidId', `invalid node id ${nodeId}`);
  if (!raft.isLeader()) {
    const leader = raft.leaderInfo();
    if (leader?.url) throw new ImageError('NotLeader', 'this manager is not the leader', leader.url);
    throw new ImageError('NoLeader', 'no leader is known right now; retry shortly');
  }
  const node = await metadata.getNode(nodeId);
  if (!node) throw new DrainError('NodeUnknown', `node ${nodeId} is not registered`);
  if (node.state === 'down') {
    // Its copies are already being repaired elsewhere; draining needs a worker that can serve.
    throw new DrainError('NodeDown', `node ${nodeId} is down; its objects are repaired without a drain`);
  }
  if (node.state !== 'draining' && node.state !== 'drained') {
    const result = await proposeCommand(raft, {
      type: 'markNodeState',
      nodeId,
      state: 'draining',
      at: Date.now(),
    });
    if (!result.ok) throw new DrainError('NodeUnknown', result.message);
  }
  return (await drainStatus(metadata, nodeId)) as DrainStatus;
}
