// Planners of the bucket and S3 access key commands (see applyCommand.ts for the contract: tables
// and command in, rows to write and result out, no clock and no randomness).

import type { CommandOf, CommandResults } from './commands.ts';
import { reject } from './commands.ts';
import { decodeBucket, decodeS3Key, encodeBucket, encodeS3Key, type TableOp } from './tables.ts';

/** Point reads plus one bounded range read (is a bucket empty). */
export interface BucketTableReader {
  get(table: 'buckets' | 's3keys' | 'names', key: string): Promise<string | undefined>;
  hasNameUnder(bucket: string): Promise<boolean>;
}

interface Plan<R> {
  ops: TableOp[];
  result: R;
}

export async function createBucket(
  tables: BucketTableReader,
  c: CommandOf<'createBucket'>,
): Promise<Plan<CommandResults['createBucket']>> {
  const raw = await tables.get('buckets', c.bucket);
  if (raw !== undefined) {
    return { ops: [], result: { ok: true, created: false, bucket: c.bucket, createdAt: decodeBucket(raw) } };
  }
  // A bucket that holds names exists already (it was made by its first name): recording it now
  // makes it outlive its last name, as a created bucket does, but it was not created here.
  const implicit = await tables.hasNameUnder(c.bucket);
  return {
    ops: [{ type: 'put', table: 'buckets', key: c.bucket, value: encodeBucket(c.at) }],
    result: { ok: true, created: !implicit, bucket: c.bucket, createdAt: c.at },
  };
}

export async function deleteBucket(
  tables: BucketTableReader,
  c: CommandOf<'deleteBucket'>,
): Promise<Plan<CommandResults['deleteBucket']>> {
  if (await tables.hasNameUnder(c.bucket)) {
    return { ops: [], result: reject('BucketNotEmpty', `bucket ${c.bucket} holds names`) };
  }
  if ((await tables.get('buckets', c.bucket)) === undefined) {
    return { ops: [], result: reject('BucketNotFound', `no bucket ${c.bucket}`) };
  }
  return { ops: [{ type: 'del', table: 'buckets', key: c.bucket }], result: { ok: true } };
}

export async function putS3Key(
  tables: BucketTableReader,
  c: CommandOf<'putS3Key'>,
): Promise<Plan<CommandResults['putS3Key']>> {
  const raw = await tables.get('s3keys', c.accessKeyId);
  if (raw !== undefined) {
    // A retried proposal of the same key lands here: the same secret is the same key.
    if (decodeS3Key(raw).secretAccessKey === c.secretAccessKey) {
      return { ops: [], result: { ok: true, created: false } };
    }
    return { ops: [], result: reject('KeyExists', `access key ${c.accessKeyId} exists`) };
  }
  const value = encodeS3Key({ secretAccessKey: c.secretAccessKey, createdAt: c.at });
  return {
    ops: [{ type: 'put', table: 's3keys', key: c.accessKeyId, value }],
    result: { ok: true, created: true },
  };
}

export async function deleteS3Key(
  tables: BucketTableReader,
  c: CommandOf<'deleteS3Key'>,
): Promise<Plan<CommandResults['deleteS3Key']>> {
  if ((await tables.get('s3keys', c.accessKeyId)) === undefined) {
    return { ops: [], result: reject('KeyNotFound', `no access key ${c.accessKeyId}`) };
  }
  return { ops: [{ type: 'del', table: 's3keys', key: c.accessKeyId }], result: { ok: true } };
}
