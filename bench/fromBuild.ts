// The managers and workers a benchmark starts run what a deployment runs: the ahead-of-time build
// in dist/ (scripts/build.mjs, which `npm start` and `bin/imgvault.js` use), built first from the
// checkout being measured. Started from the source, every child ran through tsx's loader: its module
// hooks on a thread of their own, 30-50 MiB more memory, and esbuild's `keepNames`, which wraps
// every named closure in an `Object.defineProperty` call each time it is made (docs/measurements.md,
// "Benchmarks measure the build").

import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CHILDREN_FROM_BUILD_ENV } from '../src/cli/localProcess.ts';

/** Set to 1 to start the children from the TypeScript source through tsx, as before. */
export const FROM_SOURCE_ENV = 'BENCH_FROM_SOURCE';

/** This checkout. */
export const REPO = fileURLToPath(new URL('..', import.meta.url));

/** Whether the children run from the build (not under BENCH_FROM_SOURCE=1). */
export function childrenRunBuilt(): boolean {
  return process.env[FROM_SOURCE_ENV] !== '1';
}

/**
 * Builds dist/ in each of `trees` (this checkout unless given) and has every child started from
 * it; does nothing under BENCH_FROM_SOURCE=1. Returns whether the children run from the build.
 */
export function childrenFromBuild(trees: string[] = [REPO]): boolean {
  if (!childrenRunBuilt()) return false;
  for (const tree of trees.map((t) => path.resolve(t))) {
    execFileSync(process.execPath, [path.join(tree, 'scripts', 'build.mjs')], {
      cwd: tree,
      stdio: ['ignore', 'ignore', 'inherit'],
    });
  }
  process.env[CHILDREN_FROM_BUILD_ENV] = '1';
  return true;
}
