import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';

/** The one error body shape of every imgvault HTTP surface. */
export function jsonError(c: Context, status: ContentfulStatusCode, code: string, message: string) {
  return c.json({ error: { code, message } }, status);
}

const ADDRESS = /\b[a-z][a-z0-9+.-]*:\/\/[^\s;,)"']+/gi;

/**
 * A message for a client of the public API: no internal address (a worker's URL tells an attacker
 * where the bytes are and which hosts to try). The domain layer already keeps them out of public
 * messages and logs the detail; this catches one that slips through.
 */
export function withoutAddresses(message: string): string {
  return message.replace(ADDRESS, '<internal address>');
}
