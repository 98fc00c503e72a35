// Wire constants of the operator's S3 access-key routes, imported by the routes and by the CLI
// (`imgvault s3 keys`) that calls them.

/** POST creates a key, GET lists them; `${S3_KEYS_PATH}/<id>` deletes one. */
export const S3_KEYS_PATH = '/v1/cluster/s3/keys';
