// S3's bucket operations on the names' buckets: ListBuckets, CreateBucket, HeadBucket,
// DeleteBucket, GetBucketLocation, and ListObjects (V2 and the V1 s3cmd still uses) mapped onto
// the names listing (prefix, delimiter, cursor).

import { encodeCursor } from '../../metadata/nameListing.ts';
import { NameError, type NameService } from '../nameService.ts';
import { S3Error } from './s3Errors.ts';
import { etagOf } from './s3Objects.ts';
import { queryValue, type S3Request } from './s3Request.ts';
import { el, isoTime, S3_NS } from './s3Xml.ts';

/** The owner every bucket and object reports: the cluster has one tenant. */
const OWNER = `<Owner>${el('ID', 'imgvault')}${el('DisplayName', 'imgvault')}</Owner>`;

export async function listBuckets(names: NameService): Promise<string> {
  const buckets = (await names.listBuckets())
    .map((b) => `<Bucket>${el('Name', b.bucket)}${el('CreationDate', isoTime(b.createdAt))}</Bucket>`)
    .join('');
  return `<ListAllMyBucketsResult xmlns="${S3_NS}">${OWNER}<Buckets>${buckets}</Buckets></ListAllMyBucketsResult>`;
}

export async function createBucket(names: NameService, bucket: string): Promise<void> {
  try {
    const { created } = await names.createBucket(bucket);
    if (!created) throw new S3Error('BucketAlreadyOwnedByYou', `bucket ${bucket} exists and is yours`);
  } catch (err) {
    if (err instanceof NameError && err.code === 'InvalidName')
      throw new S3Error('InvalidBucketName', err.message);
    throw err;
  }
}

function maxKeys(req: S3Request): number {
  const raw = queryValue(req.query, 'max-keys');
  if (raw === undefined) return 1000;
  if (!/^\d{1,9}$/.test(raw)) throw new S3Error('InvalidArgument', 'max-keys must be a non-negative integer');
  return Math.min(1000, Math.max(1, Number(raw)));
}

/** A cursor starting strictly after `key` (no key holds a control character: commands.ts). */
function cursorAfter(key: string, delimiter: string | undefined): string {
  if (delimiter && key.endsWith(delimiter)) {
    // A common prefix: skip every key under it (delimiters are printable ASCII).
    const last = key.charCodeAt(key.length - 1);
    return encodeCursor(key.slice(0, -1) + String.fromCharCode(last + 1));
  }
  return encodeCursor(`${key}\u0001`);
}

function encoder(req: S3Request): (s: string) => string {
  // encoding-type=url: aws-cli asks for it and decodes what it gets back.
  return queryValue(req.query, 'encoding-type') === 'url'
    ? (s) => encodeURIComponent(s).replace(/%2F/g, '/')
    : (s) => s;
}

interface Listed {
  names: Awaited<ReturnType<NameService['list']>>['names'];
  commonPrefixes: string[];
  next: string | null;
}

function contentsXml(page: Listed, enc: (s: string) => string): string {
  const contents = page.names
    .map(
      (n) =>
        `<Contents>${el('Key', enc(n.key))}${el('LastModified', isoTime(n.mtime))}` +
        `${el('ETag', `"${etagOf(n)}"`)}${el('Size', n.size)}${el('StorageClass', 'STANDARD')}</Contents>`,
    )
    .join('');
  const prefixes = page.commonPrefixes
    .map((p) => `<CommonPrefixes>${el('Prefix', enc(p))}</CommonPrefixes>`)
    .join('');
  return contents + prefixes;
}

export async function listObjectsV2(names: NameService, req: S3Request, bucket: string): Promise<string> {
  const prefix = queryValue(req.query, 'prefix') ?? '';
  const delimiter = queryValue(req.query, 'delimiter') || undefined;
  const token = queryValue(req.query, 'continuation-token');
  const startAfter = queryValue(req.query, 'start-after');
  const limit = maxKeys(req);
  const cursor = token ?? (startAfter ? cursorAfter(startAfter, undefined) : undefined);
  const page = await list(names, bucket, { prefix, delimiter, cursor, limit });
  const enc = encoder(req);
  return (
    `<ListBucketResult xmlns="${S3_NS}">${el('Name', bucket)}${el('Prefix', enc(prefix))}` +
    (delimiter ? el('Delimiter', enc(delimiter)) : '') +
    `${el('MaxKeys', limit)}${el('KeyCount', page.names.length + page.commonPrefixes.length)}` +
    `${el('IsTruncated', page.next !== null)}` +
    (token !== undefined ? el('ContinuationToken', token) : '') +
    (page.next !== null ? el('NextContinuationToken', page.next) : '') +
    (startAfter !== undefined ? el('StartAfter', enc(startAfter)) : '') +
    (queryValue(req.query, 'encoding-type') === 'url' ? el('EncodingType', 'url') : '') +
    `${contentsXml(page, enc)}</ListBucketResult>`
  );
}

export async function listObjectsV1(names: NameService, req: S3Request, bucket: string): Promise<string> {
  const prefix = queryValue(req.query, 'prefix') ?? '';
  const delimiter = queryValue(req.query, 'delimiter') || undefined;
  const marker = queryValue(req.query, 'marker') ?? '';
  const limit = maxKeys(req);
  const cursor = marker === '' ? undefined : cursorAfter(marker, delimiter);
  const page = await list(names, bucket, { prefix, delimiter, cursor, limit });
  const enc = encoder(req);
  const lastKey = page.names.at(-1)?.key ?? '';
  const lastPrefix = page.commonPrefixes.at(-1) ?? '';
  const nextMarker = [lastKey, lastPrefix].sort().at(-1) ?? '';
  return (
    `<ListBucketResult xmlns="${S3_NS}">${el('Name', bucket)}${el('Prefix', enc(prefix))}` +
    `${el('Marker', enc(marker))}${el('MaxKeys', limit)}` +
    (delimiter ? el('Delimiter', enc(delimiter)) : '') +
    `${el('IsTruncated', page.next !== null)}` +
    (page.next !== null ? el('NextMarker', enc(nextMarker)) : '') +
    `${contentsXml(page, enc)}</ListBucketResult>`
  );
}

async function list(
  names: NameService,
  bucket: string,
  opts: { prefix: string; delimiter: string | undefined; cursor: string | undefined; limit: number },
): Promise<Listed> {
  await names.requireBucket(bucket);
  try {
    return await names.list(bucket, {
      prefix: opts.prefix,
      limit: opts.limit,
      ...(opts.delimiter !== undefined ? { delimiter: opts.delimiter } : {}),
      ...(opts.cursor !== undefined ? { cursor: opts.cursor } : {}),
    });
  } catch (err) {
    if (err instanceof NameError && err.code === 'InvalidQuery')
      throw new S3Error('InvalidArgument', err.message);
    throw err;
  }
}
