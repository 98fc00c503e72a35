// S3's object operations on names: PutObject, GetObject (with Range), HeadObject, DeleteObject,
// DeleteObjects and CopyObject. Bodies are spooled on the leader first (s3Spool.ts) so the content
// id is known before a byte is stored; content the cluster holds already is only named.

import { createHash } from 'node:crypto';
import { releaseAfterWritten } from '../../http/readBuffers.ts';
import { webStreamOf } from '../../http/webStream.ts';
import type { NameView } from '../../metadata/commands.ts';
import { ETAG_PATTERN } from '../../metadata/commands.ts';
import type { ImageService } from '../imageService.ts';
import { NameError, type NameService, type PutOutcome } from '../nameService.ts';
import { S3Error } from './s3Errors.ts';
import { type S3Request, splitPath } from './s3Request.ts';
import { fileChunks, type S3Spool, type SpooledFile } from './s3Spool.ts';
import { el, elements, isoTime, S3_NS, XML_HEADER, xmlUnescape } from './s3Xml.ts';

export interface ObjectDeps {
  names: NameService;
  images: ImageService;
  spool: S3Spool;
}

/** What the router calls for a request on one object name (s3Router.ts objectOperation). */
export type ObjectOperation = (
  deps: ObjectDeps,
  req: S3Request,
  bucket: string,
  key: string,
) => Promise<Response>;

/** A name a PutObject or CreateMultipartUpload may write: valid, in a bucket that exists. */
export async function requireWritableName(deps: ObjectDeps, bucket: string, key: string): Promise<void> {
  deps.names.validate(bucket, key);
  await deps.names.requireBucket(bucket);
}

/** Bound on a DeleteObjects or CompleteMultipartUpload request body. */
export const MAX_XML_BODY = 2 * 1024 * 1024;

/** S3's ETag of a name: the one recorded, or (names put before S3) one that no client takes for an MD5. */
export function etagOf(n: Pick<NameView, 'etag' | 'sha256'>): string {
  return n.etag !== undefined && ETAG_PATTERN.test(n.etag) ? n.etag : `${n.sha256.slice(0, 32)}-1`;
}

/**
 * The modification time a client sent: rclone's `x-amz-meta-mtime` (seconds, fractional), s3cmd's
 * `x-amz-meta-s3cmd-attrs` (`.../mtime:<seconds>/...`); otherwise now (what aws-cli compares).
 */
export function mtimeOf(headers: Headers, now = Date.now()): number {
  const rclone = headers.get('x-amz-meta-mtime');
  if (rclone !== null && /^\d{1,12}(\.\d{1,9})?$/.test(rclone.trim())) {
    return Math.floor(Number(rclone.trim()) * 1000);
  }
  const s3cmd = /(?:^|\/)mtime:(\d{1,12})(?:\/|$)/.exec(headers.get('x-amz-meta-s3cmd-attrs') ?? '');
  if (s3cmd) return Number(s3cmd[1]) * 1000;
  return now;
}

export function objectHeaders(n: NameView): Headers {
  return new Headers({
    'content-type': n.contentType,
    etag: `"${etagOf(n)}"`,
    'last-modified': new Date(n.mtime).toUTCString(),
    'x-amz-meta-mtime': (n.mtime / 1000).toFixed(3),
    'accept-ranges': 'bytes',
    'x-content-type-options': 'nosniff',
  });
}

export async function* noBody(): AsyncGenerator<Uint8Array> {}

export async function readAll(body: AsyncIterable<Uint8Array> | null, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body ?? noBody()) {
    size += chunk.byteLength;
    if (size > max) throw new S3Error('MalformedXML', `the request body exceeds ${max} bytes`);
    chunks.push(Buffer.from(chunk));
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Checks what the client said of the payload (signed sha256, Content-MD5) against what came. */
export function checkDigests(req: S3Request, spooled: SpooledFile): void {
  if (req.declaredSha256 !== undefined && req.declaredSha256 !== spooled.sha256) {
    throw new S3Error('XAmzContentSHA256Mismatch', "the body's sha256 is not the one signed");
  }
  const md5 = req.headers.get('content-md5');
  if (md5 !== null && Buffer.from(md5, 'base64').toString('hex') !== spooled.md5) {
    throw new S3Error('BadDigest', 'the Content-MD5 you specified did not match what we received');
  }
}

/**
 * Names spooled bytes: content the cluster holds already is only named (no byte moves), other
 * content goes through the upload path under its content id.
 */
export async function storeSpooled(
  deps: ObjectDeps,
  target: { bucket: string; key: string; client: string },
  files: { paths: string[]; size: number; sha256: string },
  mtime: number,
  etag: string,
): Promise<PutOutcome> {
  const { names } = deps;
  if ((await names.contentObject(files.sha256)) !== null) {
    try {
      return await names.putExisting(target.bucket, target.key, files.sha256, mtime, etag);
    } catch (err) {
      // Freed between the lookup and the commit: send the bytes after all.
      if (!(err instanceof NameError && err.code === 'ContentNotFound')) throw err;
    }
  }
  return names.putBytes(target.bucket, target.key, () => fileChunks(files.paths), {
    declaredLength: files.size,
    sha256: files.sha256,
    mtime,
    etag,
    client: target.client,
  });
}

export const putObject: ObjectOperation = async (deps, req, bucket, key) => {
  await requireWritableName(deps, bucket, key);
  const spooled = await deps.spool.spoolBody(req.body ?? noBody(), deps.images.maxImageBytes);
  try {
    checkDigests(req, spooled);
    const outcome = await storeSpooled(
      deps,
      { bucket, key, client: req.client },
      { paths: [spooled.path], size: spooled.size, sha256: spooled.sha256 },
      mtimeOf(req.headers),
      spooled.md5,
    );
    return new Response(null, { status: 200, headers: { etag: `"${etagOf(outcome.name)}"` } });
  } finally {
    await deps.spool.discard(spooled.path);
  }
};

export const getObject: ObjectOperation = async (deps, req, bucket, key) => {
  const name = await deps.names.get(bucket, key);
  const headers = objectHeaders(name);
  if (req.method === 'HEAD') {
    headers.set('content-length', String(name.size));
    return new Response(null, { status: 200, headers });
  }
  const ifRange = req.headers.get('if-range');
  const rangeApplies = ifRange === null || ifRange.replace(/^W\//, '') === `"${etagOf(name)}"`;
  const range = rangeApplies ? (req.headers.get('range') ?? undefined) : undefined;
  const { outgoing } = req;
  const { object, response, body, bytes, release } = await deps.images.open(name.objectId, {
    method: 'GET',
    ...(range ? { range } : {}),
    ...(outgoing ? { pooled: true } : {}),
  });
  if (response.statusCode === 416) {
    await response.body.dump();
    throw new S3Error('InvalidRange', `the requested range is not satisfiable (size ${object.size})`);
  }
  for (const h of ['content-length', 'content-range']) {
    const value = response.headers[h];
    if (typeof value === 'string') headers.set(h, value);
  }
  releaseAfterWritten(outgoing, release);
  // A buffer is written to the socket as it is (@hono/node-server); a stream goes chunk by chunk.
  return new Response(bytes ?? webStreamOf(body), { status: response.statusCode, headers });
};

export async function deleteObject(deps: ObjectDeps, bucket: string, key: string): Promise<Response> {
  try {
    await deps.names.remove(bucket, key);
  } catch (err) {
    // S3 answers 204 for a key that is not there: the goal (no such key) is reached.
    if (!(err instanceof NameError && err.code === 'NameNotFound')) throw err;
  }
  return new Response(null, { status: 204 });
}

export async function deleteObjects(deps: ObjectDeps, req: S3Request, bucket: string): Promise<Response> {
  await deps.names.requireBucket(bucket);
  const xml = await readAll(req.body, MAX_XML_BODY);
  const objects = elements(xml, 'Object');
  if (objects.length === 0 || objects.length > 1000) {
    throw new S3Error('MalformedXML', 'Delete must list 1 to 1000 objects');
  }
  const quiet = /<(?:\w+:)?Quiet>\s*true\s*</i.test(xml);
  const results: string[] = [];
  for (const object of objects) {
    const key = xmlUnescape(elements(object, 'Key')[0] ?? '');
    try {
      await deleteObject(deps, bucket, key);
      if (!quiet) results.push(`<Deleted>${el('Key', key)}</Deleted>`);
    } catch (err) {
      const code = err instanceof NameError ? 'InvalidArgument' : 'InternalError';
      const message = err instanceof Error ? err.message : 'delete failed';
      results.push(`<Error>${el('Key', key)}${el('Code', code)}${el('Message', message)}</Error>`);
    }
  }
  return xmlResponse(`<DeleteResult xmlns="${S3_NS}">${results.join('')}</DeleteResult>`);
}

export function xmlResponse(body: string, status = 200): Response {
  return new Response(XML_HEADER + body, { status, headers: { 'content-type': 'application/xml' } });
}

/** `x-amz-copy-source`: `[/]bucket/key[?versionId=...]`, percent-encoded. */
function copySource(value: string): { bucket: string; key: string } {
  const path = value.split('?')[0]!;
  const { bucket, key } = splitPath(path.startsWith('/') ? path : `/${path}`);
  if (bucket === null || key === null)
    throw new S3Error('InvalidArgument', 'x-amz-copy-source must be bucket/key');
  return { bucket, key };
}

export const copyObject: ObjectOperation = async (deps, req, bucket, key) => {
  deps.names.validate(bucket, key);
  const src = copySource(req.headers.get('x-amz-copy-source')!);
  const replace = (req.headers.get('x-amz-metadata-directive') ?? 'COPY').toUpperCase() === 'REPLACE';
  if (!replace && src.bucket === bucket && src.key === key) {
    throw new S3Error(
      'InvalidRequest',
      "this copy request is illegal because it is trying to copy an object to itself without changing the object's metadata",
    );
  }
  await deps.names.requireBucket(bucket);
  const source = await deps.names.get(src.bucket, src.key);
  const mtime = replace ? mtimeOf(req.headers) : source.mtime;
  const outcome = await deps.names.putExisting(bucket, key, source.sha256, mtime, etagOf(source));
  return xmlResponse(
    `<CopyObjectResult xmlns="${S3_NS}">${el('LastModified', isoTime(outcome.name.mtime))}` +
      `${el('ETag', `"${etagOf(outcome.name)}"`)}</CopyObjectResult>`,
  );
};

/** S3's multipart ETag: the MD5 of the parts' binary MD5s, then `-<part count>`. */
export function multipartEtag(partMd5s: readonly string[]): string {
  const md5 = createHash('md5');
  for (const p of partMd5s) md5.update(Buffer.from(p, 'hex'));
  return `${md5.digest('hex')}-${partMd5s.length}`;
}
