// Which S3 operation a request is (method, path-style bucket and key, sub-resource in the query),
// run on the leader; every failure answered in S3's XML error shape.

import type { Logger } from '../../logging.ts';
import { createBucket, listBuckets, listObjectsV1, listObjectsV2 } from './s3Buckets.ts';
import { toS3Error } from './s3ErrorMapping.ts';
import { errorResponse, S3Error } from './s3Errors.ts';
import { abortUpload, completeUpload, createUpload, listParts, uploadPart } from './s3Multipart.ts';
import {
  copyObject,
  deleteObject,
  deleteObjects,
  getObject,
  type ObjectDeps,
  putObject,
  xmlResponse,
} from './s3Objects.ts';
import { has, type S3Request } from './s3Request.ts';
import { S3_NS } from './s3Xml.ts';

export interface S3Deps extends ObjectDeps {
  log: Logger;
}

const notImplemented = (what: string) => new S3Error('NotImplemented', `${what} is not implemented`);

async function bucketOperation(deps: S3Deps, req: S3Request, bucket: string): Promise<Response> {
  const { names } = deps;
  switch (req.method) {
    case 'PUT':
      if (Object.keys(req.query).length > 0) throw notImplemented('bucket configuration');
      await createBucket(names, bucket);
      return new Response(null, { status: 200, headers: { location: `/${bucket}` } });
    case 'HEAD':
      await names.requireBucket(bucket);
      return new Response(null, { status: 200 });
    case 'DELETE':
      await names.deleteBucket(bucket);
      return new Response(null, { status: 204 });
    case 'POST':
      if (has(req.query, 'delete')) return deleteObjects(deps, req, bucket);
      throw notImplemented('this bucket POST');
    case 'GET':
      return bucketGet(deps, req, bucket);
    default:
      throw new S3Error('MethodNotAllowed', `${req.method} is not allowed on a bucket`);
  }
}

async function bucketGet(deps: S3Deps, req: S3Request, bucket: string): Promise<Response> {
  const { names } = deps;
  if (has(req.query, 'location')) {
    await names.requireBucket(bucket);
    return xmlResponse(`<LocationConstraint xmlns="${S3_NS}"></LocationConstraint>`);
  }
  if (has(req.query, 'versioning')) {
    await names.requireBucket(bucket);
    return xmlResponse(`<VersioningConfiguration xmlns="${S3_NS}"></VersioningConfiguration>`);
  }
  if (has(req.query, 'uploads')) {
    // Uploads in progress are the leader's local files and are not listed (docs/s3.md).
    await names.requireBucket(bucket);
    return xmlResponse(
      `<ListMultipartUploadsResult xmlns="${S3_NS}"><Bucket>${bucket}</Bucket><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>`,
    );
  }
  for (const sub of [
    'acl',
    'policy',
    'lifecycle',
    'cors',
    'tagging',
    'website',
    'encryption',
    'object-lock',
  ]) {
    if (has(req.query, sub)) throw notImplemented(`bucket ${sub}`);
  }
  if (req.query['list-type'] === '2') return xmlResponse(await listObjectsV2(names, req, bucket));
  return xmlResponse(await listObjectsV1(names, req, bucket));
}

function objectOperation(deps: S3Deps, req: S3Request, bucket: string, key: string): Promise<Response> {
  const q = req.query;
  switch (req.method) {
    case 'PUT':
      if (has(q, 'uploadId')) {
        if (req.headers.has('x-amz-copy-source')) throw notImplemented('UploadPartCopy');
        return uploadPart(deps, req, bucket, key);
      }
      if (has(q, 'acl') || has(q, 'tagging')) throw notImplemented('object sub-resources');
      if (req.headers.has('x-amz-copy-source')) return copyObject(deps, req, bucket, key);
      return putObject(deps, req, bucket, key);
    case 'GET':
    case 'HEAD':
      if (has(q, 'uploadId') && req.method === 'GET') return listParts(deps, req, bucket, key);
      if (has(q, 'acl') || has(q, 'tagging')) throw notImplemented('object sub-resources');
      return getObject(deps, req, bucket, key);
    case 'POST':
      if (has(q, 'uploads')) return createUpload(deps, req, bucket, key);
      if (has(q, 'uploadId')) return completeUpload(deps, req, bucket, key);
      throw notImplemented('this object POST');
    case 'DELETE':
      if (has(q, 'uploadId')) return abortUpload(deps, req, bucket, key);
      return deleteObject(deps, bucket, key);
    default:
      throw new S3Error('MethodNotAllowed', `${req.method} is not allowed on an object`);
  }
}

function dispatch(deps: S3Deps, req: S3Request): Promise<Response> {
  if (req.bucket === null) {
    if (req.method !== 'GET') throw new S3Error('MethodNotAllowed', `${req.method} / is not allowed`);
    return listBuckets(deps.names).then((xml) => xmlResponse(xml));
  }
  if (req.key === null) return bucketOperation(deps, req, req.bucket);
  return objectOperation(deps, req, req.bucket, req.key);
}

/** Runs one S3 request on this manager (the leader): never throws. */
export async function runS3Request(deps: S3Deps, req: S3Request): Promise<Response> {
  try {
    const res = await dispatch(deps, req);
    res.headers.set('x-amz-request-id', req.requestId);
    return res;
  } catch (err) {
    const s3 = toS3Error(err);
    if (s3 === null) {
      deps.log.error({ event: 's3.failed', requestId: req.requestId, err }, 'S3 request failed');
    }
    const res = errorResponse(
      s3 ?? new S3Error('InternalError', 'internal error'),
      req.resource,
      req.requestId,
      req.method,
    );
    // The body of a refused upload may be unread: the client must not reuse this connection.
    if (req.body !== null) res.headers.set('connection', 'close');
    return res;
  }
}
