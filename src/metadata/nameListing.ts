// Listing a bucket's names by prefix and delimiter, paged by cursor, straight from LevelDB's key
// order: a page reads at most `limit` + 1 rows, and each common prefix costs one seek past it,
// never a walk over the names under it (S3's ListObjectsV2 semantics).

import type { NameView } from './commands.ts';
import { bucketPrefix, decodeName, prefixEnd, type TablesView } from './tables.ts';

/** Bound on one page of names and common prefixes together. */
export const MAX_NAME_PAGE = 1000;
/** A delimiter is short printable ASCII, so "past every key under a common prefix" is exact. */
export const DELIMITER_PATTERN = /^[\x21-\x7e]{1,16}$/;

export interface NameListOptions {
  prefix?: string;
  delimiter?: string;
  /** The previous page's `next`. */
  cursor?: string;
  /** 1..MAX_NAME_PAGE, default 1000. */
  limit?: number;
}

export interface NamePage {
  names: NameView[];
  /** Distinct key prefixes up to and including the delimiter, each listed once, in key order. */
  commonPrefixes: string[];
  /** Opaque: where the next page starts; null when this page reached the end. */
  next: string | null;
}

/** A cursor is the (bucket-relative) key the next page starts at, base64url-encoded. */
export function encodeCursor(startKey: string): string {
  return Buffer.from(startKey, 'utf8').toString('base64url');
}

export function decodeCursor(cursor: string): string | null {
  if (!/^[A-Za-z0-9_-]{1,2000}$/.test(cursor)) return null;
  const key = Buffer.from(cursor, 'base64url').toString('utf8');
  return encodeCursor(key) === cursor ? key : null;
}

/** LevelDB compares UTF-8 bytes, which JavaScript's `<` on UTF-16 does not always agree with. */
function byteMax(a: string, b: string): string {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8')) >= 0 ? a : b;
}

export async function listNamePage(
  view: TablesView,
  bucket: string,
  opts: NameListOptions & { limit: number; cursorKey: string | null },
): Promise<NamePage> {
  const base = bucketPrefix(bucket);
  const prefix = opts.prefix ?? '';
  const page: NamePage = { names: [], commonPrefixes: [], next: null };
  let start = opts.cursorKey === null ? prefix : byteMax(opts.cursorKey, prefix);
  // Each pass reads until the page is full, the prefix ends, or a common prefix needs a seek.
  for (let pass = 0; pass <= opts.limit; pass++) {
    let seekTo: string | null = null;
    let ended = true;
    for await (const [rowKey, value] of view.range('names', {
      gte: base + start,
      prefix: base + prefix,
      limit: opts.limit - page.names.length - page.commonPrefixes.length + 1,
    })) {
      const key = rowKey.slice(base.length);
      if (page.names.length + page.commonPrefixes.length === opts.limit) {
        page.next = encodeCursor(key);
        return page;
      }
      const at = opts.delimiter ? key.indexOf(opts.delimiter, prefix.length) : -1;
      if (opts.delimiter && at >= 0) {
        const common = key.slice(0, at + opts.delimiter.length);
        page.commonPrefixes.push(common);
        seekTo = prefixEnd(common);
        ended = false;
        break;
      }
      page.names.push({ bucket, key, ...decodeName(value) });
    }
    if (ended || seekTo === null) return page;
    start = seekTo;
  }
  return page;
}
