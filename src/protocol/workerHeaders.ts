// Headers and content types of the worker protocol, for both ends.

/** The hex sha256 of a blob: sent with a PUT (the worker refuses bytes that do not hash to it), answered with a GET. */
export const SHA256_HEADER = 'x-imgvault-sha256';
/** A registration body and a worker's inventory: one JSON value a line. */
export const NDJSON_CONTENT_TYPE = 'application/x-ndjson';
