import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir, readlink, rm, symlink } from 'node:fs/promises';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import {
  READ_LINK_CLOCK_SLACK_MS,
  READ_LINK_TTL_MS,
  type ReadLinkClaims,
  readLinkUrl,
} from '../../src/protocol/readLink.ts';
import { AUTH, flipByte, type RunningWorker, SECRET, sha256Of, useWorkerFolder } from './workerHarness.ts';

const folder = useWorkerFolder();

async function put(w: RunningWorker, id: string, body: Buffer): Promise<void> {
  const res = await request(`${w.url}/blobs/${id}`, {
    method: 'PUT',
    body,
    headers: { ...AUTH, 'x-imgvault-sha256': sha256Of(body) },
  });
  await res.body.dump();
  expect(res.statusCode).toBe(201);
}

/** A GET without the cluster secret, as a client sent by a manager makes it. */
async function fetchLink(url: string) {
  const res = await request(url);
  return { status: res.statusCode, headers: res.headers, body: Buffer.from(await res.body.arrayBuffer()) };
}

/** imgvault_worker_bytes_out_total of `w`. */
async function bytesOut(w: RunningWorker): Promise<number> {
  return (await w.worker.metrics.bytesOut.get()).values[0]?.value ?? 0;
}

/** How many of this process's file descriptors are open on `file` (Linux; 0 where /proc is absent). */
async function openFdsOn(file: string): Promise<number> {
  if (!existsSync('/proc/self/fd')) return 0;
  let count = 0;
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target === file) count += 1;
  }
  return count;
}

function claimsOf(id: string, body: Buffer, extra: Partial<ReadLinkClaims> = {}): ReadLinkClaims {
  return {
    id,
    size: body.length,
    sha256: sha256Of(body),
    crc32c: crc32cHex(body),
    contentType: 'image/png',
    exp: Date.now() + 60_000,
    ...extra,
  };
}

describe('direct reads through a signed link', () => {
  const small = randomBytes(200_000);
  const large = randomBytes(3 * 1024 * 1024 + 17);

  it("serves the record's bytes, small and streamed, with the image's headers and no cluster secret", async () => {
    const w = await folder.start('a');
    await put(w, 'img', small);
    await put(w, 'big', large);
    const res = await fetchLink(readLinkUrl(w.url, SECRET, claimsOf('img', small)));
    expect(res.status).toBe(200);
    expect(res.body.equals(small)).toBe(true);
    expect(res.headers).toMatchObject({
      'content-type': 'image/png',
      etag: `"${sha256Of(small)}"`,
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'none'; sandbox",
    });
    const big = await fetchLink(readLinkUrl(w.url, SECRET, claimsOf('big', large)));
    expect(big.status).toBe(200);
    expect(big.body.equals(large)).toBe(true);
  });

  it('answers HEAD from the index: no bytes read or counted, no file left open', async () => {
    const w = await folder.start('a');
    await put(w, 'img', small);
    await put(w, 'big', large);
    const before = await bytesOut(w);
    for (const [id, body] of [
      ['img', small],
      ['big', large],
    ] as const) {
      const link = readLinkUrl(w.url, SECRET, claimsOf(id, body));
      for (let i = 0; i < 20; i++) {
        const res = await request(link, { method: 'HEAD' });
        await res.body.dump();
        expect(res.statusCode).toBe(200);
        expect(res.headers['content-length']).toBe(String(body.length));
        expect(res.headers.etag).toBe(`"${sha256Of(body)}"`);
      }
    }
    expect(await bytesOut(w)).toBe(before);
    expect(await openFdsOn(w.store.blobPath('big'))).toBe(0);
    // A HEAD whose copy is not the link's is sent on as a GET would be.
    const other = randomBytes(small.length);
    const head = await request(readLinkUrl(w.url, SECRET, claimsOf('img', other)), { method: 'HEAD' });
    await head.body.dump();
    expect(head.statusCode).toBe(503);
  });

  it('refuses a link signed with another key, altered, expired or for another id', async () => {
    const w = await folder.start('a');
    await put(w, 'img', small);
    await put(w, 'other', small);
    const cases = [
      readLinkUrl(w.url, 'not-the-secret', claimsOf('img', small)),
      readLinkUrl(w.url, SECRET, claimsOf('img', small, { exp: Date.now() - 1 })),
      readLinkUrl(w.url, SECRET, claimsOf('img', small)).replace('/direct/img', '/direct/other'),
      `${w.url}/direct/img`,
    ];
    // A payload changed after signing (a later expiry) keeps the old signature.
    const signed = new URL(readLinkUrl(w.url, SECRET, claimsOf('img', small)));
    const [, mac] = signed.searchParams.get('t')!.split('.');
    const longer = Buffer.from(JSON.stringify(claimsOf('img', small, { exp: Date.now() + 1e9 }))).toString(
      'base64url',
    );
    signed.searchParams.set('t', `${longer}.${mac}`);
    cases.push(signed.toString());
    for (const url of cases) {
      const res = await fetchLink(url);
      expect(res.status, url).toBe(401);
      expect(JSON.parse(res.body.toString()).error.code).toBe('Unauthorized');
    }
  });

  it("refuses a link expiring further ahead than the TTL plus the clock slack (a manager's clock ahead)", async () => {
    const w = await folder.start('a');
    await put(w, 'img', small);
    const exp = (ms: number) => readLinkUrl(w.url, SECRET, claimsOf('img', small, { exp: Date.now() + ms }));
    const far = await fetchLink(exp(3_600_000));
    expect(far.status).toBe(401);
    const { error } = JSON.parse(far.body.toString());
    expect(error.code).toBe('Unauthorized');
    expect(error.message).toMatch(/expires in \d+ s.*clocks disagree/);
    // Within the slack, a link made by a manager whose clock is somewhat ahead is still served.
    const within = await fetchLink(exp(READ_LINK_TTL_MS + READ_LINK_CLOCK_SLACK_MS - 30_000));
    expect(within.status).toBe(200);
    const expired = await fetchLink(exp(-5_000));
    expect(expired.status).toBe(401);
    expect(JSON.parse(expired.body.toString()).error.message).toMatch(/expired \d+ s ago/);
  });

  it('sends the client on to the other copy when this one is missing, rotten or of other bytes', async () => {
    const a = await folder.start('a');
    const b = await folder.start('b');
    await put(b, 'img', small);
    const next = readLinkUrl(b.url, SECRET, claimsOf('img', small));
    const first = () => readLinkUrl(a.url, SECRET, claimsOf('img', small, { next }));

    const missing = await fetchLink(first());
    expect(missing.status).toBe(307);
    expect(missing.headers.location).toBe(next);
    const followed = await fetchLink(String(missing.headers.location));
    expect(followed.status).toBe(200);
    expect(followed.body.equals(small)).toBe(true);

    const other = Buffer.from(small);
    other[10]! ^= 1;
    await put(a, 'img', other);
    expect((await fetchLink(first())).status).toBe(307);

    // The record's bytes, rotten on disk since: caught before the first byte.
    const c = await folder.start('c');
    await put(c, 'img', small);
    await flipByte(c.store.blobPath('img'), 1000);
    const rotten = await fetchLink(readLinkUrl(c.url, SECRET, claimsOf('img', small, { next })));
    expect(rotten.status).toBe(307);
    expect(rotten.headers.location).toBe(next);
    // With no other copy to go to: 503, never other bytes.
    const last = await fetchLink(readLinkUrl(a.url, SECRET, claimsOf('img', small)));
    expect(last.status).toBe(503);
    expect(JSON.parse(last.body.toString()).error.code).toBe('Unavailable');
  });

  it('answers 500 Lost at the end of a chain over every copy when no worker of it holds the blob', async () => {
    const a = await folder.start('a');
    const b = await folder.start('b');
    const chain = (extra: Partial<ReadLinkClaims>) => {
      const next = readLinkUrl(b.url, SECRET, claimsOf('img', small, extra));
      return readLinkUrl(a.url, SECRET, claimsOf('img', small, { ...extra, next }));
    };
    const sent = await fetchLink(chain({ copies: 2 }));
    expect(sent.status).toBe(307);
    const lost = await fetchLink(String(sent.headers.location));
    expect(lost.status).toBe(500);
    expect(JSON.parse(lost.body.toString()).error).toMatchObject({ code: 'Lost' });
    // A chain that leaves out a copy (its worker down) cannot tell: unavailable.
    const partial = await fetchLink(String((await fetchLink(chain({}))).headers.location));
    expect(partial.status).toBe(503);
    // The last worker alone found its copy missing: the first one's copy is there but unreadable.
    await put(a, 'img', small);
    await flipByte(a.store.blobPath('img'), 1000);
    const rotten = await fetchLink(chain({ copies: 2 }));
    expect(rotten.status).toBe(307);
    const last = await fetchLink(String(rotten.headers.location));
    expect(last.status).toBe(503);
    expect(JSON.parse(last.body.toString()).error.code).toBe('Unavailable');
  });

  it('sends the client on when the copy cannot be read at all (ELOOP), or answers 503, never 500', async () => {
    const a = await folder.start('a');
    const b = await folder.start('b');
    await put(b, 'img', small);
    await put(b, 'big', large);
    for (const [id, body] of [
      ['img', small],
      ['big', large],
    ] as const) {
      await put(a, id, body);
      // A file that cannot be opened for a reason other than its absence: a symlink to itself.
      const file = a.store.blobPath(id);
      await rm(file);
      await symlink(file, file);
      const next = readLinkUrl(b.url, SECRET, claimsOf(id, body));
      const sent = await fetchLink(readLinkUrl(a.url, SECRET, claimsOf(id, body, { next })));
      expect(sent.status, id).toBe(307);
      expect(sent.headers.location).toBe(next);
      const followed = await fetchLink(next);
      expect(followed.body.equals(body)).toBe(true);
      const last = await fetchLink(readLinkUrl(a.url, SECRET, claimsOf(id, body)));
      expect(last.status, id).toBe(503);
      expect(JSON.parse(last.body.toString()).error.code).toBe('Unavailable');
    }
  });

  it("streams a large copy only if it is the link's: other bytes are sent on, rotten ones cut off", async () => {
    const a = await folder.start('a');
    const b = await folder.start('b');
    await put(b, 'big', large);
    const next = readLinkUrl(b.url, SECRET, claimsOf('big', large));
    const other = Buffer.from(large);
    other[5]! ^= 1;
    await put(a, 'big', other);
    const sent = await fetchLink(readLinkUrl(a.url, SECRET, claimsOf('big', large, { next })));
    expect(sent.status).toBe(307);
    expect(sent.headers.location).toBe(next);

    // The record's bytes, rotten on disk since: the last chunk is held back, so never a whole body.
    await flipByte(b.store.blobPath('big'), large.length - 10);
    const rotten = await request(readLinkUrl(b.url, SECRET, claimsOf('big', large)));
    expect(rotten.statusCode).toBe(200);
    const received = await rotten.body.arrayBuffer().then(
      (body) => Buffer.from(body),
      () => undefined,
    );
    expect(received === undefined || received.length < large.length).toBe(true);
  });

  it('counts what a streamed link read took from disk: all of a whole one, part of a cut one', async () => {
    const w = await folder.start('a');
    const huge = randomBytes(32 * 1024 * 1024);
    await put(w, 'big', large);
    await put(w, 'huge', huge);
    const before = await bytesOut(w);
    const whole = await fetchLink(readLinkUrl(w.url, SECRET, claimsOf('big', large)));
    expect(whole.body.equals(large)).toBe(true);
    await waitFor(async () => (await bytesOut(w)) === before + large.length);

    const afterWhole = await bytesOut(w);
    const cut = await request(readLinkUrl(w.url, SECRET, claimsOf('huge', huge)));
    expect(cut.statusCode).toBe(200);
    for await (const _chunk of cut.body) break;
    await waitFor(async () => (await bytesOut(w)) > afterWhole);
    const counted = (await bytesOut(w)) - afterWhole;
    expect(counted).toBeGreaterThan(0);
    expect(counted).toBeLessThan(huge.length);
  });
});

/** Waits, up to 20 s, until `check` holds. */
async function waitFor(check: () => Promise<boolean>): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not met within 20 s');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
