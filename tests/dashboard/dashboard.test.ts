// The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core, against a
// real cluster with client tokens on. The page gets the token through its field, shows the
// managers and workers, decodes the gallery's thumbnails, marks a killed worker down, and, when the
// manager it was loaded from (the leader) is killed, goes on reading from the others and shows the
// new leader. Screenshots go to a temp folder (its path is printed), never into the checkout.

import { existsSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { THUMBNAIL_SIZE } from '../../src/manager/thumbnails.ts';
import { ImageCluster, type ManagerProc } from '../integration/imageCluster.ts';

/** Debian's package (`.ci/run` installs it when missing); PATH lookups vary, this path does not. */
const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => existsSync(p));
const TOKEN = 'dashboard-client-token-0123456789';
// Suspicion well above the heartbeat interval: a loaded machine delays heartbeats by a second or more.
const SUSPECT_AFTER_MS = 2_500;
const DOWN_AFTER_MS = 6_000;
/** Waits on the page: generous, the machine running this may be loaded. */
const PAGE_WAIT_MS = 60_000;

/** A real photo-like image (a gradient), encoded by libvips: what a thumbnail must decode. */
async function gradient(width: number, height: number, hue: number, format: 'jpeg' | 'png'): Promise<Buffer> {
  const raw = Buffer.alloc(width * height * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const o = (y * width + x) * 3;
      raw[o] = (hue + (x * 255) / width) % 256;
      raw[o + 1] = (y * 255) / height;
      raw[o + 2] = 255 - hue;
    }
  }
  return sharp(raw, { raw: { width, height, channels: 3 } })
    .toFormat(format)
    .toBuffer();
}

let cluster: ImageCluster;
let browser: Browser | undefined;
let page: Page;
let shots: string;
let origin: ManagerProc;
const KEYS = ['trip/beach.jpg', 'trip/hills.jpg', 'trip/night.png'];

describe.skipIf(CHROMIUM === undefined)('the dashboard (needs Chromium at /usr/bin/chromium)', () => {
  beforeAll(async () => {
    cluster = await ImageCluster.start({
      name: 'dashboard-test',
      startTimeoutMs: 90_000,
      tokens: { client: [TOKEN] },
      managerArgs: ['--suspect-after-ms', String(SUSPECT_AFTER_MS), '--down-after-ms', String(DOWN_AFTER_MS)],
    });
    for (const [i, key] of KEYS.entries()) {
      const body = await gradient(640 + i * 80, 480, i * 70, key.endsWith('.png') ? 'png' : 'jpeg');
      const leader = await cluster.leader();
      const res = await fetch(`${leader.url}/v1/buckets/photos/keys/${key}`, {
        method: 'PUT',
        body,
        headers: cluster.authHeaders(),
        signal: AbortSignal.timeout(30_000),
      });
      expect(res.status, key).toBe(201);
    }
    shots = await mkdtemp(join(tmpdir(), 'imgvault-dashboard-shots-'));
    console.log(`dashboard screenshots: ${shots}`);
    browser = await chromium.launch({ executablePath: CHROMIUM!, args: ['--no-sandbox'] });
    page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    origin = await cluster.leader();
    await page.goto(origin.url);
  }, 300_000);

  afterAll(async () => {
    await browser?.close();
    await cluster?.close();
  });

  const rowState = (worker: string) =>
    page.locator(`tr[data-worker-id="${worker}"]`).getAttribute('data-state', { timeout: PAGE_WAIT_MS });

  const TEST_MS = 180_000;

  /** The gallery's images as decoded: a natural width of 0 is an image that did not decode (yet). */
  const thumbnails = () =>
    page.locator('#gallery img').evaluateAll((imgs) =>
      imgs.map((el) => {
        const img = el as unknown as { alt: string; naturalWidth: number; naturalHeight: number };
        return { alt: img.alt, w: img.naturalWidth, h: img.naturalHeight };
      }),
    );

  it(
    'asks for the token, then shows every manager and worker',
    async () => {
      await page.locator('#banner').waitFor({ state: 'visible', timeout: PAGE_WAIT_MS });
      await page.fill('#token', TOKEN);
      await page.click('#token-form button');
      await page.locator('tr[data-worker-id]').nth(2).waitFor({ timeout: PAGE_WAIT_MS });
      expect(await page.locator('tr[data-manager-id]').count()).toBe(3);
      expect(await page.locator('tr[data-role="leader"]').getAttribute('data-manager-id')).toBe(origin.id);
      for (const w of ['w1', 'w2', 'w3'])
        await expect.poll(() => rowState(w), { timeout: PAGE_WAIT_MS, interval: 250 }).toBe('up');
      expect(await page.locator('#banner').isHidden()).toBe(true);
      await expect
        .poll(() => page.locator('[data-total="objects"] strong').textContent(), { timeout: PAGE_WAIT_MS })
        .toBe(String(KEYS.length));
    },
    TEST_MS,
  );

  it(
    'shows the uploaded images as decoded thumbnails in the gallery',
    async () => {
      await page.fill('#bucket', 'photos');
      await page.fill('#prefix', '');
      await page.click('#gallery-form button');
      await page.locator('button.prefix', { hasText: 'trip/' }).click({ timeout: PAGE_WAIT_MS });
      await expect
        .poll(async () => (await thumbnails()).filter((t) => t.w > 0).length, { timeout: PAGE_WAIT_MS })
        .toBe(KEYS.length);
      const sizes = await thumbnails();
      expect(sizes.map((s) => s.alt).sort()).toEqual([...KEYS].sort());
      for (const s of sizes) {
        expect(Math.max(s.w, s.h), s.alt).toBe(THUMBNAIL_SIZE);
        expect(s.h, s.alt).toBeGreaterThan(0);
      }
      await page.screenshot({ path: join(shots, 'gallery.png'), fullPage: true });
    },
    TEST_MS,
  );

  it(
    'marks a killed worker down',
    async () => {
      await cluster.killWorker(cluster.worker('w3'));
      await expect.poll(() => rowState('w3'), { timeout: PAGE_WAIT_MS, interval: 250 }).toBe('down');
      await expect
        .poll(() => page.locator('#events').textContent(), { timeout: PAGE_WAIT_MS })
        .toMatch(/worker w3: \w+ → down/);
      await page.screenshot({ path: join(shots, 'worker-down.png'), fullPage: true });
    },
    TEST_MS,
  );

  it(
    'shows the new leader when the leader it was loaded from dies',
    async () => {
      await cluster.killManager(origin);
      const next = await cluster.leader(PAGE_WAIT_MS);
      expect(next.id).not.toBe(origin.id);
      await expect
        .poll(() => page.locator('#summary').getAttribute('data-leader'), {
          timeout: PAGE_WAIT_MS,
          interval: 250,
        })
        .toBe(next.id);
      expect(await page.locator(`tr[data-manager-id="${origin.id}"]`).getAttribute('data-role')).toBe(
        'unreachable',
      );
      await expect
        .poll(() => page.locator('#events').textContent(), { timeout: PAGE_WAIT_MS })
        .toContain(`new leader: ${next.id}`);
      // The gallery reads from the managers left, too.
      await page.click('#gallery-form button');
      await expect
        .poll(async () => (await thumbnails()).filter((t) => t.w > 0).length, { timeout: PAGE_WAIT_MS })
        .toBe(KEYS.length);
      await page.screenshot({ path: join(shots, 'new-leader.png'), fullPage: true });
    },
    TEST_MS,
  );
});
