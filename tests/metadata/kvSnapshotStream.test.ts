// KvStateMachine.snapshotChunks streams the state from a LevelDB snapshot instead of one
// JSON.stringify of the whole map. What it streams must be the state at the call, whatever is
// applied while the stream is read, and restore must take it back. Real LevelDB in temp folders.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { Entry } from '../../src/consensus/types.ts';
import { KvStateMachine } from '../../src/metadata/kvStateMachine.ts';

const folders: string[] = [];
const opened: KvStateMachine[] = [];

afterEach(async () => {
  for (const sm of opened.splice(0)) await sm.close();
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function openKv(): Promise<KvStateMachine> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-kvsnap-'));
  folders.push(dir);
  const sm = await KvStateMachine.open(dir);
  opened.push(sm);
  return sm;
}

function puts(from: number, count: number, tag: string): Entry[] {
  return Array.from({ length: count }, (_, i) => ({
    term: 1,
    index: from + i,
    type: 'normal' as const,
    data: JSON.stringify({
      op: 'put',
      // Keys that need JSON escaping, and a key rewritten later in the run.
      key: i % 7 === 0 ? `k"\\${i % 50}\u00e9` : `k-${i}`,
      value: `${tag}-${i}-${'x'.repeat(150)}\n"`,
      requestId: `${tag}-${i}`,
    }),
  }));
}

async function readAll(chunks: AsyncIterable<Uint8Array>, during?: () => Promise<void>): Promise<string> {
  const parts: Buffer[] = [];
  for await (const chunk of chunks) {
    parts.push(Buffer.from(chunk));
    if (parts.length === 1) await during?.();
  }
  return Buffer.concat(parts).toString('utf8');
}

describe('KvStateMachine.snapshotChunks', () => {
  it('streams the state as of the call, in the JSON that snapshot() writes, while applies go on', async () => {
    const sm = await openKv();
    await sm.apply(puts(1, 3000, 'a'));
    await sm.flush();
    const expected = JSON.parse(await sm.snapshot()) as unknown;
    const stream = sm.snapshotChunks();
    // Applied after the call, before the stream is read and while it is: none of it may show.
    await sm.apply(puts(3001, 3000, 'b'));
    await sm.flush();
    const text = await readAll(stream, async () => {
      await sm.apply(puts(6001, 3000, 'c'));
      await sm.flush();
    });
    expect(Buffer.byteLength(text)).toBeGreaterThan(256 * 1024);
    expect(JSON.parse(text)).toEqual(expected);
    expect(sm.appliedIndex()).toBe(9000);
  });

  it('restores what it streamed', async () => {
    const sm = await openKv();
    await sm.apply(puts(1, 500, 'a'));
    await sm.flush();
    const text = await readAll(sm.snapshotChunks());
    const other = await openKv();
    await other.apply(puts(1, 20, 'z'));
    await other.restore(text, 500);
    expect(other.appliedIndex()).toBe(500);
    expect(JSON.parse(await other.snapshot())).toEqual(JSON.parse(await sm.snapshot()));
  });

  it('an empty state streams as an empty map', async () => {
    const sm = await openKv();
    expect(JSON.parse(await readAll(sm.snapshotChunks()))).toEqual({ applied: 0, kv: {} });
  });

  it('a batch still being written: the map is streamed, exact at the applied index', async () => {
    const sm = await openKv();
    await sm.apply(puts(1, 100, 'a'));
    // No flush: the apply's LevelDB batch has not even started.
    const text = await readAll(sm.snapshotChunks());
    expect(text).toBe(await sm.snapshot());
    expect(JSON.parse(text).applied).toBe(100);
  });
});
