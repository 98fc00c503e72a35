// `npm run chaos -- --seed S --minutes M`: chaos runs on seeds S, S+1, ... until M minutes have
// passed (or --runs N), printing each run's faults and verdict, a replay command for every run
// with a violation, and a last line `chaos: <runs> runs, <acked> acknowledged, <lost> lost,
// <violations> violations`. Exits 1 on any violation.

import { Command } from 'commander';
import { replayCommand, runChaos } from './chaosRun.ts';

const program = new Command('chaos')
  .option('--seed <n>', 'first seed', String(Date.now() % 1_000_000))
  .option('--minutes <m>', 'keep starting runs until this much time has passed', '5')
  .option('--runs <n>', 'exactly this many runs (overrides --minutes)')
  .option('--fault-seconds <s>', 'how long each run injects faults', '90')
  .option('--quiet', 'print only verdicts')
  .parse();

const opts = program.opts<{
  seed: string;
  minutes: string;
  runs?: string;
  faultSeconds: string;
  quiet?: boolean;
}>();
const firstSeed = Number.parseInt(opts.seed, 10);
const faultMs = Number(opts.faultSeconds) * 1000;
const deadline = Date.now() + Number(opts.minutes) * 60_000;
const maxRuns = opts.runs === undefined ? Number.POSITIVE_INFINITY : Number.parseInt(opts.runs, 10);

let runs = 0;
let acked = 0;
let lost = 0;
let violations = 0;
for (let seed = firstSeed; runs < maxRuns && (opts.runs !== undefined || Date.now() < deadline); seed++) {
  const result = await runChaos({ seed, faultMs, log: opts.quiet ? undefined : (l) => console.log(l) });
  runs++;
  acked += result.acknowledged;
  lost += result.lost.length;
  violations += result.violations.length;
  const faults = Object.entries(result.faults)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(
    `seed ${seed}: ${result.operations} operations, ${result.acknowledged} acknowledged, ${result.lost.length} lost, ` +
      `${result.violations.length} violations (faults: ${faults || 'none'})`,
  );
  const seen = Object.entries(result.outcomes)
    .map(([k, v]) => `${k}=${v}`)
    .join(' ');
  console.log(`  outcomes: ${seen}`);
  const why = Object.entries(result.unknownReasons)
    .map(([k, v]) => `${k}=${v}`)
    .join(', ');
  console.log(`  no clear outcome: ${why || 'none'}`);
  if (result.violations.length > 0) {
    for (const v of result.violations.slice(0, 50)) console.log(`  ${v}`);
    console.log(`  logs and data: ${result.root}`);
    console.log(`  replay: ${replayCommand(seed, faultMs)}`);
  }
}
console.log(`chaos: ${runs} runs, ${acked} acknowledged, ${lost} lost, ${violations} violations`);
process.exitCode = violations > 0 ? 1 : 0;
