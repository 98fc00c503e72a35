import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ClassicLevel } from 'classic-level';
import { describe, expect, it, vi } from 'vitest';
import { LevelLogStore } from '../../src/consensus/levelLogStore.ts';
import { MemoryLogStore } from '../../src/consensus/memoryLogStore.ts';
import { describeLogStoreConformance, entries, snapshot } from './logStore.conformance.ts';

describeLogStoreConformance('LevelLogStore', async () => {
  const folder = await mkdtemp(join(tmpdir(), 'imgvault-raftlog-'));
  return {
    store: await LevelLogStore.open(folder),
    reopen: () => LevelLogStore.open(folder),
    cleanup: () => rm(folder, { recursive: true, force: true }),
  };
});

describeLogStoreConformance('MemoryLogStore', async () => {
  const store = new MemoryLogStore();
  return {
    store,
    reopen: async () => store.clone(),
    cleanup: async () => {},
  };
});

describe('LevelLogStore', () => {
  it('keeps only bounds in memory and finds them again on open', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'imgvault-raftlog-'));
    try {
      const store = await LevelLogStore.open(folder);
      await store.save({ entries: entries(1, 9, 1), hardState: { term: 1, vote: 'a', commit: 9 } });
      await store.compact(snapshot(4, 1));
      expect([store.firstIndex(), store.lastIndex()]).toEqual([5, 9]);
      await store.close();
      const again = await LevelLogStore.open(folder);
      expect([again.firstIndex(), again.lastIndex()]).toEqual([5, 9]);
      await again.close();
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it('starts the synced batch of a save before save returns when none is queued, else after the one before', async () => {
    const folder = await mkdtemp(join(tmpdir(), 'imgvault-raftlog-'));
    const batches = vi.spyOn(ClassicLevel.prototype, 'batch');
    try {
      const store = await LevelLogStore.open(folder);
      const first = store.save({ entries: entries(1, 3, 1) });
      expect(batches).toHaveBeenCalledTimes(1);
      const second = store.save({ entries: entries(4, 5, 1), hardState: { term: 1, vote: 'a', commit: 5 } });
      expect(batches).toHaveBeenCalledTimes(1);
      await Promise.all([first, second]);
      expect(batches).toHaveBeenCalledTimes(2);
      expect(store.lastIndex()).toBe(5);
      const third = store.save({ entries: entries(6, 6, 1) });
      expect(batches).toHaveBeenCalledTimes(3);
      await third;
      expect((await store.load()).entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5, 6]);
      await store.close();
    } finally {
      batches.mockRestore();
      await rm(folder, { recursive: true, force: true });
    }
  });
});

describe('MemoryLogStore', () => {
  it('a clone is independent of the store it was taken from (a crash keeps only what was saved)', () => {
    const store = new MemoryLogStore();
    store.saveSync({ entries: entries(1, 3, 1) });
    const crashed = store.clone();
    store.saveSync({ entries: entries(4, 5, 1) });
    expect(crashed.loadSync().entries.map((e) => e.index)).toEqual([1, 2, 3]);
    expect(store.loadSync().entries.map((e) => e.index)).toEqual([1, 2, 3, 4, 5]);
  });
});
