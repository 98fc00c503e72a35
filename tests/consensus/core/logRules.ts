// Two log rules checked on any RaftLog / Unstable implementation, so the unit tests run them on
// the real core and the simulator's broken-variant tests on the planted bugs, for the same reason:
// - a follower commits no further than the last entry the MsgApp vouched for (etcd TestLogMaybeAppend);
// - advance() marks entries stable only if the entry at that index still has the persisted term
//   (etcd TestUnstableStableTo).

import type { CoreStorage } from '../../../src/consensus/api.ts';
import { MemoryStorage, type RaftLog } from '../../../src/consensus/core/index.ts';
import type { Unstable } from '../../../src/consensus/core/unstable.ts';
import type { Entry } from '../../../src/consensus/types.ts';

export function entry(index: number, term: number): Entry {
  return { index, term, type: 'normal', data: `t${term}i${index}` };
}

/** The rules `maybeAppend` breaks, as readable lines; empty when it keeps them all. */
export function maybeAppendRuleBreaks(newLog: (storage: CoreStorage) => RaftLog): string[] {
  const breaks: string[] = [];
  // 1@1 2@2 3@3, committed to 1; the leader's MsgApp matches at 1 and carries 2@2 only, with
  // commit 3: entry 3@3 here may be a deposed leader's tail the leader has not replaced yet.
  const log = newLog(new MemoryStorage());
  log.append([entry(1, 1), entry(2, 2), entry(3, 3)]);
  log.commitTo(1);
  const lastNew = log.maybeAppend(1, 1, 3, [entry(2, 2)]);
  if (lastNew !== 2) breaks.push(`maybeAppend returned ${lastNew}, not the last new index 2`);
  if (log.committed !== 2) breaks.push(`committed ${log.committed} past the last new entry 2`);
  return breaks;
}

/** The rules `stableTo` breaks, as readable lines; empty when it keeps them all. */
export function stableToRuleBreaks(newUnstable: (offset: number) => Unstable): string[] {
  const breaks: string[] = [];
  // The host persisted 5@1; meanwhile a new leader's MsgApp replaced it with 5@2.
  const u = newUnstable(5);
  u.entries = [entry(5, 2)];
  u.stableTo(5, 1);
  if (u.offset !== 5 || u.entries.length !== 1) {
    breaks.push('stableTo(5, 1) dropped 5@2, which was never persisted');
  }
  const v = newUnstable(5);
  v.entries = [entry(5, 1), entry(6, 1)];
  v.stableTo(5, 1);
  if (v.offset !== 6 || v.entries.length !== 1) breaks.push('stableTo(5, 1) kept the persisted 5@1');
  return breaks;
}
