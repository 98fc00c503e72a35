// What `npm install -g` of the packed project gets: the command, every source file it may load
// (src/ whole: commands load their modules on demand), tsx's settings, and neither tests nor data.

import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

it('npm pack ships bin/, all of src/ and tsconfig.json, and no tests', async () => {
  const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
  const { stdout } = await promisify(execFile)(npm, ['pack', '--dry-run', '--json', '--ignore-scripts'], {
    cwd: ROOT,
    timeout: 120_000,
  });
  const packed = new Set(
    (JSON.parse(stdout) as { files: { path: string }[] }[])[0]!.files.map((f) => f.path),
  );
  const sources = (await readdir(join(ROOT, 'src'), { recursive: true, withFileTypes: true }))
    .filter((e) => e.isFile())
    .map((e) => relative(ROOT, join(e.parentPath, e.name)));
  expect(sources.length).toBeGreaterThan(50);
  expect(sources.filter((f) => !packed.has(f))).toEqual([]);
  for (const f of ['bin/imgvault.js', 'package.json', 'tsconfig.json']) expect(packed.has(f), f).toBe(true);
  expect([...packed].filter((f) => /^(tests|bench|data|deploy)\//.test(f))).toEqual([]);
});
