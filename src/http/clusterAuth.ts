import type { Context, MiddlewareHandler } from 'hono';
import { CREDENTIAL_HEADER, type Identity, type ManagerCredentials, secretsEqual } from './credentials.ts';

/**
 * Header carrying the cluster secret, or in per-role mode a credential (credentials.ts), on every
 * manager<->manager, manager<->worker and operator request.
 */
export const CLUSTER_SECRET_HEADER = CREDENTIAL_HEADER;

export function clusterSecretMatches(expected: string, presented: string | undefined): boolean {
  return secretsEqual(expected, presented);
}

function refuse(c: Context, what: string): Response {
  return c.json({ error: { code: 'Unauthorized', message: `missing or wrong ${what}` } }, 401);
}

/** Refuses, with 401 and a JSON error, any request that does not present the cluster secret. */
export function requireClusterSecret(secret: string): MiddlewareHandler {
  if (secret.length === 0) throw new Error('cluster secret must not be empty');
  return async (c, next) => {
    if (!clusterSecretMatches(secret, c.req.header(CLUSTER_SECRET_HEADER))) {
      return refuse(c, `${CLUSTER_SECRET_HEADER} header`);
    }
    await next();
  };
}

const IDENTITY = 'imgvaultIdentity';

/**
 * Refuses (401) a request whose credential is not one of `roles`' (or the single cluster secret);
 * the identity it proved is then read with identityOf, for routes that bind it to an id. `selfId`:
 * the receiving manager, whom a raft credential must name.
 */
export function requireCredential(
  credentials: ManagerCredentials,
  roles: readonly ('raft' | 'worker' | 'operator')[],
  selfId?: string,
): MiddlewareHandler {
  return async (c, next) => {
    const identity = credentials.authenticate(c.req.header(CLUSTER_SECRET_HEADER), roles, selfId);
    if (identity === null) return refuse(c, `${roles.join(' or ')} credential (${CLUSTER_SECRET_HEADER})`);
    c.set(IDENTITY as never, identity as never);
    await next();
  };
}

/** What requireCredential proved for this request (undefined when it did not run). */
export function identityOf(c: Context): Identity | undefined {
  return c.get(IDENTITY as never) as Identity | undefined;
}

/**
 * Whether the proved identity may act as `id`: the single secret names no one and may act as
 * anyone; a credential only as the id it names.
 */
export function mayActAs(identity: Identity | undefined, id: string): boolean {
  return identity !== undefined && (identity.id === null || identity.id === id);
}
