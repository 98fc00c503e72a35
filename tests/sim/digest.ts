// Non-cryptographic 53-bit digests (cyrb53-style, two 32-bit lanes). The checker chains them over
// log prefixes so "two logs are identical up to index i" is one comparison, and the trace hash
// proves that a seed replays identically.

import type { Entry } from '../../src/consensus/types.ts';

const TWO_32 = 4294967296;

export function digestString(text: string, seed1 = 0, seed2 = 0): number {
  let h1 = 0xdeadbeef ^ seed1;
  let h2 = 0x41c6ce57 ^ seed2;
  for (let i = 0; i < text.length; i++) {
    const ch = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ ch, 2654435761);
    h2 = Math.imul(h2 ^ ch, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507);
  h1 ^= Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507);
  h2 ^= Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return TWO_32 * (2097151 & h2) + (h1 >>> 0);
}

/** Digest of the empty log before index 1. */
export const EMPTY_LOG_DIGEST = 0;

/**
 * Digest of a log prefix ending in `entry`, given the digest of the prefix before it. Equal chain
 * digests at an index mean equal logs up to that index (Log Matching), and the state machine uses
 * the same chain over applied entries, so a snapshot carries the digest of the prefix it replaces.
 */
export function chainDigest(previous: number, entry: Entry): number {
  const lo = (previous % TWO_32) ^ Math.imul(entry.index, 0x165667b1);
  const hi = Math.floor(previous / TWO_32) ^ Math.imul(entry.term, 0x27d4eb2d);
  return digestString(entry.type === 'confChange' ? `c${entry.data}` : `n${entry.data}`, lo, hi);
}

/** Folds trace lines into one number; order-sensitive. */
export class TraceDigest {
  private value = 0;
  add(line: string): void {
    this.value = digestString(line, this.value % TWO_32, Math.floor(this.value / TWO_32));
  }
  /** Cheaper than add() for the hot path (one per message): folds integers, no string built. */
  addNumbers(values: number[]): void {
    let h1 = (this.value % TWO_32) ^ 0x9e3779b9;
    let h2 = Math.floor(this.value / TWO_32) ^ 0x85ebca6b;
    for (const v of values) {
      h1 = Math.imul(h1 ^ v, 2654435761);
      h2 = Math.imul(h2 ^ v, 1597334677);
    }
    this.value = digestString('', h1, h2);
  }

  get hex(): string {
    return this.value.toString(16).padStart(14, '0');
  }
}
