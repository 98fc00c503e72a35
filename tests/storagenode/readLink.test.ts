import { randomBytes } from 'node:crypto';
import { request } from 'undici';
import { describe, expect, it } from 'vitest';
import { crc32cHex } from '../../src/protocol/checksums.ts';
import { type ReadLinkClaims, readLinkUrl } from '../../src/protocol/readLink.ts';
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
});
