// The ahead-of-time build (scripts/build.mjs): bin/imgvault.js runs it, it answers as the source
// does, and its entry statically imports commander alone, so `imgvault --help` loads no command
// (each is a chunk of its own, imported when it runs).

import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { beforeAll, expect, it } from 'vitest';
import { runCli } from '../integration/imageCluster.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const run = promisify(execFile);

beforeAll(async () => {
  await run(process.execPath, [join(ROOT, 'scripts/build.mjs')], { cwd: ROOT, timeout: 120_000 });
}, 150_000);

/** `imgvault <args>` through bin/imgvault.js, which runs dist/ when it is there. */
async function built(args: string[]): Promise<{ code: number; stdout: string }> {
  try {
    const { stdout } = await run(process.execPath, [join(ROOT, 'bin/imgvault.js'), ...args], {
      timeout: 60_000,
    });
    return { code: 0, stdout };
  } catch (err) {
    const e = err as { code: number; stdout: string };
    return { code: e.code, stdout: e.stdout };
  }
}

it('answers --help as the source does', async () => {
  const fromSource = await runCli(['--help'], 60_000);
  const fromBuild = await built(['--help']);
  expect(fromBuild).toEqual({ code: 0, stdout: fromSource.stdout });
  expect(fromBuild.stdout).toContain('status [options]');
});

it('runs a command from its own chunk: status names a manager that does not answer', async () => {
  const status = await built(['status', '--url', 'http://127.0.0.1:9', '--json']);
  expect(status.code).toBe(1);
  expect(JSON.parse(status.stdout)).toMatchObject({ healthy: false, unreachable: ['http://127.0.0.1:9'] });
});

it('keeps the entry free of every command: it imports commander and chunks on demand only', async () => {
  const entry = await readFile(join(ROOT, 'dist/main.mjs'), 'utf8');
  const staticImports = [...entry.matchAll(/^import\s*(?:[^;"]*?from\s*)?"([^"]+)"/gm)].map((m) => m[1]);
  expect(staticImports).toEqual(['commander']);
  expect(entry).toMatch(/import\("\.\/statusCommand-[\w-]+\.mjs"\)/);
});
