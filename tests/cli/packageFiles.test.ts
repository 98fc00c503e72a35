// What `npm install -g` of the packed project gets: the command and the ahead-of-time build it runs
// (dist/: both entries, every command's chunk, the dashboard's static files), and neither the
// TypeScript source, tests nor data. `npm pack` runs "prepare" (the build) as it does here.

import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

it('npm pack builds dist/ and ships bin/ and dist/ with the dashboard, and no source or tests', async () => {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const { stdout } = await promisify(execFile)(npm, ['pack', '--dry-run', '--json'], {
    cwd: ROOT,
    timeout: 120_000,
  });
  const packed = new Set(
    (JSON.parse(stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path),
  );
  for (const f of ['bin/imgvault.js', 'package.json', 'dist/main.mjs', 'dist/workerMain.mjs']) {
    expect(packed.has(f), f).toBe(true);
  }
  const dashboard = await readdir(join(ROOT, 'src/manager/http/dashboard'));
  expect(dashboard.length).toBeGreaterThan(0);
  for (const f of dashboard) expect(packed.has(`dist/dashboard/${f}`), f).toBe(true);
  const chunks = [...packed].filter((f) => /^dist\/[^/]+\.mjs$/.test(f));
  expect(chunks.length).toBeGreaterThan(10);
  expect([...packed].filter((f) => /^(src|tests|bench|data|deploy|scripts)\//.test(f))).toEqual([]);
});
