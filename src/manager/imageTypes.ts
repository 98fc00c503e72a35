// Which uploads are images, decided from their first bytes before any is staged. file-type knows
// the common formats and the RAW formats it has signatures for; a TIFF header alone has to do for
// TIFFs (and the TIFF-based RAWs) whose first IFD lies past the bytes held, as file-type itself
// does on a stream when the IFD offset is past its probe budget.

import { FileTypeParser } from 'file-type';

/**
 * Image types we accept, by sniffed MIME type: the photographer's formats, RAWs included. SVG is
 * refused: it is a script-capable document.
 */
export const ACCEPTED_IMAGE_TYPES: ReadonlySet<string> = new Set([
  'image/jpeg',
  'image/png',
  'image/gif',
  'image/webp',
  'image/avif',
  'image/heic',
  'image/heif',
  'image/tiff',
  'image/bmp',
  'image/x-canon-cr2',
  'image/x-canon-cr3',
  'image/x-nikon-nef',
  'image/x-sony-arw',
  'image/x-adobe-dng',
  'image/x-olympus-orf',
  'image/x-panasonic-rw2',
  'image/x-fujifilm-raf',
  'image/x-sigma-x3f',
]);

/**
 * Leading bytes held before the type is known: enough for file-type's signatures. A TIFF's IFD may
 * sit at its very end (ImageMagick writes it after the pixel data), so no bounded prefix can hold
 * it; past this prefix the 8-byte TIFF header is what is checked.
 */
export const SNIFF_BYTES = 4100;

export type Sniffed = { ok: true; mime: string } | { ok: false; message: string };

/**
 * TIFF-family headers by byte order and magic (TIFF 6.0 section 2; BigTIFF; the Olympus ORF and
 * Panasonic RW2 variants of the magic, as ExifTool documents them).
 */
const TIFF_MAGICS: ReadonlyArray<{ order: 'II' | 'MM'; magic: number; mime: string }> = [
  { order: 'II', magic: 42, mime: 'image/tiff' },
  { order: 'MM', magic: 42, mime: 'image/tiff' },
  { order: 'II', magic: 43, mime: 'image/tiff' },
  { order: 'MM', magic: 43, mime: 'image/tiff' },
  { order: 'II', magic: 0x4f52, mime: 'image/x-olympus-orf' },
  { order: 'II', magic: 0x5352, mime: 'image/x-olympus-orf' },
  { order: 'MM', magic: 0x4f52, mime: 'image/x-olympus-orf' },
  { order: 'II', magic: 0x55, mime: 'image/x-panasonic-rw2' },
];

/** Sigma's X3F RAW, which file-type does not know and is no TIFF: its "FOVb" file header. */
const X3F_SIGNATURE = Buffer.from('FOVb', 'latin1');

/** The TIFF-family type of an 8-byte header whose first IFD offset points past the header. */
function tiffFamilyOf(head: Buffer): string | undefined {
  if (head.length < 8) return undefined;
  const order = head.toString('latin1', 0, 2);
  if (order !== 'II' && order !== 'MM') return undefined;
  const magic = order === 'II' ? head.readUInt16LE(2) : head.readUInt16BE(2);
  const ifdOffset = order === 'II' ? head.readUInt32LE(4) : head.readUInt32BE(4);
  const known = TIFF_MAGICS.find((t) => t.order === order && t.magic === magic);
  return known && (magic === 43 || ifdOffset >= 8) ? known.mime : undefined;
}

/**
 * Parsers kept between sniffs, rather than file-type's `fileTypeFromBuffer`, which builds one per
 * call. A parser's detectors are arrow functions in its fields, so each new parser brings new
 * closures of them, and V8 keeps a function's optimized code only while a closure of it lives: on a
 * busy leader every full garbage collection (one every few seconds at 1 MiB and concurrency 8)
 * dropped the optimized `detectConfident`, and the next upload paid for a compile of 60-130 ms
 * (docs/measurements.md). A parser holds one detection's state (its buffer and tokenizer) across
 * awaits, so each sniff takes a parser of its own and puts it back after; sniffs of a buffer end
 * within the same turn, so one or two parsers serve any load.
 */
const idleParsers: FileTypeParser[] = [];
const MAX_IDLE_PARSERS = 4;

async function detect(prefix: Buffer) {
  const parser = idleParsers.pop() ?? new FileTypeParser();
  try {
    return await parser.fromBuffer(prefix);
  } finally {
    if (idleParsers.length < MAX_IDLE_PARSERS) idleParsers.push(parser);
  }
}

/**
 * The accepted type of a body from its first bytes. `whole` says `head` is the entire body: a TIFF
 * whose IFD is not inside it is then truncated, not merely longer than the prefix.
 */
export async function sniffImageType(head: Buffer, whole: boolean): Promise<Sniffed> {
  const prefix = head.subarray(0, SNIFF_BYTES);
  const detected = await detect(prefix);
  if (detected && ACCEPTED_IMAGE_TYPES.has(detected.mime)) return { ok: true, mime: detected.mime };
  if (detected) return { ok: false, message: `${detected.mime} is not an accepted image type` };
  const tiff = whole ? undefined : tiffFamilyOf(prefix);
  if (tiff) return { ok: true, mime: tiff };
  if (prefix.length >= 8 && prefix.subarray(0, 4).equals(X3F_SIGNATURE)) {
    return { ok: true, mime: 'image/x-sigma-x3f' };
  }
  return { ok: false, message: 'content is not a recognised image' };
}
