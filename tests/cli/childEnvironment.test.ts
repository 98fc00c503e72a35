// Managers and workers started by the launcher get MALLOC_ARENA_MAX=2 (src/cli/localProcess.ts,
// CHILD_ENV) unless the environment names its own, and IMGVAULT_CHILD_NODE_ARGS is read at each
// spawn. Real child processes of a small TypeScript file that reports what it was given.

import { once } from 'node:events';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { CHILDREN_FROM_BUILD_ENV, spawnEntry, spawnTypeScript } from '../../src/cli/localProcess.ts';

const folders: string[] = [];

afterEach(async () => {
  for (const dir of folders.splice(0)) await rm(dir, { recursive: true, force: true });
});

async function childSees(env: NodeJS.ProcessEnv = {}): Promise<{ arenas?: string; execArgv: string[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'imgvault-child-env-'));
  folders.push(dir);
  const script = join(dir, 'report.ts');
  await writeFile(
    script,
    'console.log(JSON.stringify({ arenas: process.env.MALLOC_ARENA_MAX, execArgv: process.execArgv }));\n',
  );
  const logFile = join(dir, 'out.log');
  const child = spawnTypeScript(script, [], { logFile, env });
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  expect(code).toBe(0);
  return JSON.parse(await readFile(logFile, 'utf8'));
}

describe('the environment of a launched child', () => {
  it('limits glibc to two malloc arenas by default', { timeout: 90_000 }, async () => {
    const given = process.env.MALLOC_ARENA_MAX;
    delete process.env.MALLOC_ARENA_MAX;
    try {
      expect((await childSees()).arenas).toBe('2');
    } finally {
      if (given !== undefined) process.env.MALLOC_ARENA_MAX = given;
    }
  });

  it("keeps the caller's own MALLOC_ARENA_MAX", { timeout: 90_000 }, async () => {
    expect((await childSees({ MALLOC_ARENA_MAX: '4' })).arenas).toBe('4');
  });

  it('takes IMGVAULT_CHILD_NODE_ARGS as it is when the child starts', { timeout: 90_000 }, async () => {
    const before = process.env.IMGVAULT_CHILD_NODE_ARGS;
    process.env.IMGVAULT_CHILD_NODE_ARGS = '--expose-gc';
    try {
      expect((await childSees()).execArgv).toContain('--expose-gc');
    } finally {
      if (before === undefined) delete process.env.IMGVAULT_CHILD_NODE_ARGS;
      else process.env.IMGVAULT_CHILD_NODE_ARGS = before;
    }
  });

  it('runs the build in dist/ when asked to, without tsx', { timeout: 90_000 }, async () => {
    const before = process.env[CHILDREN_FROM_BUILD_ENV];
    process.env[CHILDREN_FROM_BUILD_ENV] = '1';
    try {
      const child = spawnEntry('main', ['--help']);
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      const [code] = (await once(child, 'exit')) as [number | null];
      clearTimeout(timer);
      // npm ci builds dist/ ("prepare"), so the entry exists wherever the suite runs.
      expect(code).toBe(0);
      expect(child.spawnargs).toContain(fileURLToPath(new URL('../../dist/main.mjs', import.meta.url)));
      expect(child.spawnargs.join(' ')).not.toContain('tsx');
    } finally {
      if (before === undefined) delete process.env[CHILDREN_FROM_BUILD_ENV];
      else process.env[CHILDREN_FROM_BUILD_ENV] = before;
    }
  });
});
