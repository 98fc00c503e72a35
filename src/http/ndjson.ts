import type { Readable } from 'node:stream';

export class NdjsonLineTooLong extends Error {}

/**
 * Splits a byte stream into NDJSON lines without holding more than one line (bounded by
 * `maxLineBytes`) and one chunk in memory; blank lines are skipped.
 */
export async function* ndjsonLines(body: Readable, maxLineBytes: number): AsyncGenerator<string> {
  let pending = '';
  for await (const chunk of body) {
    pending += typeof chunk === 'string' ? chunk : (chunk as Buffer).toString('utf8');
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      const line = pending.slice(0, nl).trim();
      pending = pending.slice(nl + 1);
      if (line.length > 0) yield line;
      nl = pending.indexOf('\n');
    }
    if (pending.length > maxLineBytes)
      throw new NdjsonLineTooLong(`an NDJSON line exceeds ${maxLineBytes} bytes`);
  }
  const last = pending.trim();
  if (last.length > 0) yield last;
}
