// The domain's typed errors as S3 errors: one S3 code each, so S3 clients retry what is worth
// retrying (503) and show the rest.

import { RaftError } from '../../consensus/raftNode.ts';
import { ImageError, type ImageErrorCode } from '../imageService.ts';
import { NameError, type NameErrorCode } from '../nameService.ts';
import { S3Error, type S3ErrorCode } from './s3Errors.ts';

const FROM_IMAGE: Record<ImageErrorCode, S3ErrorCode> = {
  InvalidId: 'InvalidArgument',
  EmptyBody: 'NotAnImage',
  TooLarge: 'EntityTooLarge',
  NotAnImage: 'NotAnImage',
  BodyTooSlow: 'IncompleteBody',
  LengthMismatch: 'IncompleteBody',
  TooManyUploads: 'SlowDown',
  StagingFull: 'SlowDown',
  Conflict: 'InternalError',
  NotFound: 'NoSuchKey',
  Unavailable: 'ServiceUnavailable',
  Lost: 'InternalError',
  NoLiveWorker: 'ServiceUnavailable',
  InsufficientStorage: 'InsufficientStorage',
  NotLeader: 'ServiceUnavailable',
  NoLeader: 'ServiceUnavailable',
  CommitFailed: 'ServiceUnavailable',
};

const FROM_NAME: Record<NameErrorCode, S3ErrorCode> = {
  InvalidName: 'InvalidArgument',
  InvalidQuery: 'InvalidArgument',
  NameNotFound: 'NoSuchKey',
  // A dedup raced a delete of the content: the client's retry sends the bytes.
  ContentNotFound: 'InternalError',
  ChecksumMismatch: 'XAmzContentSHA256Mismatch',
  BucketNotFound: 'NoSuchBucket',
  BucketNotEmpty: 'BucketNotEmpty',
};

/** Any error as an S3Error; an unexpected one is InternalError (logged by the caller). */
export function toS3Error(err: unknown): S3Error | null {
  if (err instanceof S3Error) return err;
  if (err instanceof NameError) return new S3Error(FROM_NAME[err.code], err.message);
  if (err instanceof ImageError) {
    // Worker addresses stay in the operator's log.
    const message = err.code === 'NoLiveWorker' ? 'no storage worker can take the object now' : err.message;
    return new S3Error(FROM_IMAGE[err.code], message);
  }
  if (err instanceof RaftError)
    return new S3Error('ServiceUnavailable', 'the metadata change was not confirmed');
  return null;
}
