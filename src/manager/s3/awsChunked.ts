// Decoding an `aws-chunked` body (x-amz-content-sha256: STREAMING-AWS4-HMAC-SHA256-PAYLOAD): each
// chunk is `<hex size>;chunk-signature=<sig>\r\n<bytes>\r\n`, the last one of size 0, and each
// signature chains on the previous one (the first on the request's own). A chunk is passed on only
// once its signature is checked, so no unverified byte reaches the store.
// https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-streaming.html

import { createHash, timingSafeEqual } from 'node:crypto';
import { S3Error } from './s3Errors.ts';
import type { ChunkSigner } from './sigV4.ts';

const EMPTY_SHA256 = createHash('sha256').digest('hex');
/** Bound on one chunk header line, and on one chunk (clients send 64 KiB to 8 MiB). */
const MAX_HEADER = 256;
const MAX_CHUNK = 16 * 1024 * 1024;

class Reader {
  private buffered: Buffer[] = [];
  private length = 0;
  private readonly it: AsyncIterator<Uint8Array>;

  constructor(source: AsyncIterable<Uint8Array>) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(): Promise<boolean> {
    const next = await this.it.next();
    if (next.done) return false;
    const b = Buffer.from(next.value);
    this.buffered.push(b);
    this.length += b.length;
    return true;
  }

  private flat(): Buffer {
    if (this.buffered.length > 1) this.buffered = [Buffer.concat(this.buffered)];
    return this.buffered[0] ?? Buffer.alloc(0);
  }

  private take(n: number): Buffer {
    const all = this.flat();
    const out = all.subarray(0, n);
    this.buffered = [all.subarray(n)];
    this.length -= n;
    return out;
  }

  async line(): Promise<string> {
    for (;;) {
      const at = this.flat().indexOf('\r\n');
      if (at >= 0) {
        const line = this.take(at).toString('latin1');
        this.take(2);
        return line;
      }
      if (this.length > MAX_HEADER) throw new S3Error('IncompleteBody', 'aws-chunked header line too long');
      if (!(await this.fill())) throw new S3Error('IncompleteBody', 'the aws-chunked body ended early');
    }
  }

  async exactly(n: number): Promise<Buffer> {
    while (this.length < n) {
      if (!(await this.fill())) throw new S3Error('IncompleteBody', 'the aws-chunked body ended early');
    }
    return Buffer.from(this.take(n));
  }
}

function same(a: string, b: string): boolean {
  return a.length === b.length && timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

export async function* decodeAwsChunked(
  source: AsyncIterable<Uint8Array>,
  seed: ChunkSigner,
): AsyncGenerator<Uint8Array> {
  const reader = new Reader(source);
  let previous = seed.signature;
  for (;;) {
    const header = /^([0-9a-fA-F]{1,8});chunk-signature=([0-9a-f]{64})$/.exec(await reader.line());
    if (!header) throw new S3Error('IncompleteBody', 'malformed aws-chunked chunk header');
    const size = Number.parseInt(header[1]!, 16);
    if (size > MAX_CHUNK) throw new S3Error('InvalidArgument', 'aws-chunked chunk too large');
    const data = await reader.exactly(size);
    if ((await reader.line()) !== '')
      throw new S3Error('IncompleteBody', 'aws-chunked chunk not followed by CRLF');
    const stringToSign = [
      'AWS4-HMAC-SHA256-PAYLOAD',
      seed.longDate,
      seed.scope,
      previous,
      EMPTY_SHA256,
      createHash('sha256').update(data).digest('hex'),
    ].join('\n');
    const expected = await seed.signString(stringToSign);
    if (!same(expected, header[2]!)) {
      throw new S3Error('SignatureDoesNotMatch', 'an aws-chunked chunk signature does not match');
    }
    previous = expected;
    if (size === 0) return;
    yield data;
  }
}
