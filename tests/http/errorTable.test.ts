// docs/api.md's error tables are held to the code: every error code a manager or a worker can put
// in a JSON error body, found in the sources (literal codes at each jsonError/errorBody call, and
// the code unions passed through whole), must have a row, and a worker code its one status.

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { STATUS_BY_CODE } from '../../src/storagenode/errors.ts';

const ROOT = join(import.meta.dirname, '..', '..');
const read = (path: string) => readFileSync(join(ROOT, path), 'utf8');

// Every file that builds a manager's HTTP answers.
const MANAGER_SURFACES = [
  'src/manager/http/adminRoutes.ts',
  'src/http/clientAuth.ts',
  'src/http/clusterAuth.ts',
  'src/manager/http/clusterRoutes.ts',
  'src/manager/http/dashboardRoutes.ts',
  'src/http/leaderRedirect.ts',
  'src/manager/http/publicRoutes.ts',
  'src/manager/http/workerRoutes.ts',
  'src/manager/managerServer.ts',
  'src/consensus/transport/raftRoutes.ts',
  'src/consensus/transport/snapshotRoutes.ts',
  'src/manager/s3/s3KeyRoutes.ts',
];

// Unions whose members reach a manager's answer unchanged (`jsonError(c, status, err.code, ...)`).
const MANAGER_UNIONS: [file: string, start: RegExp][] = [
  ['src/manager/imageService.ts', /export type ImageErrorCode =/],
  ['src/consensus/node/raftError.ts', /export type RaftErrorCode =/],
  ['src/manager/drain.ts', /readonly code:/],
  ['src/consensus/snapshotFiles.ts', /readonly code: 'OffsetMismatch'/],
];

function literalCodes(text: string): string[] {
  const patterns = [
    /jsonError\(\s*\w+,\s*\d+,\s*'(\w+)'/g,
    /errorBody\(\s*'(\w+)'/g,
    /error: \{ code: '(\w+)'/g,
    // errorBody(cond ? 'A' : 'B', ...)
    /errorBody\([^,]*\?\s*'(\w+)'\s*:\s*'(\w+)'/g,
  ];
  return patterns.flatMap((p) => [...text.matchAll(p)].flatMap((m) => m.slice(1).filter(Boolean)));
}

function unionCodes(text: string, start: RegExp): string[] {
  const at = text.search(start);
  if (at < 0) throw new Error(`no ${start} in the source: update this test`);
  const end = text.indexOf(';', at);
  const union = text
    .slice(at, end === -1 ? undefined : end)
    .split(/[=:]/)
    .slice(1)
    .join('');
  return [...union.matchAll(/'(\w+)'/g)].map((m) => m[1]!);
}

/** code -> statuses, from the tables of the section that begins at `heading` (up to the next ##). */
function documented(heading: string, untilHeading = /\n## /): Map<string, string[]> {
  const doc = read('docs/api.md');
  const from = doc.indexOf(heading);
  if (from < 0) throw new Error(`no "${heading}" in docs/api.md`);
  const rest = doc.slice(from + heading.length);
  const stop = rest.search(untilHeading);
  const section = stop < 0 ? rest : rest.slice(0, stop);
  const rows = new Map<string, string[]>();
  let inCodeTable = false;
  for (const line of section.split('\n')) {
    if (line.startsWith('| code | status |')) inCodeTable = true;
    else if (!line.startsWith('|')) inCodeTable = false;
    else if (inCodeTable && !line.startsWith('|---')) {
      const [codes = '', status = ''] = line.split('|').slice(1);
      for (const m of codes.matchAll(/`(\w+)`/g))
        rows.set(m[1]!, [...(rows.get(m[1]!) ?? []), status.trim()]);
    }
  }
  return rows;
}

describe('docs/api.md error tables', () => {
  it('name every error code a manager can answer with', () => {
    const codes = new Set([
      ...MANAGER_SURFACES.flatMap((f) => literalCodes(read(f))),
      ...MANAGER_UNIONS.flatMap(([f, start]) => unionCodes(read(f), start)),
    ]);
    // The scan itself works: the codes the issue found missing are among those collected.
    for (const known of ['InvalidQuery', 'BadRequest', 'InvalidMember', 'NodeUnknown', 'Unauthorized'])
      expect(codes).toContain(known);
    const table = documented('## Images', /\n## Cluster/);
    expect([...codes].filter((c) => !table.has(c)).sort()).toEqual([]);
  });

  it('name every worker error code with its one status', () => {
    const table = documented('Workers answer their own codes', /\n## /);
    for (const [code, status] of Object.entries(STATUS_BY_CODE)) {
      expect(table.get(code), code).toEqual([String(status)]);
    }
  });
});
