// The layer check `npm test` runs (npm run lint:layers, .dependency-cruiser.cjs): each rule, run
// on a small tree that breaks it, fails naming the rule, and the same tree without the bad import
// passes, so a rule that matched nothing would show here.

import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, expect, it } from 'vitest';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const CONFIG = join(ROOT, '.dependency-cruiser.cjs');
const DEPCRUISE = join(ROOT, 'node_modules', 'dependency-cruiser', 'bin', 'dependency-cruise.mjs');

/** One module a folder, each exporting a constant; `imports` names the extra edges to add. */
const BASE_TREE: Record<string, string[]> = {
  'src/consensus/raft.ts': [],
  'src/metadata/tables.ts': ['../consensus/raft.ts'],
  'src/protocol/wire.ts': [],
  'src/logging.ts': [],
  'src/http/kit.ts': ['../protocol/wire.ts'],
  'src/manager/leader.ts': ['../metadata/tables.ts', '../http/kit.ts', '../protocol/wire.ts'],
  'src/manager/spool.ts': ['./leader.ts'],
  'src/storagenode/worker.ts': ['../metadata/tables.ts', '../protocol/wire.ts'],
  'src/cli/main.ts': ['../manager/leader.ts', '../storagenode/worker.ts'],
};

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
  dir = undefined;
});

async function cruise(extra: Record<string, string>): Promise<{ code: number; output: string }> {
  dir = await mkdtemp(join(tmpdir(), 'imgvault-layers-'));
  await writeFile(
    join(dir, 'tsconfig.json'),
    JSON.stringify({ compilerOptions: { allowImportingTsExtensions: true } }),
  );
  for (const [file, imports] of Object.entries(BASE_TREE)) {
    const more = extra[file] ? [extra[file]] : [];
    const lines = [...imports, ...more].map((to, i) => `import { x as x${i} } from '${to}';`);
    await mkdir(dirname(join(dir, file)), { recursive: true });
    await writeFile(join(dir, file), `${lines.join('\n')}\nexport const x = 1;\n`);
  }
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [DEPCRUISE, 'src', '--config', CONFIG],
      { cwd: dir, timeout: 60_000 },
      (err, stdout, stderr) => {
        const code = err ? (typeof err.code === 'number' ? err.code : -1) : 0;
        resolve({ code, output: stdout + stderr });
      },
    );
  });
}

it('passes a tree whose imports all point down', async () => {
  const { code, output } = await cruise({});
  expect(output).toContain('no dependency violations');
  expect(code).toBe(0);
});

it.each([
  ['nothing-imports-cli', 'src/storagenode/worker.ts', '../cli/main.ts'],
  ['manager-and-worker-meet-on-the-wire', 'src/manager/leader.ts', '../storagenode/worker.ts'],
  ['metadata-is-below-the-processes', 'src/metadata/tables.ts', '../manager/leader.ts'],
  ['consensus-is-the-bottom-layer', 'src/consensus/raft.ts', '../metadata/tables.ts'],
  ['kit-and-wire-import-no-layer', 'src/http/kit.ts', '../consensus/raft.ts'],
  ['kit-and-wire-import-no-layer', 'src/protocol/wire.ts', '../metadata/tables.ts'],
  ['kit-and-wire-import-no-layer', 'src/logging.ts', './manager/leader.ts'],
  ['no-cycles', 'src/manager/leader.ts', './spool.ts'],
])('fails on %s (%s imports %s)', async (rule, file, to) => {
  const { code, output } = await cruise({ [file]: to });
  expect(output).toContain(`error ${rule}:`);
  expect(code).not.toBe(0);
});
