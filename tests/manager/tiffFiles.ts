// Real TIFF files written in code, laid out as ImageMagick writes them: the 8-byte header, the pixel
// data, then the first IFD at the end of the file (TIFF 6.0, baseline RGB). LZW is the TIFF 6.0
// section 13 variant (MSB-first codes); the encoder sends every byte as a literal code and a Clear
// code before the table could grow past 9-bit codes, which every decoder reads as valid LZW.

export interface TiffOptions {
  order: 'II' | 'MM';
  width?: number;
  height?: number;
  bitsPerSample?: 8 | 16;
  lzw?: boolean;
  /** More tags for the IFD, e.g. DNGVersion (50706): value fits in 4 bytes. */
  extraTags?: Array<{ tag: number; type: number; count: number; value: number }>;
  /** Where the IFD goes: 'end' as ImageMagick writes it, or 'front' right after the header. */
  ifdAt?: 'end' | 'front';
}

const SHORT = 3;
const LONG = 4;
const CLEAR = 256;
const EOI = 257;
/** Literals sent between Clear codes: the table then reaches code 457, under the 9-bit switch at 511. */
const LITERALS_PER_CLEAR = 200;

/** TIFF LZW of `data` with literal codes only, 9 bits each, packed MSB first. */
export function lzwLiterals(data: Buffer): Buffer {
  const codes: number[] = [];
  for (let i = 0; i < data.length; i++) {
    if (i % LITERALS_PER_CLEAR === 0) codes.push(CLEAR);
    codes.push(data[i] as number);
  }
  codes.push(EOI);
  const out = Buffer.alloc(Math.ceil((codes.length * 9) / 8));
  let bit = 0;
  for (const code of codes) {
    for (let b = 8; b >= 0; b--, bit++) {
      if ((code >> b) & 1) out[bit >> 3] = (out[bit >> 3] as number) | (0x80 >> (bit & 7));
    }
  }
  return out;
}

function pixels(width: number, height: number, bits: 8 | 16, order: 'II' | 'MM'): Buffer {
  const bytesPerSample = bits / 8;
  const data = Buffer.alloc(width * height * 3 * bytesPerSample);
  for (let i = 0; i < width * height * 3; i++) {
    const v = (i * 7 + Math.floor(i / (width * 3)) * 13) % (bits === 8 ? 256 : 65536);
    if (bits === 8) data[i] = v;
    else if (order === 'II') data.writeUInt16LE((v * 251) % 65536, i * 2);
    else data.writeUInt16BE((v * 251) % 65536, i * 2);
  }
  return data;
}

/** A baseline RGB TIFF; 400x300 at 16 bits per sample is ImageMagick's 720 KB file. */
export function tiffFile(opts: TiffOptions): Buffer {
  const { order, width = 400, height = 300, bitsPerSample = 16, lzw = false, ifdAt = 'end' } = opts;
  const le = order === 'II';
  const raw = pixels(width, height, bitsPerSample, order);
  const strip = lzw ? lzwLiterals(raw) : raw;
  const tags = [
    { tag: 256, type: SHORT, count: 1, value: width },
    { tag: 257, type: SHORT, count: 1, value: height },
    { tag: 258, type: SHORT, count: 3, value: 0 }, // offset filled below
    { tag: 259, type: SHORT, count: 1, value: lzw ? 5 : 1 },
    { tag: 262, type: SHORT, count: 1, value: 2 },
    { tag: 273, type: LONG, count: 1, value: 0 }, // offset filled below
    { tag: 277, type: SHORT, count: 1, value: 3 },
    { tag: 278, type: SHORT, count: 1, value: height },
    { tag: 279, type: LONG, count: 1, value: strip.length },
    { tag: 284, type: SHORT, count: 1, value: 1 },
    ...(opts.extraTags ?? []),
  ].sort((a, b) => a.tag - b.tag);
  const ifdSize = 2 + tags.length * 12 + 4;
  // 'end': header, strip, IFD, BitsPerSample values; 'front': header, IFD, values, strip.
  const ifdOffset = ifdAt === 'front' ? 8 : 8 + strip.length;
  const stripOffset = ifdAt === 'front' ? 8 + ifdSize + 6 : 8;
  const bitsAt = ifdOffset + ifdSize;
  for (const t of tags) {
    if (t.tag === 258) t.value = bitsAt;
    if (t.tag === 273) t.value = stripOffset;
  }
  const file = Buffer.alloc(8 + strip.length + ifdSize + 6);
  const u16 = (v: number, at: number) => (le ? file.writeUInt16LE(v, at) : file.writeUInt16BE(v, at));
  const u32 = (v: number, at: number) => (le ? file.writeUInt32LE(v, at) : file.writeUInt32BE(v, at));
  file.write(order, 0, 'latin1');
  u16(42, 2);
  u32(ifdOffset, 4);
  strip.copy(file, stripOffset);
  u16(tags.length, ifdOffset);
  tags.forEach((t, n) => {
    const at = ifdOffset + 2 + n * 12;
    u16(t.tag, at);
    u16(t.type, at + 2);
    u32(t.count, at + 4);
    // A SHORT that fits is left-justified in the 4-byte value field, whatever the byte order.
    if (t.type === SHORT && t.count === 1) u16(t.value, at + 8);
    else u32(t.value, at + 8);
  });
  u32(0, ifdOffset + 2 + tags.length * 12);
  for (let s = 0; s < 3; s++) u16(bitsPerSample, bitsAt + s * 2);
  return file;
}
