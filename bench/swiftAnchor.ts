import { existsSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * The Swift anchor's figures from its latest run on this machine (../shared/bench/swift-bench.sh
 * appends JSON lines to $SWIFT_ANCHOR_DIR/results/swift-bench.jsonl), for printing our figures as
 * ratios beside them. Run it back to back with our benchmark: figures of another time or machine
 * compare nothing. SWIFT_RESULTS names another file.
 */
export interface SwiftCell {
  objPerSec: number;
  p50Ms: number;
  cpuMsPerObj: number;
}

interface SwiftLine {
  bench?: string;
  phase?: string;
  conc?: number;
  obj_per_s?: number;
  p50_ms?: number;
  cpu_ms_per_obj?: number;
}

function resultsFile(): string {
  if (process.env.SWIFT_RESULTS) return process.env.SWIFT_RESULTS;
  const dir = process.env.SWIFT_ANCHOR_DIR ?? path.join(tmpdir(), 'swiftanchor');
  return path.join(dir, 'results', 'swift-bench.jsonl');
}

/** The last line for `phase` (e.g. `swift GET 1MiB`) at `conc`, or null when Swift was not run here. */
export function swiftCell(phase: string, conc: number): SwiftCell | null {
  const file = resultsFile();
  if (!existsSync(file)) return null;
  const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
  for (let i = lines.length - 1; i >= 0; i--) {
    let row: SwiftLine;
    try {
      row = JSON.parse(lines[i]!) as SwiftLine;
    } catch {
      continue;
    }
    if (row.bench === 'swift-anchor' && row.phase === phase && row.conc === conc && row.obj_per_s) {
      return {
        objPerSec: Number(row.obj_per_s),
        p50Ms: Number(row.p50_ms),
        cpuMsPerObj: Number(row.cpu_ms_per_obj),
      };
    }
  }
  return null;
}

/** `ours / swift` as `1.23x`, or `-` without a Swift figure. */
export function ratioToSwift(ours: number, swift: SwiftCell | null): string {
  return swift ? `${(ours / swift.objPerSec).toFixed(2)}x` : '-';
}
