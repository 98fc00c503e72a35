import type { Context, MiddlewareHandler } from 'hono';
import { CLUSTER_SECRET_HEADER, clusterSecretMatches } from './clusterAuth.ts';

/** The one route a metrics token opens. */
export const METRICS_PATH = '/metrics';

function presentedToken(c: Context): string | undefined {
  const header = c.req.header('authorization') ?? '';
  return header.startsWith('Bearer ') ? header.slice('Bearer '.length).trim() : undefined;
}

/** Methods a read-only token may use: they change nothing. */
const READ_METHODS = new Set(['GET', 'HEAD']);

function anyMatches(tokens: readonly string[], presented: string | undefined): boolean {
  return presented !== undefined && tokens.some((t) => clusterSecretMatches(t, presented));
}

function unauthorized(c: Context): Response {
  c.header('www-authenticate', 'Bearer realm="imgvault"');
  return c.json({ error: { code: 'Unauthorized', message: 'a valid bearer token is required' } }, 401);
}

/**
 * Bearer-token check for the public API. With no tokens configured the API is open (the embedded
 * cluster on 127.0.0.1 says so when it starts); with tokens, every request must present one.
 */
export function requireClientToken(tokens: readonly string[]): MiddlewareHandler {
  return async (c, next) => {
    if (tokens.length === 0) return next();
    if (!anyMatches(tokens, presentedToken(c))) return unauthorized(c);
    await next();
  };
}

function readOnly(c: Context): Response {
  return c.json(
    {
      error: {
        code: 'ReadOnlyToken',
        message: `this token is read-only: ${c.req.method} needs a read-write token`,
      },
    },
    403,
  );
}

export interface ClientGateOptions {
  /** Client bearer tokens (read-write); none (and no read-only ones) = every route but /metrics stays open. */
  tokens: readonly string[];
  /** Bearer tokens that open GET and HEAD requests only: anything else gets 403 `ReadOnlyToken`. */
  readOnlyTokens?: readonly string[];
  /** Bearer tokens that open GET /metrics and nothing else (a Prometheus scrape credential). */
  metricsTokens?: readonly string[];
  /** Paths the gate lets through: /healthz, and routes that check the cluster secret themselves. */
  open: (path: string) => boolean;
  /** Paths where the cluster secret serves instead of a token (a manager reading a peer's state). */
  secretPaths?: { secret: string; match: (path: string) => boolean };
  /** Like secretPaths, with the check of the presented credential left to the caller (per-role mode). */
  credentialPaths?: { accepts: (presented: string | undefined) => boolean; match: (path: string) => boolean };
}

/**
 * One gate in front of a whole app: a route is closed unless `open` names it, so a route added
 * later is guarded without anyone remembering to. /metrics takes a client or a metrics token and
 * is closed as soon as either is configured; without any token nothing changes.
 */
export function clientGate(opts: ClientGateOptions): MiddlewareHandler {
  const readOnlyTokens = opts.readOnlyTokens ?? [];
  const clientTokens = [...opts.tokens, ...readOnlyTokens];
  const metricsTokens = [...clientTokens, ...(opts.metricsTokens ?? [])];
  return async (c, next) => {
    const path = c.req.path;
    if (opts.open(path)) return next();
    const accepted = path === METRICS_PATH ? metricsTokens : clientTokens;
    if (accepted.length === 0) return next();
    const token = presentedToken(c);
    if (anyMatches(accepted, token)) {
      return READ_METHODS.has(c.req.method) || anyMatches(opts.tokens, token) ? next() : readOnly(c);
    }
    const presented = c.req.header(CLUSTER_SECRET_HEADER);
    const s = opts.secretPaths;
    if (s?.match(path) && clusterSecretMatches(s.secret, presented)) return next();
    const p = opts.credentialPaths;
    if (p?.match(path) && p.accepts(presented)) return next();
    return unauthorized(c);
  };
}
