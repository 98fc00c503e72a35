/**
 * The worker's failures as values. Each code maps to exactly one HTTP status (STATUS_BY_CODE), so the
 * domain layer (BlobStore) never thinks in HTTP and the app never guesses a status from a message.
 */
export type StorageErrorCode =
  | 'InvalidBlobId'
  | 'InvalidRequest'
  | 'Unauthorized'
  | 'NotFound'
  | 'BlobNotFound'
  | 'BlobConflict'
  | 'PayloadTooLarge'
  | 'RangeNotSatisfiable'
  | 'ChecksumMismatch'
  | 'InsufficientStorage'
  | 'BodyAborted'
  | 'CopyTargetFailed'
  | 'Internal';

export const STATUS_BY_CODE = {
  InvalidBlobId: 400,
  InvalidRequest: 400,
  Unauthorized: 401,
  NotFound: 404,
  BlobNotFound: 404,
  BlobConflict: 409,
  PayloadTooLarge: 413,
  RangeNotSatisfiable: 416,
  ChecksumMismatch: 422,
  // The client went away mid-body; nobody reads this answer, but it must be a 4xx, not a 500.
  BodyAborted: 400,
  CopyTargetFailed: 502,
  InsufficientStorage: 507,
  Internal: 500,
} as const satisfies Record<StorageErrorCode, number>;

export type StorageErrorStatus = (typeof STATUS_BY_CODE)[StorageErrorCode];

export class StorageError extends Error {
  override readonly name = 'StorageError';
  readonly code: StorageErrorCode;
  /** Extra machine-readable fields copied into the JSON error body (e.g. `targetStatus`). */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: StorageErrorCode, message: string, details: Record<string, unknown> = {}) {
    super(message);
    this.code = code;
    this.details = details;
  }

  get status(): StorageErrorStatus {
    return STATUS_BY_CODE[this.code];
  }

  /** The wire shape every 4xx/5xx of the worker uses: `{ error: { code, message, ...details } }`. */
  toJSON(): { error: { code: StorageErrorCode; message: string } & Record<string, unknown> } {
    return { error: { ...this.details, code: this.code, message: this.message } };
  }
}

/** What a BlobStore operation returns: a value, or a typed failure the caller maps to HTTP. */
export type StoreResult<T> = { ok: true; value: T } | { ok: false; error: StorageError };

export function success<T>(value: T): StoreResult<T> {
  return { ok: true, value };
}

export function failure<T = never>(
  code: StorageErrorCode,
  message: string,
  details?: Record<string, unknown>,
): StoreResult<T> {
  return { ok: false, error: new StorageError(code, message, details) };
}

/** The code of a system error (`ENOENT`, `ENOSPC`...), if `err` carries one. */
export function errnoCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string'
    ? err.code
    : undefined;
}
