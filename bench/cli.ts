/**
 * Start-up time of the `imgvault` command beside the targets of issue 20.
 *
 *   npm run bench:cli               (BENCH_RUNS=9 by default)
 *
 * Each case runs BENCH_RUNS times one after the other; the figures are the median wall time and the
 * median CPU time (user + system of the child, from /proc/self/stat's cutime/cstime, so a loaded
 * machine shows as wall time well above CPU time). `status` asks 127.0.0.1:9, where nothing
 * listens, so it fails at once and measures start-up, not a cluster. The first lines split the
 * time: Node alone, Node with tsx's loader. Then the same calls twice: "before", the source run
 * through tsx (what every call did before the ahead-of-time build, and what a checkout without
 * dist/ still does), and "after", bin/imgvault.js on the build (scripts/build.mjs, run here first
 * so the figures are for the current source).
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { envConfiguredBench } from './usage.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(ROOT, 'bin/imgvault.js');
const SOURCE = path.join(ROOT, 'src/cli/main.ts');
envConfiguredBench(`npm run bench:cli

Start-up time of the imgvault command (wall and CPU, medians): Node alone, Node with tsx, then
\`imgvault --help\`, a \`status\` no manager answers and \`imgvault manager --help\`, from the source
and from the build (built first).

Environment: BENCH_RUNS=9 (runs of each case).`);

const RUNS = Number(process.env.BENCH_RUNS ?? 9);
const HEAP = '--initial-old-space-size=128';
const UNREACHABLE = ['status', '--url', 'http://127.0.0.1:9'];

interface Case {
  name: string;
  args: string[];
  targetMs?: number;
}

/** CPU seconds of this process's waited-for children so far (fields 16 and 17, in ticks of 1/100 s). */
function childrenCpuMs(): number {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[13]) + Number(fields[14])) * 10;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

interface Timing {
  wallMs: number;
  cpuMs: number;
}

function measure(c: Case): Timing {
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    const cpuBefore = childrenCpuMs();
    const started = performance.now();
    const r = spawnSync(process.execPath, c.args, { cwd: ROOT, stdio: 'ignore', timeout: 60_000 });
    wall.push(performance.now() - started);
    cpu.push(childrenCpuMs() - cpuBefore);
    if (r.error) throw r.error;
  }
  const t = { wallMs: median(wall), cpuMs: median(cpu) };
  const target = c.targetMs === undefined ? '' : `  target < ${c.targetMs} ms`;
  const verdict = c.targetMs === undefined ? '' : t.wallMs < c.targetMs ? '  met' : '  not met';
  console.log(
    `${c.name.padEnd(42)} ${t.wallMs.toFixed(0).padStart(6)} ms wall ${t.cpuMs.toFixed(0).padStart(6)} ms cpu${target}${verdict}`,
  );
  return t;
}

async function main(): Promise<void> {
  const built = spawnSync(process.execPath, [path.join(ROOT, 'scripts/build.mjs')], { stdio: 'inherit' });
  if (built.status !== 0) throw new Error('npm run build failed');
  console.log(`imgvault start-up, median of ${RUNS} runs each`);
  const [node, tsx] = [
    { name: 'node -e 0', args: [HEAP, '-e', '0'] },
    { name: 'node --import tsx -e 0', args: [HEAP, '--import', 'tsx', '-e', '0'] },
  ].map(measure) as [Timing, Timing];
  console.log(
    `tsx's loader alone adds ${(tsx.cpuMs - node.cpuMs).toFixed(0)} ms cpu to node's ${node.cpuMs.toFixed(0)} ms, before any of the CLI loads`,
  );
  const runs: [string, string[]][] = [
    ['before (src through tsx)', [HEAP, '--import', 'tsx', SOURCE]],
    ['after (bin/imgvault.js on dist/)', [HEAP, BIN]],
  ];
  for (const [label, run] of runs) {
    console.log(label);
    measure({ name: '  imgvault --help', args: [...run, '--help'], targetMs: 300 });
    measure({
      name: '  imgvault status (no manager answers)',
      args: [...run, ...UNREACHABLE],
      targetMs: 500,
    });
    measure({ name: '  imgvault manager --help', args: [...run, 'manager', '--help'] });
  }
}

await main();
