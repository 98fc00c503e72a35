// The core's view of a log whose memory is compacted past its durable store: the entries between
// are read from the real LevelDB store, the rest from memory, and a write that drops the store's
// log first moves the view's first index past it.

import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { MemoryStorage, StorageCompactedError } from '../../src/consensus/core/index.ts';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { StoreBackedStorage } from '../../src/consensus/storeBackedStorage.ts';
import { entries, snapshot } from './logStore.conformance.ts';

let dir: string;
let store: LevelLogStore;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'imgvault-store-backed-'));
  store = await LevelLogStore.open(dir);
});

afterEach(async () => {
  await store.close();
  await rm(dir, { recursive: true, force: true });
});

/** A store and a memory both holding snapshot 4 and entries 5..20, the memory then compacted to 15. */
async function compactedPastTheStore(): Promise<{ memory: MemoryStorage; view: StoreBackedStorage }> {
  const log = [...entries(1, 10, 1), ...entries(11, 20, 2)];
  await store.save({ entries: log, hardState: { term: 2, vote: 'a', commit: 20 } });
  await store.compact(snapshot(4, 1));
  const memory = new MemoryStorage(snapshot(4, 1));
  memory.append(log.slice(4));
  const view = new StoreBackedStorage(memory, store);
  memory.createSnapshot(15, snapshot(15, 2).metadata.confState, 'tables');
  memory.compact(15);
  return { memory, view };
}

describe('StoreBackedStorage', () => {
  it('reads the entries the memory dropped from the store, and the rest from memory', async () => {
    const { view } = await compactedPastTheStore();
    expect(view.firstIndex()).toBe(5);
    expect(view.lastIndex()).toBe(20);
    expect(view.entries(5, 21, Number.MAX_SAFE_INTEGER)).toEqual([
      ...entries(5, 10, 1),
      ...entries(11, 20, 2),
    ]);
    expect(view.entries(14, 18, Number.MAX_SAFE_INTEGER)).toEqual(entries(14, 17, 2));
    // A byte budget spans both: `cmd-14-2` and the next are 8 bytes each.
    expect(view.entries(14, 21, 24).map((e) => e.index)).toEqual([14, 15, 16]);
    expect(view.term(4)).toBe(1);
    expect(view.term(12)).toBe(2);
    expect(view.term(15)).toBe(2);
    expect(() => view.entries(4, 10, Number.MAX_SAFE_INTEGER)).toThrow(StorageCompactedError);
  });

  it('serves nothing the store is about to drop, and sends the kept file while its log is readable', async () => {
    const { memory, view } = await compactedPastTheStore();
    const file = snapshot(8, 1, 'file');
    view.keepSnapshot(file);
    expect(view.snapshot()).toBe(file);
    view.dropThrough(snapshot(12, 2));
    expect(view.firstIndex()).toBe(13);
    expect(view.term(12)).toBe(2);
    expect(() => view.entries(11, 14, Number.MAX_SAFE_INTEGER)).toThrow(StorageCompactedError);
    expect(view.entries(13, 16, Number.MAX_SAFE_INTEGER)).toEqual(entries(13, 15, 2));
    // The log after the file is gone: a follower is sent the memory's snapshot instead.
    expect(view.snapshot()).toBe(memory.snapshot());
    // Dropping through the memory's own first index leaves only the memory.
    view.dropThrough(snapshot(17, 2));
    expect(view.firstIndex()).toBe(16);
  });

  it('without a store is the memory alone', async () => {
    const memory = new MemoryStorage(snapshot(4, 1));
    memory.append(entries(5, 9, 1));
    memory.createSnapshot(7, snapshot(7, 1).metadata.confState, 'tables');
    memory.compact(7);
    const view = new StoreBackedStorage(memory, null);
    view.keepSnapshot(snapshot(5, 1, 'file'));
    expect(view.firstIndex()).toBe(8);
    expect(view.snapshot()).toBe(memory.snapshot());
    expect(() => view.entries(6, 9, Number.MAX_SAFE_INTEGER)).toThrow(StorageCompactedError);
  });
});
