import { timingSafeEqual } from 'node:crypto';
import type { MiddlewareHandler } from 'hono';

/** Header carrying the cluster secret on every manager<->manager and manager<->worker request. */
export const CLUSTER_SECRET_HEADER = 'x-imgvault-cluster-secret';

export function clusterSecretMatches(expected: string, presented: string | undefined): boolean {
  if (presented === undefined) return false;
  const a = Buffer.from(expected);
  const b = Buffer.from(presented);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** Refuses, with 401 and a JSON error, any request that does not present the cluster secret. */
export function requireClusterSecret(secret: string): MiddlewareHandler {
  if (secret.length === 0) throw new Error('cluster secret must not be empty');
  return async (c, next) => {
    if (!clusterSecretMatches(secret, c.req.header(CLUSTER_SECRET_HEADER))) {
      return c.json(
        { error: { code: 'Unauthorized', message: `missing or wrong ${CLUSTER_SECRET_HEADER} header` } },
        401,
      );
    }
    await next();
  };
}
