// AWS Signature Version 4 verification for the S3 endpoint: the server recomputes the signature of
// the request it received (headers or presigned query) with @smithy/signature-v4, the library the
// AWS SDKs sign with, over exactly the headers the client says it signed, and compares the two in
// constant time. Algorithm: https://docs.aws.amazon.com/IAM/latest/UserGuide/reference_sigv-create-signed-request.html

import { timingSafeEqual } from 'node:crypto';
import { Hash } from '@smithy/hash-node';
import { SignatureV4 } from '@smithy/signature-v4';
import { S3Error } from './s3Errors.ts';

/** A header-signed request older or newer than this is refused (S3's own bound). */
export const MAX_CLOCK_SKEW_MS = 15 * 60 * 1000;
/** S3 refuses presigned URLs valid for longer than a week. */
const MAX_PRESIGNED_SECONDS = 7 * 24 * 3600;

export const UNSIGNED_PAYLOAD = 'UNSIGNED-PAYLOAD';
export const STREAMING_PAYLOAD = 'STREAMING-AWS4-HMAC-SHA256-PAYLOAD';
const HEX_SHA256 = /^[0-9a-f]{64}$/;

export interface RawRequest {
  method: string;
  /** The path exactly as it came on the wire (percent-encoded), without the query. */
  rawPath: string;
  /** The query exactly as it came on the wire, without the `?`. */
  rawQuery: string;
  /** Lower-case names. */
  headers: Headers;
}

/** What a verified request may carry as body. */
export type PayloadMode =
  | { kind: 'unsigned' }
  | { kind: 'sha256'; sha256: string }
  | { kind: 'streaming'; seed: ChunkSigner };

/** Signs aws-chunked chunks one after the other, each over the previous signature. */
export interface ChunkSigner {
  signature: string;
  longDate: string;
  scope: string;
  signString(stringToSign: string): Promise<string>;
}

export interface Verified {
  accessKeyId: string;
  payload: PayloadMode;
}

export type SecretLookup = (accessKeyId: string) => Promise<string | null>;

/** Query parameters, decoded, as smithy expects them (it encodes them again canonically). */
export function parseQuery(rawQuery: string): Record<string, string | string[]> {
  const query: Record<string, string | string[]> = {};
  if (rawQuery === '') return query;
  for (const part of rawQuery.split('&')) {
    if (part === '') continue;
    const eq = part.indexOf('=');
    const key = decodeComponent(eq < 0 ? part : part.slice(0, eq));
    const value = eq < 0 ? '' : decodeComponent(part.slice(eq + 1));
    const had = query[key];
    query[key] = had === undefined ? value : Array.isArray(had) ? [...had, value] : [had, value];
  }
  return query;
}

function decodeComponent(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new S3Error('InvalidArgument', 'the query is not valid percent-encoding');
  }
}

/** `20240102T030405Z` -> Date, or null. */
function parseAmzDate(v: string | undefined): Date | null {
  const m = v === undefined ? null : /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(v);
  if (!m) return null;
  const [, y, mo, d, h, mi, s] = m;
  return new Date(Date.UTC(+y!, +mo! - 1, +d!, +h!, +mi!, +s!));
}

interface Credential {
  accessKeyId: string;
  shortDate: string;
  region: string;
  service: string;
}

function parseCredential(v: string): Credential {
  const parts = v.split('/');
  if (parts.length !== 5 || parts[4] !== 'aws4_request' || parts[3] !== 's3') {
    throw new S3Error(
      'AuthorizationHeaderMalformed',
      'the credential must be <key>/<date>/<region>/s3/aws4_request',
    );
  }
  const [accessKeyId, shortDate, region, service] = parts as [string, string, string, string];
  return { accessKeyId, shortDate, region, service };
}

function sameSignature(expected: string, given: string): boolean {
  const a = Buffer.from(expected, 'utf8');
  const b = Buffer.from(given, 'utf8');
  return a.length === b.length && timingSafeEqual(a, b);
}

function signer(accessKeyId: string, secretAccessKey: string, region: string): SignatureV4 {
  return new SignatureV4({
    credentials: { accessKeyId, secretAccessKey },
    region,
    service: 's3',
    sha256: Hash.bind(null, 'sha256'),
    // S3 signs the path as sent, not encoded a second time nor normalised.
    uriEscapePath: false,
    applyChecksum: false,
  });
}

function requestFor(req: RawRequest, signedHeaders: string[], query: Record<string, string | string[]>) {
  const headers: Record<string, string> = {};
  for (const name of signedHeaders) {
    const value = req.headers.get(name);
    if (value === null) throw new S3Error('AccessDenied', `signed header ${name} is missing`);
    headers[name] = value;
  }
  return {
    method: req.method,
    protocol: 'http:',
    hostname: req.headers.get('host') ?? '',
    path: req.rawPath,
    query,
    headers,
  };
}

async function secretOf(lookup: SecretLookup, accessKeyId: string): Promise<string> {
  const secret = await lookup(accessKeyId);
  if (secret === null) {
    throw new S3Error('InvalidAccessKeyId', 'the access key id does not exist in our records');
  }
  return secret;
}

const mismatch = () =>
  new S3Error(
    'SignatureDoesNotMatch',
    'the request signature we calculated does not match the signature you provided',
  );

/** Verifies a request signed in its Authorization header. */
async function verifyHeader(
  req: RawRequest,
  auth: string,
  lookup: SecretLookup,
  now: number,
): Promise<Verified> {
  const m =
    /^AWS4-HMAC-SHA256\s+Credential=([^,\s]+),\s*SignedHeaders=([a-z0-9;-]+),\s*Signature=([0-9a-f]{64})$/.exec(
      auth.trim(),
    );
  if (!m)
    throw new S3Error('AuthorizationHeaderMalformed', 'the Authorization header is not AWS4-HMAC-SHA256');
  const credential = parseCredential(m[1]!);
  const signedHeaders = m[2]!.split(';');
  const date = parseAmzDate(req.headers.get('x-amz-date') ?? undefined);
  if (date === null) throw new S3Error('AccessDenied', 'x-amz-date is missing or malformed');
  if (Math.abs(now - date.getTime()) > MAX_CLOCK_SKEW_MS) {
    throw new S3Error(
      'RequestTimeTooSkewed',
      'the difference between the request time and the server time is too large',
    );
  }
  const payloadHash = req.headers.get('x-amz-content-sha256');
  if (payloadHash === null || !signedHeaders.includes('x-amz-content-sha256')) {
    throw new S3Error('InvalidRequest', 'x-amz-content-sha256 must be sent and signed');
  }
  const secret = await secretOf(lookup, credential.accessKeyId);
  const sigv4 = signer(credential.accessKeyId, secret, credential.region);
  const signed = await sigv4.sign(requestFor(req, signedHeaders, parseQuery(req.rawQuery)), {
    signingDate: date,
    signingRegion: credential.region,
    signableHeaders: new Set(signedHeaders),
  });
  const ours = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))?.[1] ?? '';
  if (!sameSignature(ours, m[3]!)) throw mismatch();
  return {
    accessKeyId: credential.accessKeyId,
    payload: payloadMode(payloadHash, ours, date, credential, sigv4),
  };
}

function payloadMode(
  value: string,
  seedSignature: string,
  date: Date,
  credential: Credential,
  sigv4: SignatureV4,
): PayloadMode {
  if (value === UNSIGNED_PAYLOAD) return { kind: 'unsigned' };
  if (HEX_SHA256.test(value)) return { kind: 'sha256', sha256: value };
  if (value === STREAMING_PAYLOAD) {
    const longDate = date
      .toISOString()
      .replace(/[-:]/g, '')
      .replace(/\.\d{3}/, '');
    const scope = `${credential.shortDate}/${credential.region}/s3/aws4_request`;
    return {
      kind: 'streaming',
      seed: {
        signature: seedSignature,
        longDate,
        scope,
        signString: (s) => sigv4.sign(s, { signingDate: date, signingRegion: credential.region }),
      },
    };
  }
  throw new S3Error('InvalidArgument', `x-amz-content-sha256 ${value} is not supported`);
}

/** Verifies a presigned URL (query-string authentication). */
async function verifyPresigned(
  req: RawRequest,
  query: Record<string, string | string[]>,
  lookup: SecretLookup,
  now: number,
): Promise<Verified> {
  const one = (name: string) => {
    const v = query[name];
    if (typeof v !== 'string') throw new S3Error('AuthorizationHeaderMalformed', `${name} is missing`);
    return v;
  };
  if (one('X-Amz-Algorithm') !== 'AWS4-HMAC-SHA256') {
    throw new S3Error('AuthorizationHeaderMalformed', 'X-Amz-Algorithm must be AWS4-HMAC-SHA256');
  }
  const credential = parseCredential(one('X-Amz-Credential'));
  const date = parseAmzDate(one('X-Amz-Date'));
  const expires = Number(one('X-Amz-Expires'));
  if (date === null || !Number.isInteger(expires) || expires < 1 || expires > MAX_PRESIGNED_SECONDS) {
    throw new S3Error('AuthorizationHeaderMalformed', 'X-Amz-Date or X-Amz-Expires is malformed');
  }
  if (now > date.getTime() + expires * 1000 || now < date.getTime() - MAX_CLOCK_SKEW_MS) {
    throw new S3Error('AccessDenied', 'request has expired');
  }
  const signedHeaders = one('X-Amz-SignedHeaders').split(';');
  const given = one('X-Amz-Signature');
  const secret = await secretOf(lookup, credential.accessKeyId);
  const sigv4 = signer(credential.accessKeyId, secret, credential.region);
  // presign() adds the X-Amz-* authentication parameters itself: hand it the rest of the query.
  const rest = Object.fromEntries(
    Object.entries(query).filter(
      ([k]) =>
        ![
          'X-Amz-Algorithm',
          'X-Amz-Credential',
          'X-Amz-Date',
          'X-Amz-Expires',
          'X-Amz-SignedHeaders',
          'X-Amz-Signature',
        ].includes(k),
    ),
  );
  const request = requestFor(req, signedHeaders, rest);
  const payload =
    typeof query['X-Amz-Content-Sha256'] === 'string' ? query['X-Amz-Content-Sha256'] : UNSIGNED_PAYLOAD;
  // Signed headers stay headers (nothing is hoisted into the query: the client did not do it).
  const presigned = await sigv4.presign(
    { ...request, headers: { ...request.headers, 'x-amz-content-sha256': payload } },
    {
      signingDate: date,
      expiresIn: expires,
      signingRegion: credential.region,
      unhoistableHeaders: new Set(
        signedHeaders.filter((h) => h.startsWith('x-amz-')).concat('x-amz-content-sha256'),
      ),
      signableHeaders: new Set(signedHeaders),
      unsignableHeaders: new Set(['x-amz-content-sha256'].filter((h) => !signedHeaders.includes(h))),
    },
  );
  const ours = String(presigned.query?.['X-Amz-Signature'] ?? '');
  if (!sameSignature(ours, given)) throw mismatch();
  return {
    accessKeyId: credential.accessKeyId,
    payload: HEX_SHA256.test(payload) ? { kind: 'sha256', sha256: payload } : { kind: 'unsigned' },
  };
}

/** Verifies `req`'s signature, throwing the S3Error S3 would answer with. */
export async function verifySigV4(
  req: RawRequest,
  lookup: SecretLookup,
  now = Date.now(),
): Promise<Verified> {
  const auth = req.headers.get('authorization');
  if (auth !== null) return verifyHeader(req, auth, lookup, now);
  const query = parseQuery(req.rawQuery);
  if (query['X-Amz-Signature'] !== undefined) return verifyPresigned(req, query, lookup, now);
  throw new S3Error('AccessDenied', 'anonymous requests are not accepted: sign with an access key');
}
