// Cross-origin reads for the dashboard. The page is served by one manager but keeps reading the
// cluster when that manager dies or stops leading, straight from the others: a request from one
// manager's origin to another's. Only the managers' own origins (the Raft members' URLs) are let
// in, only for the GET reads the page makes; a preflight is answered here, before the client gate,
// because a browser sends it without the bearer token the real request will carry.

import type { MiddlewareHandler } from 'hono';
import { cors } from 'hono/cors';

/** What the dashboard reads: Raft views, the node table and totals, image and name lists, thumbnails. */
const DASHBOARD_READS: readonly RegExp[] = [
  /^\/v1\/cluster\/(raft|nodes|stats)$/,
  /^\/v1\/images$/,
  /^\/v1\/images\/[^/]+\/thumbnail$/,
  /^\/v1\/buckets\/[^/]+$/,
];

function originOf(url: string): string | null {
  try {
    return new URL(url).origin;
  } catch {
    return null;
  }
}

/** `memberUrls`: the managers' URLs as Raft knows them now (members change at run time). */
export function dashboardCors(memberUrls: () => readonly string[]): MiddlewareHandler {
  const allow = cors({
    origin: (origin) => (memberUrls().some((u) => originOf(u) === origin) ? origin : null),
    allowMethods: ['GET'],
    allowHeaders: ['Authorization'],
    maxAge: 600,
  });
  return async (c, next) => {
    if (c.req.header('origin') === undefined || !DASHBOARD_READS.some((r) => r.test(c.req.path))) {
      return next();
    }
    return allow(c, next);
  };
}
