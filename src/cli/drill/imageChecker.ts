// The drill's verdict on the images: every acknowledged upload read back from every live manager
// and compared by sha256, every acknowledged delete read back and expected gone. judgeReadings is
// pure (tests feed it constructed readings); readEverything does the reading.

import { createHash } from 'node:crypto';
import { drillRequest } from './drillHttp.ts';
import type { ExpectedImages, Problem } from './drillLedger.ts';

export interface Reading {
  id: string;
  manager: string;
  /** HTTP status, or the error code of a request that got none. */
  status: number | string;
  /** sha256 of the body of a 200, else null. */
  sha256: string | null;
}

export interface CheckResult {
  imagesChecked: number;
  deletesChecked: number;
  /** Distinct acknowledged images missing, corrupt or unreadable somewhere (the load's reads included). */
  lost: number;
  /** Reads that returned a deleted image (200), from the check and from the load. */
  staleReads: number;
  problems: Problem[];
}

function judgeOne(expected: ExpectedImages, r: Reading): Problem | null {
  const want = expected.present.get(r.id);
  if (want !== undefined) {
    if (r.status === 200) {
      return r.sha256 === want ? null : { kind: 'corrupt', id: r.id, where: r.manager, status: r.status };
    }
    const kind = r.status === 404 ? 'missing' : 'unreadable';
    return { kind, id: r.id, where: r.manager, status: r.status };
  }
  if (expected.deleted.has(r.id) && r.status === 200) {
    return { kind: 'stale', id: r.id, where: r.manager, status: r.status };
  }
  return null;
}

/**
 * A 404, a redirect or a 503 for a deleted id is fine; a 200 is a stale read. An acknowledged
 * image must come back as a 200 with its sha256 from every manager read; anything else loses it.
 */
export function judgeReadings(
  expected: ExpectedImages,
  readings: Reading[],
  loadProblems: Problem[] = [],
): CheckResult {
  const problems = [...loadProblems];
  for (const r of readings) {
    const p = judgeOne(expected, r);
    if (p) problems.push(p);
  }
  const lostIds = new Set(problems.filter((p) => p.kind !== 'stale').map((p) => p.id));
  const readIds = new Set(readings.map((r) => r.id));
  return {
    imagesChecked: [...expected.present.keys()].filter((id) => readIds.has(id)).length,
    deletesChecked: [...expected.deleted].filter((id) => readIds.has(id)).length,
    lost: lostIds.size,
    staleReads: problems.filter((p) => p.kind === 'stale').length,
    problems,
  };
}

export const sha256Hex = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

/** A status worth asking again: no answer, or one that says "not now". */
function transient(status: number | string): boolean {
  return typeof status === 'string' || status === 503 || status === 307;
}

async function readOnce(manager: string, id: string): Promise<Reading> {
  const res = await drillRequest(`${manager}/v1/images/${encodeURIComponent(id)}`, { method: 'GET' }, 5_000);
  return { id, manager, status: res.status, sha256: res.status === 200 ? sha256Hex(res.body) : null };
}

/**
 * Reads every expected and deleted id from every manager, `concurrency` at a time. A read that
 * gets no answer or a 503 is asked again until `deadline` (epoch ms); its last answer is kept.
 */
export async function readEverything(
  expected: ExpectedImages,
  managers: string[],
  deadline: number,
  concurrency = 8,
): Promise<Reading[]> {
  const jobs: { manager: string; id: string }[] = [];
  for (const manager of managers) {
    for (const id of [...expected.present.keys(), ...expected.deleted]) jobs.push({ manager, id });
  }
  const readings: Reading[] = [];
  let next = 0;
  const reader = async () => {
    while (next < jobs.length) {
      const job = jobs[next++]!;
      let reading = await readOnce(job.manager, job.id);
      while (transient(reading.status) && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 200));
        reading = await readOnce(job.manager, job.id);
      }
      readings.push(reading);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, reader));
  return readings;
}
