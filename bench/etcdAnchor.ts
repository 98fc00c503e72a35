// The etcd anchor: ../shared/bench/etcd-anchor.sh, beside this repository on the benchmark machine,
// runs a 3-member etcd on this machine and prints its figures as JSON lines; bench:raft and
// bench:failover print theirs beside them.

import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const ANCHOR = fileURLToPath(new URL('../../shared/bench/etcd-anchor.sh', import.meta.url));

/** The anchor's JSON lines (as printed), or why there are none. */
export function etcdAnchorLines(skipped: boolean, timeoutMs: number): string[] | string {
  if (skipped) return 'skipped (--no-etcd)';
  if (!existsSync(ANCHOR)) return `not measured: ${ANCHOR} is not there`;
  if (spawnSync('sh', ['-c', 'command -v etcd'], { stdio: 'ignore' }).status !== 0) {
    return 'not measured: etcd is not installed here (../shared/bench/etcd-anchor.sh installs Debian etcd-server when run as root)';
  }
  const out = execFileSync('bash', [ANCHOR], {
    encoding: 'utf8',
    timeout: timeoutMs,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  return out.split('\n').filter((l) => l.startsWith('{'));
}
