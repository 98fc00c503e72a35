// One conformance suite for every RaftLogStore (openraft-style): the LevelDB store and the
// simulator's in-memory store must behave identically, including what survives a reopen.

import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { RaftLogStore } from '../../src/consensus/api.ts';
import type { Entry, HardState, Snapshot } from '../../src/consensus/types.ts';

export interface LogStoreFixture {
  store: RaftLogStore;
  /** Closes nothing: call after `store.close()`; returns the same log opened again. */
  reopen: () => Promise<RaftLogStore>;
  cleanup: () => Promise<void>;
}

export function entry(index: number, term: number, data = `cmd-${index}-${term}`): Entry {
  return { index, term, type: 'normal', data };
}

export function entries(from: number, to: number, term: number): Entry[] {
  const out: Entry[] = [];
  for (let i = from; i <= to; i++) out.push(entry(i, term));
  return out;
}

export function snapshot(index: number, term: number, data = `state@${index}`): Snapshot {
  return { metadata: { index, term, confState: { voters: ['a', 'b', 'c'], learners: ['d'] } }, data };
}

const indexes = (es: Entry[]) => es.map((e) => e.index);

export function describeLogStoreConformance(name: string, makeStore: () => Promise<LogStoreFixture>): void {
  describe(`RaftLogStore conformance: ${name}`, () => {
    let fx: LogStoreFixture;
    let store: RaftLogStore;

    beforeEach(async () => {
      fx = await makeStore();
      store = fx.store;
    });

    afterEach(async () => {
      await store.close().catch(() => {});
      await fx.cleanup();
    });

    async function reopen(): Promise<RaftLogStore> {
      await store.close();
      store = await fx.reopen();
      return store;
    }

    it('loads an empty log as term 0, no vote, commit 0, no snapshot, no entries', async () => {
      expect(await store.load()).toEqual({
        hardState: { term: 0, vote: null, commit: 0 },
        snapshot: null,
        entries: [],
      });
    });

    it('returns appended entries in index order', async () => {
      await store.save({ entries: entries(1, 3, 1) });
      await store.save({ entries: entries(4, 5, 2) });
      const { entries: loaded } = await store.load();
      expect(loaded).toEqual([...entries(1, 3, 1), ...entries(4, 5, 2)]);
    });

    it('keeps the order of indexes past the first byte boundary (big-endian keys)', async () => {
      await store.save({ entries: entries(1, 300, 1) });
      expect(indexes((await store.load()).entries)).toEqual(entries(1, 300, 1).map((e) => e.index));
    });

    it('replaces a conflicting suffix with the entries of a save starting at or below the last index', async () => {
      await store.save({ entries: entries(1, 6, 1) });
      await store.save({ entries: [entry(4, 2), entry(5, 2)] });
      const { entries: loaded } = await store.load();
      expect(loaded).toEqual([...entries(1, 3, 1), entry(4, 2), entry(5, 2)]);
      await store.save({ entries: [entry(6, 3)] });
      expect(indexes((await store.load()).entries)).toEqual([1, 2, 3, 4, 5, 6]);
    });

    it('saves a hard state on its own and keeps the last one', async () => {
      const hs: HardState = { term: 3, vote: 'b', commit: 0 };
      await store.save({ hardState: hs });
      expect((await store.load()).hardState).toEqual(hs);
      await store.save({ entries: entries(1, 2, 3), hardState: { term: 3, vote: 'b', commit: 2 } });
      expect(await store.load()).toMatchObject({
        hardState: { term: 3, vote: 'b', commit: 2 },
        snapshot: null,
      });
    });

    it('a received snapshot drops the entries it covers and keeps later ones that agree with it', async () => {
      await store.save({ entries: entries(1, 10, 2) });
      await store.save({ snapshot: snapshot(6, 2), hardState: { term: 2, vote: null, commit: 6 } });
      const loaded = await store.load();
      expect(loaded.snapshot).toEqual(snapshot(6, 2));
      expect(loaded.entries).toEqual(entries(7, 10, 2));
    });

    it('a received snapshot from another history replaces the whole log', async () => {
      await store.save({ entries: entries(1, 10, 1) });
      await store.save({ snapshot: snapshot(6, 2) });
      const loaded = await store.load();
      expect(loaded.snapshot).toEqual(snapshot(6, 2));
      expect(loaded.entries).toEqual([]);
      // The log now continues right after the snapshot.
      await store.save({ entries: entries(7, 8, 2) });
      expect(indexes((await store.load()).entries)).toEqual([7, 8]);
    });

    it('a snapshot beyond the log replaces it, and entries in the same save follow it', async () => {
      await store.save({ entries: entries(1, 3, 1) });
      await store.save({
        snapshot: snapshot(20, 3),
        entries: entries(21, 23, 3),
        hardState: { term: 3, vote: null, commit: 22 },
      });
      const loaded = await store.load();
      expect(loaded.snapshot?.metadata.index).toBe(20);
      expect(loaded.entries).toEqual(entries(21, 23, 3));
      expect(loaded.hardState).toEqual({ term: 3, vote: null, commit: 22 });
    });

    it('compact keeps the snapshot and drops entries up to its index', async () => {
      await store.save({ entries: entries(1, 8, 1), hardState: { term: 1, vote: 'a', commit: 8 } });
      await store.compact(snapshot(5, 1));
      let loaded = await store.load();
      expect(loaded.snapshot).toEqual(snapshot(5, 1));
      expect(loaded.entries).toEqual(entries(6, 8, 1));
      expect(loaded.hardState).toEqual({ term: 1, vote: 'a', commit: 8 });
      await store.compact(snapshot(8, 1, 'later'));
      loaded = await store.load();
      expect(loaded.snapshot).toEqual(snapshot(8, 1, 'later'));
      expect(loaded.entries).toEqual([]);
      await store.save({ entries: entries(9, 9, 2) });
      expect(indexes((await store.load()).entries)).toEqual([9]);
    });

    it('reads stored entries at once, within a byte budget, and refuses compacted ones', async () => {
      const read = store as Required<Pick<RaftLogStore, 'entriesSync' | 'termSync'>>;
      await store.save({ entries: entries(1, 8, 1), hardState: { term: 1, vote: 'a', commit: 8 } });
      await store.save({ entries: entries(9, 10, 2) });
      expect(read.entriesSync(3, 11, Number.MAX_SAFE_INTEGER)).toEqual([
        ...entries(3, 8, 1),
        ...entries(9, 10, 2),
      ]);
      // `cmd-3-1` and `cmd-4-1` are 7 bytes each: a budget of 15 takes two, of 1 still one.
      expect(indexes(read.entriesSync(3, 11, 15))).toEqual([3, 4]);
      expect(indexes(read.entriesSync(3, 11, 1))).toEqual([3]);
      expect(read.termSync(9)).toBe(2);
      await store.compact(snapshot(5, 1));
      expect(indexes(read.entriesSync(6, 8, Number.MAX_SAFE_INTEGER))).toEqual([6, 7]);
      expect(() => read.entriesSync(5, 8, Number.MAX_SAFE_INTEGER)).toThrow();
      expect(() => read.termSync(4)).toThrow();
    });

    it('everything survives close and reopen', async () => {
      await store.save({ entries: entries(1, 12, 1), hardState: { term: 1, vote: 'a', commit: 10 } });
      await store.compact(snapshot(4, 1));
      await store.save({
        entries: [entry(11, 2), entry(12, 2)],
        hardState: { term: 2, vote: 'c', commit: 11 },
      });
      const before = await store.load();
      const reopened = await reopen();
      expect(await reopened.load()).toEqual(before);
      expect(before.entries.map((e) => e.term)).toEqual([1, 1, 1, 1, 1, 1, 2, 2]);
      // The reopened store knows its bounds: a truncating save and a gap check still work.
      await reopened.save({ entries: [entry(12, 3)] });
      await expect(reopened.save({ entries: [entry(14, 3)] })).rejects.toThrow(/gap/);
      expect(indexes((await reopened.load()).entries)).toEqual([5, 6, 7, 8, 9, 10, 11, 12]);
    });

    it('rejects a save that would leave a gap, and writes nothing of it', async () => {
      await store.save({ entries: entries(1, 3, 1) });
      await expect(
        store.save({ entries: [entry(5, 1)], hardState: { term: 1, vote: null, commit: 3 } }),
      ).rejects.toThrow(/gap/);
      await expect(store.save({ entries: [entry(4, 1), entry(6, 1)] })).rejects.toThrow(/gap/);
      expect(await store.load()).toEqual({
        hardState: { term: 0, vote: null, commit: 0 },
        snapshot: null,
        entries: entries(1, 3, 1),
      });
    });

    it('rejects a first entry other than index 1 on an empty log', async () => {
      await expect(store.save({ entries: [entry(2, 1)] })).rejects.toThrow(/gap/);
    });

    it('rejects changes Raft forbids: lower term, second vote in a term, commit beyond the log', async () => {
      await store.save({ entries: entries(1, 2, 2), hardState: { term: 2, vote: 'a', commit: 1 } });
      await expect(store.save({ hardState: { term: 1, vote: null, commit: 1 } })).rejects.toThrow(/term/);
      await expect(store.save({ hardState: { term: 2, vote: 'b', commit: 1 } })).rejects.toThrow(/vote/);
      await expect(store.save({ hardState: { term: 2, vote: 'a', commit: 3 } })).rejects.toThrow(/beyond/);
      await expect(store.save({ entries: [entry(1, 3)] })).rejects.toThrow(/committed/);
      await store.save({ hardState: { term: 3, vote: 'b', commit: 2 } });
      expect((await store.load()).hardState).toEqual({ term: 3, vote: 'b', commit: 2 });
    });

    it('rejects stale or inconsistent snapshots', async () => {
      await store.save({ entries: entries(1, 5, 1), hardState: { term: 1, vote: null, commit: 4 } });
      await expect(store.compact(snapshot(5, 1))).rejects.toThrow(/commit/);
      await expect(store.compact(snapshot(3, 2))).rejects.toThrow(/term/);
      await store.compact(snapshot(3, 1));
      await expect(store.compact(snapshot(2, 1))).rejects.toThrow(/not beyond/);
      await expect(store.save({ snapshot: snapshot(3, 1) })).rejects.toThrow(/not beyond/);
      await expect(store.save({ entries: [entry(3, 1)] })).rejects.toThrow(/snapshot/);
      const loaded = await store.load();
      expect(loaded.snapshot?.metadata.index).toBe(3);
      expect(indexes(loaded.entries)).toEqual([4, 5]);
    });

    it('serialises overlapping saves in call order', async () => {
      await Promise.all([
        store.save({ entries: entries(1, 3, 1) }),
        store.save({ entries: entries(4, 6, 1) }),
        store.save({ entries: [entry(5, 2)] }),
      ]);
      expect((await store.load()).entries).toEqual([...entries(1, 4, 1), entry(5, 2)]);
    });
  });
}
