// The streamed metadata snapshot (format imgvault.metadata/2), read and written a line at a time so
// neither side ever holds more than a chunk of it, whatever the size of the tables:
//
//   {"format":"imgvault.metadata/2","appliedIndex":N}\n      header
//   ["<table>","<key>","<value>"]\n                           one per row, tables in TABLES order,
//   ...                                                        keys in LevelDB (UTF-8 byte) order
//   {"rows":R,"sha256":"<hex>"}\n                             trailer: sha256 over the row lines
//
// A row line is exactly what `digest()` in tables.ts hashes, so the trailer's sha256 equals the
// tables' digest at that index: a replica that installed it can be compared with the sender's.

import { z } from 'zod';

const NEWLINE = 0x0a;

/**
 * The lines of a byte stream (without their `\n`), decoded as UTF-8. A last line without its
 * `\n` is handed out too (the parser then finds it is not the trailer). Throws on a line longer
 * than `maxLineBytes`, so a stream with no newline cannot grow memory without bound.
 */
export async function* splitLines(
  source: AsyncIterable<Uint8Array>,
  maxLineBytes: number,
): AsyncGenerator<string> {
  for await (const lines of splitLineBatches(source, maxLineBytes)) yield* lines;
}

/**
 * `splitLines`, the lines of each chunk handed out together (the last line of a chunk completes
 * in the batch of the chunk that ends it). A chunk's whole lines are decoded in one go: a line is
 * never split inside a UTF-8 sequence, since `\n` is a byte no multi-byte sequence contains.
 */
export async function* splitLineBatches(
  source: AsyncIterable<Uint8Array>,
  maxLineBytes: number,
): AsyncGenerator<string[]> {
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of source) {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    const lines: string[] = [];
    const nl = buf.indexOf(NEWLINE);
    if (nl >= 0) {
      pending.push(buf.subarray(0, nl));
      lines.push(Buffer.concat(pending).toString('utf8'));
      pending = [];
      pendingBytes = 0;
      buf = buf.subarray(nl + 1);
      const last = buf.lastIndexOf(NEWLINE);
      if (last >= 0) {
        for (const line of buf.toString('utf8', 0, last).split('\n')) lines.push(line);
        buf = buf.subarray(last + 1);
      }
    }
    if (buf.length > 0) {
      pending.push(Buffer.from(buf));
      pendingBytes += buf.length;
    }
    if (pendingBytes > maxLineBytes)
      throw new Error(`metadata snapshot: a line is longer than ${maxLineBytes} bytes`);
    if (lines.length > 0) yield lines;
  }
  if (pendingBytes > 0) yield [Buffer.concat(pending).toString('utf8')];
}

const headerSchema = z.object({ format: z.string(), appliedIndex: z.number().int().nonnegative() });
const trailerSchema = z.object({
  rows: z.number().int().nonnegative(),
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
});

export type StreamLine =
  | { kind: 'row'; table: string; key: string; value: string }
  | { kind: 'trailer'; rows: number; sha256: string };

function parseJson(line: string): unknown {
  try {
    return JSON.parse(line);
  } catch {
    throw new Error('metadata snapshot: a line is not JSON');
  }
}

export function parseHeader(line: string | undefined): { format: string; appliedIndex: number } {
  if (line === undefined) throw new Error('metadata snapshot: empty stream');
  const parsed = headerSchema.safeParse(parseJson(line));
  if (!parsed.success) throw new Error('metadata snapshot: malformed header');
  return parsed.data;
}

/** A row (a JSON array) or the trailer (a JSON object): the first character tells them apart. */
export function parseLine(line: string): StreamLine {
  if (line.startsWith('[')) {
    // a row's shape, checked by hand: a zod schema took a large share of an install's time per row.
    const row = parseJson(line);
    if (
      !Array.isArray(row) ||
      row.length !== 3 ||
      typeof row[0] !== 'string' ||
      typeof row[1] !== 'string' ||
      typeof row[2] !== 'string'
    ) {
      throw new Error('metadata snapshot: malformed row');
    }
    return { kind: 'row', table: row[0], key: row[1], value: row[2] };
  }
  const parsed = trailerSchema.safeParse(parseJson(line));
  if (!parsed.success) throw new Error('metadata snapshot: malformed trailer');
  return { kind: 'trailer', ...parsed.data };
}

export function headerLine(appliedIndex: number, format: string): string {
  return `${JSON.stringify({ format, appliedIndex })}\n`;
}

export function trailerLine(rows: number, sha256: string): string {
  return `${JSON.stringify({ rows, sha256 })}\n`;
}
