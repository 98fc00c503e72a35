import type { MiddlewareHandler } from 'hono';
import { clusterSecretMatches } from './clusterAuth.ts';

/**
 * Bearer-token check for the public API. With no tokens configured the API is open (the embedded
 * cluster on 127.0.0.1 says so when it starts); with tokens, every request must present one.
 */
export function requireClientToken(tokens: readonly string[]): MiddlewareHandler {
  return async (c, next) => {
    if (tokens.length === 0) return next();
    const header = c.req.header('authorization') ?? '';
    const presented = header.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : undefined;
    if (presented === undefined || !tokens.some((t) => clusterSecretMatches(t, presented))) {
      c.header('www-authenticate', 'Bearer realm="imgvault"');
      return c.json({ error: { code: 'Unauthorized', message: 'a valid bearer token is required' } }, 401);
    }
    await next();
  };
}
