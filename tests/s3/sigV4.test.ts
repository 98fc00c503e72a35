// SigV4 verification against requests signed by @smithy/signature-v4 as a client signs them: the
// right signature passes; a changed byte of what was signed, a wrong secret, an unknown key, a
// stale date and an expired presigned URL are refused with S3's codes; aws-chunked chunks are
// checked one by one.

import { createHash } from 'node:crypto';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { describe, expect, it } from 'vitest';
import { decodeAwsChunked } from '../../src/manager/s3/awsChunked.ts';
import { S3Error } from '../../src/manager/s3/s3Errors.ts';
import { type RawRequest, verifySigV4 } from '../../src/manager/s3/sigV4.ts';

const KEY = {
  accessKeyId: 'IVAAAAAAAAAAAAAAAAAA',
  secretAccessKey: 'c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0LXM=',
};
const lookup = async (id: string) => (id === KEY.accessKeyId ? KEY.secretAccessKey : null);

function clientSigner(secret = KEY.secretAccessKey) {
  return new SignatureV4({
    credentials: { accessKeyId: KEY.accessKeyId, secretAccessKey: secret },
    region: 'us-east-1',
    service: 's3',
    sha256: Hash.bind(null, 'sha256'),
    uriEscapePath: false,
  });
}

const HOST = '127.0.0.1:19201';

async function signed(
  opts: {
    method?: string;
    path?: string;
    query?: Record<string, string>;
    payload?: string;
    secret?: string;
    date?: Date;
  } = {},
): Promise<RawRequest> {
  const body = Buffer.from('hello');
  const payload = opts.payload ?? createHash('sha256').update(body).digest('hex');
  const req = await clientSigner(opts.secret).sign(
    {
      method: opts.method ?? 'PUT',
      protocol: 'http:',
      hostname: '127.0.0.1',
      port: 19201,
      path: opts.path ?? '/photos/2024/IMG%20001.jpg',
      query: opts.query ?? {},
      headers: { host: HOST, 'x-amz-content-sha256': payload, 'content-type': 'image/jpeg' },
    },
    { signingDate: opts.date ?? new Date() },
  );
  const rawQuery = new URLSearchParams(opts.query ?? {}).toString().replace(/\+/g, '%20');
  return {
    method: req.method,
    rawPath: req.path,
    rawQuery,
    headers: new Headers(req.headers as Record<string, string>),
  };
}

async function refusal(p: Promise<unknown>): Promise<string> {
  try {
    await p;
  } catch (err) {
    if (err instanceof S3Error) return err.code;
    throw err;
  }
  return 'accepted';
}

describe('SigV4 in the Authorization header', () => {
  it('accepts what the SDK signed, with the payload hash it declared', async () => {
    const req = await signed({ query: { partNumber: '1', uploadId: 'a b' } });
    const ok = await verifySigV4(req, lookup);
    expect(ok.accessKeyId).toBe(KEY.accessKeyId);
    expect(ok.payload).toEqual({ kind: 'sha256', sha256: req.headers.get('x-amz-content-sha256') });
  });

  it('refuses a changed path, header or query, a wrong secret, an unknown key, a stale date', async () => {
    const req = await signed();
    expect(await refusal(verifySigV4({ ...req, rawPath: '/photos/other.jpg' }, lookup))).toBe(
      'SignatureDoesNotMatch',
    );
    const headers = new Headers(req.headers);
    headers.set('content-type', 'image/png');
    expect(await refusal(verifySigV4({ ...req, headers }, lookup))).toBe('SignatureDoesNotMatch');
    expect(await refusal(verifySigV4({ ...req, rawQuery: 'acl=' }, lookup))).toBe('SignatureDoesNotMatch');
    expect(
      await refusal(
        verifySigV4(await signed({ secret: 'd3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldC13cm9u' }), lookup),
      ),
    ).toBe('SignatureDoesNotMatch');
    expect(await refusal(verifySigV4(req, async () => null))).toBe('InvalidAccessKeyId');
    const old = await signed({ date: new Date(Date.now() - 16 * 60 * 1000) });
    expect(await refusal(verifySigV4(old, lookup))).toBe('RequestTimeTooSkewed');
    const unsigned = { ...req, headers: new Headers({ host: HOST }) };
    expect(await refusal(verifySigV4(unsigned, lookup))).toBe('AccessDenied');
  });
});

describe('presigned URLs', () => {
  async function presigned(expiresIn: number, date = new Date()): Promise<RawRequest> {
    const req = await clientSigner().presign(
      {
        method: 'GET',
        protocol: 'http:',
        hostname: '127.0.0.1',
        port: 19201,
        path: '/photos/a.jpg',
        query: {},
        headers: { host: HOST, 'x-amz-content-sha256': 'UNSIGNED-PAYLOAD' },
      },
      // As the SDKs' S3 presigner does: the payload is UNSIGNED-PAYLOAD, a header never signed.
      {
        signingDate: date,
        expiresIn,
        unsignableHeaders: new Set(['x-amz-content-sha256']),
        unhoistableHeaders: new Set(['x-amz-content-sha256']),
      },
    );
    const rawQuery = Object.entries(req.query ?? {})
      .map(([k, v]) => `${encodeURIComponent(k)}=${encodeURIComponent(String(v))}`)
      .join('&');
    return { method: 'GET', rawPath: '/photos/a.jpg', rawQuery, headers: new Headers({ host: HOST }) };
  }

  it('accepts a valid one and refuses it altered or expired', async () => {
    const ok = await presigned(300);
    expect((await verifySigV4(ok, lookup)).payload).toEqual({ kind: 'unsigned' });
    expect(await refusal(verifySigV4({ ...ok, rawPath: '/photos/b.jpg' }, lookup))).toBe(
      'SignatureDoesNotMatch',
    );
    const expired = await presigned(60, new Date(Date.now() - 5 * 60 * 1000));
    expect(await refusal(verifySigV4(expired, lookup))).toBe('AccessDenied');
  });
});

describe('aws-chunked bodies', () => {
  async function chunkedBody(chunks: Buffer[], tamper = false): Promise<{ req: RawRequest; body: Buffer }> {
    const date = new Date();
    const req = await signed({ payload: 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD', date });
    const seed = /Signature=([0-9a-f]{64})/.exec(req.headers.get('authorization')!)![1]!;
    const signer = clientSigner();
    const longDate = date
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '');
    const scope = `${longDate.slice(0, 8)}/us-east-1/s3/aws4_request`;
    const empty = createHash('sha256').digest('hex');
    let previous = seed;
    const parts: Buffer[] = [];
    for (const data of [...chunks, Buffer.alloc(0)]) {
      const toSign = [
        'AWS4-HMAC-SHA256-PAYLOAD',
        longDate,
        scope,
        previous,
        empty,
        createHash('sha256').update(data).digest('hex'),
      ].join('\n');
      const sig = await signer.sign(toSign, { signingDate: date });
      parts.push(
        Buffer.from(`${data.length.toString(16)};chunk-signature=${sig}\r\n`),
        tamper ? Buffer.from(data.map((b) => b ^ 1)) : data,
        Buffer.from('\r\n'),
      );
      previous = sig;
    }
    return { req, body: Buffer.concat(parts) };
  }

  async function decode(req: RawRequest, body: Buffer): Promise<Buffer> {
    const verified = await verifySigV4(req, lookup);
    if (verified.payload.kind !== 'streaming') throw new Error('not streaming');
    const out: Uint8Array[] = [];
    // Fed in odd slices, as the network would.
    async function* slices() {
      for (let i = 0; i < body.length; i += 7) yield body.subarray(i, i + 7);
    }
    for await (const c of decodeAwsChunked(slices(), verified.payload.seed)) out.push(c);
    return Buffer.concat(out);
  }

  it('passes signed chunks through and refuses a changed one', async () => {
    const chunks = [Buffer.alloc(100, 1), Buffer.from('second chunk')];
    const good = await chunkedBody(chunks);
    expect((await decode(good.req, good.body)).equals(Buffer.concat(chunks))).toBe(true);
    const bad = await chunkedBody(chunks, true);
    expect(await refusal(decode(bad.req, bad.body))).toBe('SignatureDoesNotMatch');
  });
});
