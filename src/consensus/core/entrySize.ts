// Size accounting for flow control: the byte budget of a MsgApp (maxSizePerMsg) and of the
// uncommitted tail (maxUncommittedEntriesSize) counts entry data only, like etcd's payload size.

import type { Entry } from '../types.ts';

export function entrySize(e: Entry): number {
  return e.data.length;
}

export function entriesSize(ents: readonly Entry[]): number {
  let n = 0;
  for (const e of ents) n += e.data.length;
  return n;
}

/** The longest prefix of `ents` within `maxSize` bytes, but never empty when `ents` is not. */
export function limitSize(ents: Entry[], maxSize: number): Entry[] {
  if (ents.length === 0) return ents;
  let size = entrySize(ents[0]!);
  let n = 1;
  while (n < ents.length) {
    size += entrySize(ents[n]!);
    if (size > maxSize) break;
    n++;
  }
  return n === ents.length ? ents : ents.slice(0, n);
}

/**
 * Entries lo..hi-1 as `read` gives them one by one, cut as limitSize cuts: for a store whose reads
 * cost, it reads no entry after the first one past `maxSize`.
 */
export function readWithinSize(
  lo: number,
  hi: number,
  maxSize: number,
  read: (index: number) => Entry,
): Entry[] {
  const entries: Entry[] = [];
  let size = 0;
  for (let i = lo; i < hi; i++) {
    const e = read(i);
    size += entrySize(e);
    if (entries.length > 0 && size > maxSize) break;
    entries.push(e);
  }
  return entries;
}
