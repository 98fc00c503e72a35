import { describe, expect, it } from 'vitest';
import { sniffImageType } from '../../src/manager/imageTypes.ts';
import { tiffFile } from './tiffFiles.ts';

// A real 1x1 PNG: the signature, IHDR, IDAT and IEND chunks.
const PNG = Buffer.from(
  'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==',
  'base64',
);
// A real 1x1 GIF89a.
const GIF = Buffer.from('R0lGODlhAQABAIAAAP///wAAACH5BAEAAAAALAAAAAABAAEAAAICRAEAOw==', 'base64');
// The start of a JFIF JPEG: SOI, then the APP0 segment.
const JPEG = Buffer.concat([
  Buffer.from([0xff, 0xd8, 0xff, 0xe0, 0x00, 0x10]),
  Buffer.from('JFIF\0', 'latin1'),
  Buffer.from([0x01, 0x01, 0x00, 0x00, 0x01, 0x00, 0x01, 0x00, 0x00]),
  Buffer.alloc(200, 0x20),
]);
const PDF = Buffer.from('%PDF-1.7\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<< /Type /Catalog >>\nendobj\n', 'latin1');
const TEXT = Buffer.from('just some words, no signature at all\n'.repeat(8));

const CASES: ReadonlyArray<{
  name: string;
  body: Buffer;
  expected: Awaited<ReturnType<typeof sniffImageType>>;
}> = [
  { name: 'png', body: PNG, expected: { ok: true, mime: 'image/png' } },
  { name: 'gif', body: GIF, expected: { ok: true, mime: 'image/gif' } },
  { name: 'jpeg', body: JPEG, expected: { ok: true, mime: 'image/jpeg' } },
  {
    name: 'tiff',
    body: tiffFile({ order: 'II', ifdAt: 'front' }),
    expected: { ok: true, mime: 'image/tiff' },
  },
  {
    name: 'pdf',
    body: PDF,
    expected: { ok: false, message: 'application/pdf is not an accepted image type' },
  },
  { name: 'text', body: TEXT, expected: { ok: false, message: 'content is not a recognised image' } },
];

describe('sniffImageType', () => {
  it.each(CASES)('tells a $name body by its first bytes', async ({ body, expected }) => {
    expect(await sniffImageType(body, true)).toEqual(expected);
  });

  it('gives each of many sniffs started at once the type of its own bytes', async () => {
    // Parsers are reused between sniffs; sniffs that overlap must never share one's state.
    for (let round = 0; round < 3; round++) {
      const order = [...CASES, ...CASES.slice().reverse(), ...CASES];
      const got = await Promise.all(order.map((c) => sniffImageType(c.body, true)));
      expect(got).toEqual(order.map((c) => c.expected));
    }
  });
});
