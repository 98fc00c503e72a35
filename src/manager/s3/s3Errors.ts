// S3's error vocabulary: each error a code S3 clients know, the HTTP status S3 gives it, and the
// XML body they parse (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html).

import { xmlEscape } from './s3Xml.ts';

export const S3_STATUS = {
  AccessDenied: 403,
  AuthorizationHeaderMalformed: 400,
  BadDigest: 400,
  BucketAlreadyOwnedByYou: 409,
  BucketNotEmpty: 409,
  EntityTooLarge: 400,
  EntityTooSmall: 400,
  IncompleteBody: 400,
  InternalError: 500,
  InvalidAccessKeyId: 403,
  InvalidArgument: 400,
  InvalidBucketName: 400,
  InvalidPart: 400,
  InvalidPartOrder: 400,
  InvalidRange: 416,
  InvalidRequest: 400,
  KeyTooLongError: 400,
  MalformedXML: 400,
  MethodNotAllowed: 405,
  MissingContentLength: 411,
  NoSuchBucket: 404,
  NoSuchKey: 404,
  NoSuchUpload: 404,
  NotAnImage: 415,
  NotImplemented: 501,
  RequestTimeTooSkewed: 403,
  ServiceUnavailable: 503,
  SignatureDoesNotMatch: 403,
  SlowDown: 503,
  XAmzContentSHA256Mismatch: 400,
  InsufficientStorage: 507,
} as const;

export type S3ErrorCode = keyof typeof S3_STATUS;

export class S3Error extends Error {
  constructor(
    readonly code: S3ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'S3Error';
  }

  get status(): number {
    return S3_STATUS[this.code];
  }
}

export function errorXml(code: string, message: string, resource: string, requestId: string): string {
  return (
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${xmlEscape(code)}</Code><Message>${xmlEscape(message)}</Message>` +
    `<Resource>${xmlEscape(resource)}</Resource><RequestId>${xmlEscape(requestId)}</RequestId></Error>`
  );
}

/** S3's answer to `err`; a 503 tells the client when to retry (every S3 client retries 503). */
export function errorResponse(err: S3Error, resource: string, requestId: string, method: string): Response {
  const headers = new Headers({
    'content-type': 'application/xml',
    'x-amz-request-id': requestId,
  });
  if (err.status === 503) headers.set('retry-after', '1');
  // HEAD answers carry no body: clients read the status alone.
  const body = method === 'HEAD' ? null : errorXml(err.code, err.message, resource, requestId);
  return new Response(body, { status: err.status, headers });
}
