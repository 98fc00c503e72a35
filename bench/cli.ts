/**
 * Start-up time of the `imgvault` command beside the targets of issue 20.
 *
 *   npm run bench:cli               (BENCH_RUNS=9 by default)
 *
 * Each case runs BENCH_RUNS times one after the other; the figures are the median wall time and the
 * median CPU time (user + system of the child, from /proc/self/stat's cutime/cstime, so a loaded
 * machine shows as wall time well above CPU time). `status` asks 127.0.0.1:9, where nothing
 * listens, so it fails at once and measures start-up, not a cluster. The lines before the CLI's
 * split its time: Node alone, Node with tsx's loader, then the CLI run through tsx. The last lines
 * run the same entry bundled ahead of time by esbuild (the one tsx ships) into a temp folder, with
 * the npm packages left as imports (resolved through a link to node_modules) and each command in its own chunk: what a build step would give.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, symlink } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = path.join(ROOT, 'bin/imgvault.js');
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

/** The CLI bundled by esbuild into `dir`; undefined (with the reason printed) when it cannot be built. */
async function bundle(dir: string): Promise<string | undefined> {
  try {
    const esbuild = await import('esbuild');
    await esbuild.build({
      entryPoints: { main: path.join(ROOT, 'src/cli/main.ts') },
      bundle: true,
      splitting: true,
      format: 'esm',
      platform: 'node',
      target: 'node20',
      packages: 'external',
      outdir: dir,
      outExtension: { '.js': '.mjs' },
      logLevel: 'error',
    });
    return path.join(dir, 'main.mjs');
  } catch (err) {
    console.log(`(no bundle: ${err instanceof Error ? err.message : String(err)})`);
    return undefined;
  }
}

async function main(): Promise<void> {
  console.log(`imgvault start-up, median of ${RUNS} runs each`);
  const cases: Case[] = [
    { name: 'node -e 0', args: [HEAP, '-e', '0'] },
    { name: 'node --import tsx -e 0', args: [HEAP, '--import', 'tsx', '-e', '0'] },
    { name: 'imgvault --help', args: [HEAP, BIN, '--help'], targetMs: 300 },
    { name: 'imgvault status (no manager answers)', args: [HEAP, BIN, ...UNREACHABLE], targetMs: 500 },
    { name: 'imgvault manager --help', args: [HEAP, BIN, 'manager', '--help'] },
  ];
  const [node, tsx] = cases.map(measure) as [Timing, Timing];
  console.log(
    `tsx's loader alone adds ${(tsx.cpuMs - node.cpuMs).toFixed(0)} ms cpu to node's ${node.cpuMs.toFixed(0)} ms, before any of the CLI loads`,
  );
  const dir = await mkdtemp(path.join(tmpdir(), 'imgvault-bench-cli-'));
  try {
    // The bundle's bare imports (the npm packages) resolve through this link to the checkout's.
    await symlink(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
    const entry = await bundle(dir);
    if (entry === undefined) return;
    for (const c of [
      { name: 'bundled: imgvault --help', args: [HEAP, entry, '--help'], targetMs: 300 },
      { name: 'bundled: imgvault status (no manager)', args: [HEAP, entry, ...UNREACHABLE], targetMs: 500 },
      { name: 'bundled: imgvault manager --help', args: [HEAP, entry, 'manager', '--help'] },
    ])
      measure(c);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
