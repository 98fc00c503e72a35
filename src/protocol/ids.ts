// Identifiers that cross the wire: in URLs, bodies and, on a worker, file names. Defined once, for
// the manager that records them and the worker that stores under them.

import { z } from 'zod';

/**
 * Object ids end up in worker file names and URLs: a strict pattern, never a path. It admits no
 * `/`, `\`, NUL or leading `.` (so neither `.` nor `..`) and at most 128 characters.
 */
export const OBJECT_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;
/** Node ids and zones end up in keys of the node index: the same alphabet, shorter. */
export const NODE_ID_PATTERN = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
/** A sha256 as every message carries it: lowercase hex. */
export const SHA256_HEX_PATTERN = /^[0-9a-f]{64}$/;

export const objectIdSchema = z.string().regex(OBJECT_ID_PATTERN, 'invalid object id');
export const nodeIdSchema = z.string().regex(NODE_ID_PATTERN, 'invalid node id');
