// The ahead-of-time build: src/ bundled once by esbuild into dist/, so a process starts on plain
// JavaScript instead of loading tsx and transpiling the whole graph at every start.
//
//   npm run build        (also run by `npm ci` / `npm install` through "prepare", and by `npm pack`)
//
// Entries: dist/main.mjs (the `imgvault` command) and dist/workerMain.mjs (one worker, as
// localProcess.ts and the containers start it). Code splitting puts each lazily imported command in
// its own chunk beside them, so `imgvault --help` loads none of them. npm packages stay imports
// (resolved from node_modules at run time): sharp and classic-level carry native binaries. The
// dashboard's static files are copied to dist/dashboard/, where dashboardAssets.ts finds them
// relative to the chunk it is bundled into (always directly in dist/).

import { cp, rename, rm } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = (p) => fileURLToPath(new URL(`../${p}`, import.meta.url));
const dist = root('dist');
// Built beside dist/ and swapped in, so a process starting from dist/ meanwhile (a restarted child
// of `imgvault cluster`) never finds it half written.
const outdir = `${dist}.tmp-${process.pid}`;

await rm(outdir, { recursive: true, force: true });
await build({
  entryPoints: {
    main: root('src/cli/main.ts'),
    workerMain: root('src/cli/workerMain.ts'),
  },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  outdir,
  outExtension: { '.js': '.mjs' },
  sourcemap: 'linked',
  logLevel: 'warning',
});
await cp(root('src/manager/http/dashboard'), `${outdir}/dashboard`, { recursive: true });
const old = `${dist}.old-${process.pid}`;
await rename(dist, old).catch((err) => {
  if (err.code !== 'ENOENT') throw err;
});
await rename(outdir, dist);
await rm(old, { recursive: true, force: true });
