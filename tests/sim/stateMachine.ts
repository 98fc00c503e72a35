// The replicated state machine of the simulation: it folds every applied entry into a chained
// digest, so two replicas that applied the same prefix hold the same digest, and a snapshot is
// just { applied, digest, writes }.

import type { Entry } from '../../src/consensus/types.ts';
import { chainDigest, EMPTY_LOG_DIGEST } from './digest.ts';

export interface StateMachineImage {
  applied: number;
  digest: number;
  /** Client writes applied so far (noops and membership changes excluded). */
  writes: number;
}

export class SimStateMachine {
  applied = 0;
  digest = EMPTY_LOG_DIGEST;
  writes = 0;

  static restore(data: string): SimStateMachine {
    const image = parseImage(data);
    const sm = new SimStateMachine();
    sm.applied = image.applied;
    sm.digest = image.digest;
    sm.writes = image.writes;
    return sm;
  }

  apply(entry: Entry): void {
    this.digest = chainDigest(this.digest, entry);
    this.applied = entry.index;
    if (entry.type === 'normal' && entry.data !== '') this.writes++;
  }

  serialize(): string {
    const image: StateMachineImage = { applied: this.applied, digest: this.digest, writes: this.writes };
    return JSON.stringify(image);
  }
}

/**
 * The image in a snapshot's data. The real driver prefixes it with a line holding the member map
 * (raftNode.ts wrapSnapshot); the image itself never holds a newline.
 */
export function parseImage(data: string): StateMachineImage {
  const body = data.slice(data.indexOf('\n') + 1);
  if (body === '') return { applied: 0, digest: EMPTY_LOG_DIGEST, writes: 0 };
  const parsed = JSON.parse(body) as StateMachineImage;
  if (typeof parsed.applied !== 'number' || typeof parsed.digest !== 'number') {
    throw new Error(`simulator snapshot data is malformed: ${data}`);
  }
  return parsed;
}
