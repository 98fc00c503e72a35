// The manager's domain layer for names (bucket + key -> content): what the names API calls, with
// no HTTP in sight. Bytes go through the image upload path; a name is one Raft command on top,
// and content no name points at any more goes through the image delete path.

import type { Logger } from '../logging.ts';
import { BUCKET_PATTERN, keyProblem, type NameView, type PutNameResult } from '../metadata/commands.ts';
import type { MetadataStateMachine } from '../metadata/metadataStateMachine.ts';
import type { NameListOptions, NamePage } from '../metadata/nameListing.ts';
import { proposeCommand } from '../metadata/proposeCommand.ts';
import { ImageError, type ImageService, type RaftAccess, raftFailure } from './imageService.ts';

export type NameErrorCode =
  | 'InvalidName'
  | 'InvalidQuery'
  | 'NameNotFound'
  | 'ContentNotFound'
  | 'ChecksumMismatch'
  | 'BucketNotFound'
  | 'BucketNotEmpty';

export class NameError extends Error {
  constructor(
    readonly code: NameErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'NameError';
  }
}

export interface NameServiceDeps {
  images: ImageService;
  raft: RaftAccess;
  metadata: MetadataStateMachine;
  log: Logger;
}

export interface PutOutcome {
  created: boolean;
  deduplicated: boolean;
  name: NameView;
}

export class NameService {
  constructor(private readonly deps: NameServiceDeps) {}

  validate(bucket: string, key: string): void {
    if (!BUCKET_PATTERN.test(bucket)) {
      throw new NameError('InvalidName', `bucket must match ${BUCKET_PATTERN.source}`);
    }
    const problem = keyProblem(key);
    if (problem !== null) throw new NameError('InvalidName', problem);
  }

  /**
   * Stores the body through the image upload path, then names it. When the same bytes are stored
   * already the name points at them and the fresh copy is deleted again (decided in apply, so two
   * racing uploads of one file still end as one object).
   */
  async putBytes(
    bucket: string,
    key: string,
    openBody: () => AsyncIterable<Uint8Array>,
    opts: { declaredLength?: number; mtime: number; sha256?: string; client?: string; etag?: string },
  ): Promise<PutOutcome> {
    this.validate(bucket, key);
    const { images } = this.deps;
    // With the sha256 announced, the id is a function of the content: a retry after a lost answer
    // or a failover lands on the object its first attempt may have stored, never a second copy.
    const id = opts.sha256 !== undefined ? `c${opts.sha256}` : images.newId();
    const { created, object } = await images.upload(id, openBody, {
      ...(opts.declaredLength !== undefined ? { declaredLength: opts.declaredLength } : {}),
      contentId: opts.sha256 !== undefined,
      ...(opts.client !== undefined ? { client: opts.client } : {}),
    });
    if (opts.sha256 !== undefined && object.sha256 !== opts.sha256) {
      // Only what this call stored: an object already under that id is another upload's.
      if (created) await this.discard(object.id);
      throw new NameError('ChecksumMismatch', `the body's sha256 is ${object.sha256}, not ${opts.sha256}`);
    }
    return this.commit({
      bucket,
      key,
      sha256: object.sha256,
      objectId: object.id,
      mtime: opts.mtime,
      ...(opts.etag !== undefined ? { etag: opts.etag } : {}),
    });
  }

  /** Names content already stored under another name: no byte moves. */
  async putExisting(
    bucket: string,
    key: string,
    sha256: string,
    mtime: number,
    etag?: string,
  ): Promise<PutOutcome> {
    this.validate(bucket, key);
    this.deps.images.requireLeader();
    // A miss costs no log entry. The leader's tables may lag its log: a wrong miss only makes the
    // client send the bytes, which apply then deduplicates.
    if ((await this.deps.metadata.contentObject(sha256)) === null) {
      throw new NameError('ContentNotFound', `no stored content has sha256 ${sha256}`);
    }
    return this.commit({ bucket, key, sha256, mtime, ...(etag !== undefined ? { etag } : {}) });
  }

  private async commit(c: {
    bucket: string;
    key: string;
    sha256: string;
    objectId?: string;
    mtime: number;
    etag?: string;
  }): Promise<PutOutcome> {
    let result: PutNameResult;
    try {
      result = await proposeCommand(this.deps.raft, { type: 'putName', ...c, at: Date.now() });
    } catch (err) {
      // Not committed here (or not known to be): the fresh copy stays an unnamed object.
      raftFailure(err);
    }
    if (!result.ok) {
      if (c.objectId !== undefined) await this.discard(c.objectId);
      throw new NameError(
        result.code === 'ContentNotFound' ? 'ContentNotFound' : 'ChecksumMismatch',
        result.message,
      );
    }
    for (const id of [result.released, result.unused]) if (id !== null) await this.discard(id);
    this.deps.log.info(
      {
        event: 'name.put',
        bucket: c.bucket,
        key: c.key,
        objectId: result.name.objectId,
        deduplicated: result.deduplicated,
      },
      'name stored',
    );
    return { created: result.created, deduplicated: result.deduplicated, name: result.name };
  }

  /** Linearizable, like ImageService.getMeta. */
  async get(bucket: string, key: string): Promise<NameView> {
    this.validate(bucket, key);
    await this.deps.raft.readIndex().catch(raftFailure);
    const name = await this.deps.metadata.getName(bucket, key);
    if (name === null) throw new NameError('NameNotFound', `no key ${key} in bucket ${bucket}`);
    return name;
  }

  async remove(bucket: string, key: string): Promise<void> {
    this.validate(bucket, key);
    this.deps.images.requireLeader();
    const result = await proposeCommand(this.deps.raft, { type: 'deleteName', bucket, key }).catch(
      raftFailure,
    );
    if (!result.ok) throw new NameError('NameNotFound', result.message);
    if (result.released !== null) await this.discard(result.released);
  }

  async list(bucket: string, opts: NameListOptions): Promise<NamePage> {
    if (!BUCKET_PATTERN.test(bucket))
      throw new NameError('InvalidName', `bucket must match ${BUCKET_PATTERN.source}`);
    await this.deps.raft.readIndex().catch(raftFailure);
    try {
      return await this.deps.metadata.listNames(bucket, opts);
    } catch (err) {
      if (err instanceof RangeError) throw new NameError('InvalidQuery', err.message);
      throw err;
    }
  }

  private validBucket(bucket: string): void {
    if (!BUCKET_PATTERN.test(bucket))
      throw new NameError('InvalidName', `bucket must match ${BUCKET_PATTERN.source}`);
  }

  /** `created: false` when the bucket existed already (created, or made by its names). */
  async createBucket(bucket: string): Promise<{ created: boolean }> {
    this.validBucket(bucket);
    this.deps.images.requireLeader();
    const result = await proposeCommand(this.deps.raft, {
      type: 'createBucket',
      bucket,
      at: Date.now(),
    }).catch(raftFailure);
    this.deps.log.info({ event: 'bucket.create', bucket, created: result.created }, 'bucket created');
    return { created: result.created };
  }

  async deleteBucket(bucket: string): Promise<void> {
    this.validBucket(bucket);
    this.deps.images.requireLeader();
    const result = await proposeCommand(this.deps.raft, { type: 'deleteBucket', bucket }).catch(raftFailure);
    if (!result.ok) throw new NameError(result.code, result.message);
    this.deps.log.info({ event: 'bucket.delete', bucket }, 'bucket deleted');
  }

  /** Linearizable. */
  async bucketExists(bucket: string): Promise<boolean> {
    this.validBucket(bucket);
    await this.deps.raft.readIndex().catch(raftFailure);
    return this.deps.metadata.bucketExists(bucket);
  }

  /** Throws BucketNotFound unless the bucket exists (linearizable). */
  async requireBucket(bucket: string): Promise<void> {
    if (!(await this.bucketExists(bucket))) throw new NameError('BucketNotFound', `no bucket ${bucket}`);
  }

  async listBuckets(): Promise<{ bucket: string; createdAt: number }[]> {
    await this.deps.raft.readIndex().catch(raftFailure);
    return this.deps.metadata.listBuckets();
  }

  /** The object holding named content with this sha256, or null. */
  async contentObject(sha256: string): Promise<string | null> {
    await this.deps.raft.readIndex().catch(raftFailure);
    return this.deps.metadata.contentObject(sha256);
  }

  /**
   * Deletes named content (ids `c<sha256>`) that no name took and that is older than `graceMs`:
   * what an upload for a name leaves when its leader died between the object's commit and the
   * name's. Walks the object table in bounded steps; a name committed meanwhile makes the delete
   * fail in apply (ObjectReferenced), so nothing named is ever lost. Returns how many it deleted.
   */
  async sweepUnnamedContent(graceMs: number, now = Date.now()): Promise<number> {
    const { images, metadata } = this.deps;
    let after: string | undefined;
    let deleted = 0;
    for (let step = 0; step < 10_000; step++) {
      if (!this.deps.raft.isLeader()) return deleted;
      const page = await metadata.unnamedContent({
        createdBefore: now - graceMs,
        ...(after !== undefined ? { after } : {}),
      });
      for (const object of page.items) {
        if (images.isUploading(object.id)) continue;
        try {
          await images.remove(object.id);
          deleted++;
          this.deps.log.info(
            { event: 'name.unnamed_content_deleted', objectId: object.id },
            'unnamed content deleted',
          );
        } catch (err) {
          const code = err instanceof ImageError ? err.code : 'Internal';
          this.deps.log.debug({ event: 'name.unnamed_content_kept', objectId: object.id, code }, 'kept');
        }
      }
      if (page.next === null) return deleted;
      after = page.next;
    }
    return deleted;
  }

  /**
   * Deletes content no name points at through the image delete path. A failure (leadership lost,
   * a name put on it again meanwhile) leaves an unnamed object, never a name without content.
   */
  private async discard(objectId: string): Promise<void> {
    try {
      await this.deps.images.remove(objectId);
    } catch (err) {
      const code = err instanceof ImageError ? err.code : 'Internal';
      this.deps.log.warn(
        { event: 'name.content_left', objectId, code, err },
        'unnamed content left in place',
      );
    }
  }
}
