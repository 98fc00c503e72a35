import { readFileSync } from 'node:fs';

/**
 * CPU seconds (user + system, all threads) a process has used so far, from /proc (Linux); 0 once
 * it is gone. Fields 14 and 15 of /proc/<pid>/stat are utime and stime in clock ticks (100/s).
 */
export function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) return 0;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // The command name before ')' may itself hold spaces or parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}
