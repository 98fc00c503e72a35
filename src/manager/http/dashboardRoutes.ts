// The dashboard every manager serves at `/`: one static page (dashboard/*.html|js|css, no build step
// of its own; scripts/build.mjs copies the folder beside the bundle) that reads the ops routes
// itself, and the thumbnails its gallery shows. The page and its files hold no data, so the client
// gate leaves them open (managerServer.ts); everything the page reads stays behind it.

import { readFile } from 'node:fs/promises';
import { Hono } from 'hono';
import { jsonError } from '../../http/errors.ts';
import { THUMBNAIL_CONTENT_TYPE, type ThumbnailCache, ThumbnailFailed } from '../thumbnails.ts';
import { IMAGE_SAFETY_HEADERS, mapError } from './publicRoutes.ts';

/** Beside this module in src/, beside the chunk it is bundled into in dist/. */
const ASSETS = new URL('./dashboard/', import.meta.url);

const ASSET_TYPES: Record<string, string> = {
  'index.html': 'text/html; charset=utf-8',
  'dashboard.js': 'text/javascript; charset=utf-8',
  'dashboard.css': 'text/css; charset=utf-8',
};

/** The page talks to every manager (connect-src), shows thumbnails as blob: URLs, runs only its own script. */
const PAGE_HEADERS = {
  'content-security-policy':
    "default-src 'self'; connect-src 'self' http: https:; img-src 'self' blob: data:; " +
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
  'cache-control': 'no-cache',
};

async function asset(name: string): Promise<Response> {
  const type = ASSET_TYPES[name];
  if (type === undefined) return new Response('not found', { status: 404 });
  const body = await readFile(new URL(name, ASSETS));
  return new Response(body, { headers: { 'content-type': type, ...PAGE_HEADERS } });
}

export function dashboardRoutes(opts: { thumbnails: ThumbnailCache }): Hono {
  const app = new Hono();
  app.get('/', () => asset('index.html'));
  app.get('/dashboard/:file', (c) => asset(c.req.param('file')));

  app.get('/v1/images/:id/thumbnail', async (c) => {
    try {
      const { bytes, sha256 } = await opts.thumbnails.get(c.req.param('id'));
      const etag = `"${sha256}-thumbnail"`;
      const headers = {
        'content-type': THUMBNAIL_CONTENT_TYPE,
        etag,
        // Revalidated like the image itself: a deleted image's thumbnail must not outlive it in a cache.
        'cache-control': 'private, no-cache',
        ...IMAGE_SAFETY_HEADERS,
      };
      if (c.req.header('if-none-match') === etag) return new Response(null, { status: 304, headers });
      return new Response(new Uint8Array(bytes), { headers });
    } catch (err) {
      if (err instanceof ThumbnailFailed) return jsonError(c, 422, 'ThumbnailFailed', err.message);
      return mapError(c, err);
    }
  });
  return app;
}
