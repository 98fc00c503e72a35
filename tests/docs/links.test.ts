// The README's and docs' links between our own pages hold: every relative link names a file of the
// checkout, and every `#anchor` a heading of the page it points at (slugged as GitHub does). A
// heading renamed without its links leaves readers at the top of a long page, as
// `operations.md#upgrading-managers` did for a while.

import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative } from 'node:path';
import GithubSlugger from 'github-slugger';
import { describe, expect, it } from 'vitest';

const ROOT = join(import.meta.dirname, '..', '..');
const PAGES = [
  'README.md',
  ...readdirSync(join(ROOT, 'docs'))
    .filter((f) => f.endsWith('.md'))
    .map((f) => `docs/${f}`),
];

/** The text outside fenced code blocks, where a `[x](y)` is not a link. */
function prose(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[^\n]*$/gm, '');
}

/** The anchors GitHub makes for a page's headings (duplicates get -1, -2, ... as there). */
function anchorsOf(markdown: string): Set<string> {
  const slugger = new GithubSlugger();
  const anchors = new Set<string>();
  for (const m of prose(markdown).matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) anchors.add(slugger.slug(m[1]!));
  return anchors;
}

/** Links to our own pages: `[text](target)`, without schemes, mail or absolute paths. */
function localLinks(markdown: string): string[] {
  const links: string[] = [];
  // Inline code may hold brackets that are not links.
  const text = prose(markdown).replace(/`[^`\n]*`/g, '');
  for (const m of text.matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
    const target = m[1]!;
    if (/^[a-z][a-z0-9+.-]*:/i.test(target) || target.startsWith('/')) continue;
    links.push(target);
  }
  return links;
}

describe('links between our own pages', () => {
  it('finds links to check (the scan itself works)', () => {
    const all = PAGES.flatMap((p) => localLinks(readFileSync(join(ROOT, p), 'utf8')));
    expect(all.length).toBeGreaterThan(10);
    expect(all.some((l) => l.includes('#'))).toBe(true);
  });

  it('slugs headings as GitHub does', () => {
    expect([...anchorsOf('## Worker loss, repair, rejoin, drain\n## A full manager disk (`507`)\n')]).toEqual(
      ['worker-loss-repair-rejoin-drain', 'a-full-manager-disk-507'],
    );
  });

  it.each(PAGES)('%s: every relative link and anchor resolves', (page) => {
    const from = dirname(join(ROOT, page));
    const text = readFileSync(join(ROOT, page), 'utf8');
    const broken: string[] = [];
    for (const link of localLinks(text)) {
      const [path = '', anchor] = link.split('#', 2);
      const target = path === '' ? join(ROOT, page) : join(from, decodeURIComponent(path));
      if (!existsSync(target)) {
        broken.push(`${link}: no file ${relative(ROOT, target)}`);
        continue;
      }
      if (anchor === undefined || !target.endsWith('.md')) continue;
      if (!anchorsOf(readFileSync(target, 'utf8')).has(decodeURIComponent(anchor))) {
        broken.push(`${link}: no heading with anchor #${anchor} in ${relative(ROOT, target)}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
