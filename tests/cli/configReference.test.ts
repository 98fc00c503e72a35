// docs/configuration.md is what the code says: regenerate it with `npm run docs:config`.

import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { renderConfigReference } from '../../src/cli/configReference.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const DOC = join(ROOT, 'docs/configuration.md');

async function sourceFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, { withFileTypes: true, recursive: true });
  return entries.filter((e) => e.isFile() && e.name.endsWith('.ts')).map((e) => join(e.parentPath, e.name));
}

describe('docs/configuration.md', () => {
  it('is the rendering of the code (run `npm run docs:config` when this fails)', async () => {
    const doc = await readFile(DOC, 'utf8');
    expect(doc, 'docs/configuration.md is stale: run `npm run docs:config`').toBe(
      await renderConfigReference(),
    );
  });

  it('names every IMGVAULT_* variable the source reads', async () => {
    const doc = await readFile(DOC, 'utf8');
    const named = new Set<string>();
    for (const file of await sourceFiles(join(ROOT, 'src'))) {
      for (const m of (await readFile(file, 'utf8')).matchAll(/IMGVAULT_[A-Z0-9]+(?:_[A-Z0-9]+)*/g))
        named.add(m[0]);
    }
    expect(named.size).toBeGreaterThan(20);
    const missing = [...named].filter((name) => !doc.includes(`\`${name}\``));
    expect(missing, 'variables missing from docs/configuration.md').toEqual([]);
  });
});
