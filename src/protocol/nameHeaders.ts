// Wire constants of the names API, imported by the routes and by the CLI that calls them.

/** On PUT: the sha256 of the body; with an empty body, names content already stored (the dedup path). */
export const CONTENT_SHA256_HEADER = 'x-imgvault-content-sha256';
/** On PUT and in answers: the file's modification time, milliseconds since the Unix epoch. */
export const MTIME_HEADER = 'x-imgvault-mtime';

export const namePath = (bucket: string, key: string): string =>
  `/v1/buckets/${encodeURIComponent(bucket)}/keys/${key.split('/').map(encodeURIComponent).join('/')}`;
export const nameMetaPath = (bucket: string, key: string): string =>
  `/v1/buckets/${encodeURIComponent(bucket)}/meta/${key.split('/').map(encodeURIComponent).join('/')}`;
