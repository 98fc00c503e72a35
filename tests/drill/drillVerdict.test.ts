// The drill's verdict on constructed data: a drill must be able to fail. A lost, corrupt or
// unreadable image, a deleted image read back, or a 5xx other than 503 each fail it.

import { inflateSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import type { ExpectedImages, Outcome } from '../../src/cli/drill/drillLedger.ts';
import { drillFailed, failedByStatus, writeWindow } from '../../src/cli/drill/drillReport.ts';
import { judgeReadings, type Reading } from '../../src/cli/drill/imageChecker.ts';
import { firstNewTermCommitAt, type LeaderSample, noLeaderMs } from '../../src/cli/drill/leaderWatch.ts';
import { pngPicture } from '../../src/cli/drill/pngImages.ts';

const expected = (): ExpectedImages => ({
  present: new Map([
    ['a', 'sha-a'],
    ['b', 'sha-b'],
  ]),
  deleted: new Set(['gone']),
});

const read = (
  id: string,
  manager: string,
  status: number | string,
  sha256: string | null = null,
): Reading => ({
  id,
  manager,
  status,
  sha256,
});

const healthy = (): Reading[] =>
  ['m1', 'm2'].flatMap((m) => [read('a', m, 200, 'sha-a'), read('b', m, 200, 'sha-b'), read('gone', m, 404)]);

describe('judgeReadings', () => {
  it('passes every image read back with its sha256 and every deleted id answered 404', () => {
    const result = judgeReadings(expected(), healthy());
    expect(result).toMatchObject({ imagesChecked: 2, deletesChecked: 1, lost: 0, staleReads: 0 });
    expect(drillFailed({ ...result, failedByStatus: {} })).toBe(false);
  });

  it('counts an image one manager answers 404 for as lost', () => {
    const readings = healthy().map((r) => (r.id === 'b' && r.manager === 'm2' ? read('b', 'm2', 404) : r));
    const result = judgeReadings(expected(), readings);
    expect(result.lost).toBe(1);
    expect(result.problems).toEqual([{ kind: 'missing', id: 'b', where: 'm2', status: 404 }]);
    expect(drillFailed({ ...result, failedByStatus: {} })).toBe(true);
  });

  it('counts other bytes under an acknowledged id, or no answer at all, as lost', () => {
    const readings = healthy().map((r) =>
      r.manager !== 'm1'
        ? r
        : r.id === 'a'
          ? read('a', 'm1', 200, 'sha-x')
          : r.id === 'b'
            ? read('b', 'm1', 503)
            : r,
    );
    const result = judgeReadings(expected(), readings);
    expect(result.lost).toBe(2);
    expect(result.problems.map((p) => p.kind).sort()).toEqual(['corrupt', 'unreadable']);
  });

  it('counts a deleted image served with 200 as a stale read; a redirect or a 503 is not one', () => {
    const readings = [
      ...healthy().filter((r) => r.id !== 'gone'),
      read('gone', 'm1', 200, 'sha-old'),
      read('gone', 'm2', 307),
      read('gone', 'm3', 503),
    ];
    const result = judgeReadings(expected(), readings);
    expect(result).toMatchObject({ lost: 0, staleReads: 1 });
    expect(drillFailed({ ...result, failedByStatus: {} })).toBe(true);
  });

  it('adds what the load saw: a stale read there fails the drill too', () => {
    const result = judgeReadings(expected(), healthy(), [
      { kind: 'stale', id: 'gone', where: 'load', status: 200 },
    ]);
    expect(result.staleReads).toBe(1);
  });
});

describe('the failed-request verdict', () => {
  const outcome = (status: number | string, ok = false): Outcome => ({ op: 'upload', at: 0, ok, status });

  it('tolerates 503, refused connections and timeouts (an election) but not a 507 or a 500', () => {
    const tolerated = failedByStatus([
      outcome(503),
      outcome(503),
      outcome('ECONNREFUSED'),
      outcome('timeout'),
    ]);
    expect(tolerated).toEqual({ '503': 2, ECONNREFUSED: 1, timeout: 1 });
    expect(drillFailed({ lost: 0, staleReads: 0, failedByStatus: tolerated })).toBe(false);
    for (const status of [507, 500]) {
      expect(drillFailed({ lost: 0, staleReads: 0, failedByStatus: failedByStatus([outcome(status)]) })).toBe(
        true,
      );
    }
  });

  it('fails a drill whose recovery did not come in time', () => {
    expect(drillFailed({ lost: 0, staleReads: 0, failedByStatus: {}, error: 'no leader' })).toBe(true);
  });
});

describe('timings', () => {
  it('measures the write-unavailable window from the last 201 before the fault to the first after', () => {
    const ok = (at: number): Outcome => ({ op: 'upload', at, ok: true, status: 201 });
    const outcomes = [
      ok(100),
      ok(900),
      { op: 'upload', at: 1_200, ok: false, status: 503 } as Outcome,
      ok(2_400),
    ];
    expect(writeWindow(outcomes, 1_000)).toEqual({ writeUnavailableMs: 1_500, firstUploadMs: 1_400 });
    expect(writeWindow(outcomes.slice(0, 3), 1_000)).toEqual({
      writeUnavailableMs: null,
      firstUploadMs: null,
    });
  });

  it('counts the time no manager answered as leader, and the new term first commit', () => {
    const lead = (term: number, commit: number, lastIndex: number) => ({ id: 'm1', term, commit, lastIndex });
    const samples: LeaderSample[] = [
      { at: 0, leader: lead(2, 10, 10) },
      { at: 100, leader: null },
      { at: 200, leader: null },
      { at: 300, leader: lead(3, 10, 11) },
      { at: 400, leader: lead(3, 11, 12) },
      { at: 500, leader: lead(3, 12, 12) },
    ];
    expect(noLeaderMs(samples, 50)).toBe(250);
    expect(firstNewTermCommitAt(samples, 50, 2)).toBe(400);
    expect(firstNewTermCommitAt(samples, 50, 3)).toBeNull();
  });
});

describe('pngPicture', () => {
  it('builds a decodable RGB PNG whose pixels inflate to height rows of 1 + 3 x width bytes', () => {
    const png = pngPicture(5, 7);
    expect(png.subarray(1, 4).toString('latin1')).toBe('PNG');
    const idatLength = png.readUInt32BE(33);
    expect(png.subarray(37, 41).toString('latin1')).toBe('IDAT');
    expect(inflateSync(png.subarray(41, 41 + idatLength)).length).toBe(7 * (1 + 5 * 3));
    expect(pngPicture(5, 7).equals(png)).toBe(false);
  });
});
