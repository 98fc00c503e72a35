// `imgvault status`: one screen answering "is my cluster healthy?" (or one JSON object).

import type { Command } from 'commander';
import { bearerHeaders, managerUrls } from './clusterClient.ts';
import { type ClusterStatus, formatBytes, gatherStatus, type ManagerStatus } from './clusterStatus.ts';

/** Exit statuses: healthy, could not answer at all, answered with problems. */
const EXIT_HEALTHY = 0;
const EXIT_NO_ANSWER = 1;
const EXIT_PROBLEMS = 3;

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => `  ${r.map((c, i) => c.padEnd(widths[i]!)).join('  ')}`.trimEnd()).join('\n');
}

const dash = (v: number | string | null | undefined) => (v === null || v === undefined ? '-' : String(v));

/** A removed manager still running says it follows; the leader's membership says what it is. */
function roleLabel(m: ManagerStatus): string {
  if (m.member === false) return `${dash(m.role)} (not a member)`;
  return m.voter === false && m.role !== 'leader' ? `${m.role} (non-voter)` : dash(m.role);
}

export function renderStatus(s: ClusterStatus): string {
  const out: string[] = [];
  out.push(
    s.leader
      ? `leader: ${s.leader.id} (${s.leader.url}), term ${s.leader.term}`
      : 'leader: NONE (no manager reachable leads)',
  );
  out.push('', 'managers:');
  out.push(
    table([
      ['id', 'url', 'role', 'term', 'leader', 'commit', 'applied', 'last', 'lag', 'contact'],
      ...s.managers.map((m) =>
        m.reachable
          ? [
              dash(m.id),
              m.url,
              roleLabel(m),
              dash(m.term),
              dash(m.leader),
              dash(m.commit),
              dash(m.applied),
              dash(m.lastIndex),
              dash(m.lag),
              m.lastContactMs === null ? '-' : `${m.lastContactMs} ms ago`,
            ]
          : [dash(m.id), m.url, 'UNREACHABLE'],
      ),
    ]),
  );
  for (const m of s.managers) {
    if (!m.reachable) out.push(`  ${m.id ?? m.url} could not be reached: ${m.error}`);
  }
  out.push(
    '',
    `workers${s.observedFrom ? ` (as ${s.leader ? 'the leader' : s.observedFrom} sees them)` : ''}:`,
  );
  out.push(
    s.workers.length === 0
      ? '  none known'
      : table([
          ['id', 'state', 'zone', 'disk used', 'disk free', 'objects', 'last heard'],
          ...s.workers.map((w) => [
            w.id,
            w.state,
            w.zone,
            formatBytes(w.diskUsed),
            formatBytes(w.diskFree),
            String(w.objects),
            w.silenceMs === null ? '-' : `${w.silenceMs} ms ago`,
          ]),
        ]),
  );
  const o = s.objects;
  out.push(
    '',
    o
      ? `objects: ${o.count} (${formatBytes(o.bytes)}); under-replicated ${dash(o.underReplicated)}, unavailable ${dash(o.unavailable)}, lost ${dash(o.lost)}${o.lostCounted === false ? ' (still counting)' : ''}, repairing ${o.repairing}`
      : 'objects: unknown (no manager answered)',
  );
  if (o?.names && o.names.count > 0) {
    const n = o.names;
    out.push(
      `names: ${n.count} naming ${formatBytes(n.bytes)}, stored once as ${formatBytes(n.storedBytes)} (deduplication saves ${formatBytes(n.savedBytes)})`,
    );
  }
  out.push('', s.healthy ? 'healthy' : `NOT HEALTHY:\n${s.problems.map((p) => `  - ${p}`).join('\n')}`);
  if (s.warnings.length > 0) out.push(`warnings:\n${s.warnings.map((w) => `  - ${w}`).join('\n')}`);
  return out.join('\n');
}

export function registerStatusCommand(program: Command): void {
  program
    .command('status')
    .description(
      'is the cluster healthy? every manager (role, term, leader, commit/applied/last index, lag, last contact), ' +
        'every worker, object counts; a manager that does not answer is named. ' +
        `Exit status ${EXIT_HEALTHY} healthy, ${EXIT_PROBLEMS} answered with problems, ${EXIT_NO_ANSWER} no manager answered`,
    )
    .option(
      '--url <urls>',
      'managers to ask, comma-separated (the members they name are asked too) [env IMGVAULT_URL; default http://127.0.0.1:7001,7002,7003]',
    )
    .option('--token <token>', 'bearer token, when the cluster requires one [env IMGVAULT_TOKEN]')
    .option('--json', 'print one JSON object instead')
    .action(async (flags: { url?: string; token?: string; json?: boolean }) => {
      let status: ClusterStatus;
      try {
        status = await gatherStatus(managerUrls(flags.url), bearerHeaders(flags.token));
      } catch (err) {
        console.error(`imgvault status: ${(err as Error).message}`);
        process.exit(EXIT_NO_ANSWER);
      }
      console.log(flags.json ? JSON.stringify(status, null, 2) : renderStatus(status));
      const answered = status.managers.some((m) => m.reachable);
      process.exit(!answered ? EXIT_NO_ANSWER : status.healthy ? EXIT_HEALTHY : EXIT_PROBLEMS);
    });
}
