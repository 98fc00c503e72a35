#!/usr/bin/env -S node --initial-old-space-size=128
// The flag: see HEAP_FLAGS in src/cli/localProcess.ts. (env -S splits it from `node`.)
// Runs the ahead-of-time build (dist/, made by `npm run build`, which `npm ci` and `npm pack` run)
// when there is one; a checkout without it still works, through tsx's loader from src/ (slower:
// every module is transpiled at start).
import { existsSync } from 'node:fs';

const built = new URL('../dist/main.mjs', import.meta.url);
if (existsSync(built)) {
  await import(built.href);
} else {
  const { register } = await import('tsx/esm/api');
  register();
  await import('../src/cli/main.ts');
}
