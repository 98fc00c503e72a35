// The little XML S3 speaks: documents built from escaped strings, and the two request bodies a
// server reads (CompleteMultipartUpload, Delete), taken apart by element name. Both bodies are
// flat lists of small elements; no entity but the five predefined ones and character references.

export function xmlEscape(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

export function xmlUnescape(s: string): string {
  return s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|amp|lt|gt|quot|apos);/g, (_, ref: string) => {
    if (ref.startsWith('#x')) return String.fromCodePoint(Number.parseInt(ref.slice(2), 16));
    if (ref.startsWith('#')) return String.fromCodePoint(Number.parseInt(ref.slice(1), 10));
    return { amp: '&', lt: '<', gt: '>', quot: '"', apos: "'" }[ref]!;
  });
}

export const XML_HEADER = '<?xml version="1.0" encoding="UTF-8"?>\n';
export const S3_NS = 'http://s3.amazonaws.com/doc/2006-03-01/';

/** `<name>text</name>` with the text escaped. */
export function el(name: string, text: string | number | boolean): string {
  return `<${name}>${xmlEscape(String(text))}</${name}>`;
}

/** The inner text of every `<name>` element in `xml` (namespaced prefixes allowed), in order. */
export function elements(xml: string, name: string): string[] {
  const re = new RegExp(
    `<(?:[A-Za-z0-9]+:)?${name}(?:\\s[^>]*)?>([\\s\\S]*?)</(?:[A-Za-z0-9]+:)?${name}>`,
    'g',
  );
  return [...xml.matchAll(re)].map((m) => m[1]!);
}

/** The first `<name>` element's text, unescaped, or undefined. */
export function text(xml: string, name: string): string | undefined {
  const found = elements(xml, name)[0];
  return found === undefined ? undefined : xmlUnescape(found.trim());
}

/** S3's timestamps: ISO 8601 with milliseconds. */
export const isoTime = (ms: number): string => new Date(ms).toISOString();
