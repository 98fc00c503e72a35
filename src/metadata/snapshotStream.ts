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
  let pending: Buffer[] = [];
  let pendingBytes = 0;
  for await (const chunk of source) {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    let nl = buf.indexOf(NEWLINE);
    while (nl >= 0) {
      pending.push(buf.subarray(0, nl));
      yield Buffer.concat(pending).toString('utf8');
      pending = [];
      pendingBytes = 0;
      buf = buf.subarray(nl + 1);
      nl = buf.indexOf(NEWLINE);
    }
    if (buf.length > 0) {
      pending.push(Buffer.from(buf));
      pendingBytes += buf.length;
    }
    if (pendingBytes > maxLineBytes)
      throw new Error(`metadata snapshot: a line is longer than ${maxLineBytes} bytes`);
  }
  if (pendingBytes > 0) yield Buffer.concat(pending).toString('utf8');
}

const headerSchema = z.object({ format: z.string(), appliedIndex: z.number().int().nonnegative() });
const rowSchema = z.tuple([z.string(), z.string(), z.string()]);
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
    const parsed = rowSchema.safeParse(parseJson(line));
    if (!parsed.success) throw new Error('metadata snapshot: malformed row');
    const [table, key, value] = parsed.data;
    return { kind: 'row', table, key, value };
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
