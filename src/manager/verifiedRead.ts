// A download's bytes are checked against the record before they are vouched for: a worker's disk
// can rot and a worker can lie (its etag says nothing about what it streams). A small object is read
// whole and checked before the first byte is sent, so a bad copy is replaced by the other replica; a
// larger one is hashed as it streams, with its last chunk held back until the hash is known, so a
// bad copy cuts the connection and a client never gets a whole-looking 200 of wrong bytes.

import { createHash, webcrypto } from 'node:crypto';
import { Transform } from 'node:stream';
import pLimit from 'p-limit';

/** Whole objects this size or smaller are checked before the first byte is sent. */
export const CHECK_BEFORE_SEND_BYTES = 1024 * 1024;

/**
 * The whole-object hashes run on libuv's threadpool, which the Raft log's LevelDB writes, the
 * snapshot files and the staging files share: two at a time leave the default pool's other two
 * threads to them however many reads arrive (and two cores hash no faster with more).
 */
const threadpoolHashes = pLimit(2);

/** Whole-object reads gathering their bytes now (readWholeChecked). */
let gathering = 0;

export class ReadCheckFailed extends Error {
  override readonly name = 'ReadCheckFailed';
}

export interface Expected {
  size: number;
  sha256: string;
}

function wrongSize(size: number, expected: Expected): string | null {
  return size === expected.size ? null : `the copy has ${size} bytes, the record ${expected.size}`;
}

function verdict(size: number, sha256: string, expected: Expected): string | null {
  const sized = wrongSize(size, expected);
  if (sized) return sized;
  if (sha256 !== expected.sha256) return `the copy hashes to ${sha256}, the record says ${expected.sha256}`;
  return null;
}

/**
 * The whole body, once it is known to be the record's bytes; ReadCheckFailed otherwise. `into`: a
 * buffer of at least the record's size to gather into (readBuffers.ts) instead of a new one; what is
 * handed out is then a view of it.
 */
export async function readWholeChecked(
  body: AsyncIterable<Uint8Array>,
  expected: Expected,
  into?: Buffer,
): Promise<Buffer> {
  // One copy, into a buffer of the record's size: the worker's chunks are not kept (their memory
  // may be the socket's), and are not gathered and joined again either. The whole is hashed once
  // it is in, by WebCrypto on libuv's threadpool: on a manager serving reads at concurrency 8 its
  // main thread is the bottleneck, and sha256 took a fifth of it (docs/measurements.md).
  if (into && into.length < expected.size)
    throw new RangeError(`a buffer of ${into.length} bytes cannot hold a record of ${expected.size}`);
  const bytes = into ? into.subarray(0, expected.size) : Buffer.allocUnsafe(expected.size);
  // A read alone hashes its chunks as they arrive: the main thread waits on the socket between
  // them, so the hash costs no time, and the answer does not wait a threadpool turn after the last
  // byte (0.7 ms of a 1 MiB GET's 4 at concurrency 1). With other reads gathering, the main thread
  // is what limits them, and the hash goes to the threadpool once the whole is in.
  const asItArrives = gathering === 0 ? createHash('sha256') : null;
  gathering += 1;
  try {
    let size = 0;
    for await (const chunk of body) {
      if (size + chunk.byteLength > expected.size)
        throw new ReadCheckFailed(`the copy is longer than the record's ${expected.size} bytes`);
      bytes.set(chunk, size);
      asItArrives?.update(chunk);
      size += chunk.byteLength;
    }
    // A short copy is refused on its size alone: hashing it would only spend a threadpool turn.
    const short = wrongSize(size, expected);
    if (short) throw new ReadCheckFailed(short);
    const digest = asItArrives
      ? asItArrives.digest('hex')
      : Buffer.from(await threadpoolHashes(() => webcrypto.subtle.digest('SHA-256', bytes))).toString('hex');
    const wrong = verdict(size, digest, expected);
    if (wrong) throw new ReadCheckFailed(wrong);
    return bytes;
  } finally {
    gathering -= 1;
  }
}

/**
 * A pass-through that hashes what it passes and holds the latest chunk back: the last one is let
 * through only once every byte matched, else the stream fails (and the answer with it) and
 * `onMismatch` hears why.
 */
export function checkingStream(expected: Expected, onMismatch: (why: string) => void): Transform {
  const hash = createHash('sha256');
  let size = 0;
  let held: Uint8Array | null = null;
  const fail = (why: string) => {
    onMismatch(why);
    return new ReadCheckFailed(why);
  };
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      size += chunk.byteLength;
      if (size > expected.size) {
        callback(fail(`the copy is longer than the record's ${expected.size} bytes`));
        return;
      }
      hash.update(chunk);
      if (held) this.push(held);
      held = chunk;
      callback();
    },
    flush(callback) {
      const wrong = verdict(size, hash.digest('hex'), expected);
      if (wrong) {
        callback(fail(wrong));
        return;
      }
      if (held) this.push(held);
      callback();
    },
  });
}
