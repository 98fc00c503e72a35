// Paths of the worker protocol (docs/worker-protocol.md), for both ends: the routes a worker serves
// (as Hono patterns) with the paths the manager and other workers build to reach them, and the
// manager's routes a worker calls.

/** Manager routes a worker calls; all need the cluster secret. */
export const WORKERS_PREFIX = '/internal/v1/workers';
export const REGISTER_PATH = `${WORKERS_PREFIX}/register`;
export const HEARTBEAT_PATH = `${WORKERS_PREFIX}/heartbeat`;
export const WIPE_CHECK_PATH = `${WORKERS_PREFIX}/wipe-check`;
export const LOST_COPIES_PATH = `${WORKERS_PREFIX}/lost-copies`;

/** A worker's routes. Each `*_ROUTE` is the pattern it serves; the function beside it builds the path. */
export const INVENTORY_PATH = '/inventory';
export const STATS_PATH = '/stats';
export const BLOB_ROUTE = '/blobs/:id';
export const VERIFY_ROUTE = '/blobs/:id/verify';
/** Many blobs of one holder copied to one target (repair's batches). */
export const COPY_BATCH_PATH = '/blobs/copy-batch';
/** Many blobs in one framed body (blobFrames), sent by a holder to the target of a copy batch. */
export const BLOB_BATCH_PATH = '/blobs/batch';

export const blobPath = (id: string): string => `/blobs/${encodeURIComponent(id)}`;
export const verifyPath = (id: string): string => `${blobPath(id)}/verify`;
