// Uploads a test holds open against a real manager, to fill the upload admission's caps and the
// leader's staging: a body's first bytes sent, then the rest trickled, finished or given up on the
// test's word, the answer read whenever it comes.

import { request as httpRequest, type IncomingMessage } from 'node:http';
import { expect } from 'vitest';
import { pngImage } from '../integration/imageCluster.ts';
import { until } from './until.ts';

export interface Answer {
  status: number;
  headers: IncomingMessage['headers'];
  body: string;
}

export interface HeldUploadOptions {
  token: string;
  /** The whole body, which `finish()` completes; default a PNG of `length` bytes unless `first` is given. */
  image?: Buffer;
  /** The Content-Length (default the image's, else 150,000); 0 sends the body chunked. */
  length?: number;
  /** What is sent at once; default the image's first 4,200 bytes (past the type sniff). */
  first?: Buffer;
  /** 100 bytes every 250 ms after `first` (above a minimum rate of 100 B/s, far from done). */
  trickle?: boolean;
}

export interface HeldUpload {
  /** Settles when the manager answers. */
  answer: Promise<Answer>;
  /** Sends the rest of the image, ending the body. */
  finish(): void;
  /** Gives up the upload: the manager sees the connection go. */
  stop(): void;
  bodyBytesSent(): number;
  length: number;
}

/** A POST of an image to `url`/v1/images that holds its slot until it is finished or stopped. */
export function holdUpload(url: string, opts: HeldUploadOptions): HeldUpload {
  const length = opts.length ?? opts.image?.length ?? 150_000;
  const image = opts.image ?? (opts.first ? undefined : pngImage(length));
  const body = opts.first ?? image!.subarray(0, 4_200);
  const req = httpRequest(`${url}/v1/images`, {
    method: 'POST',
    headers: {
      authorization: `Bearer ${opts.token}`,
      'content-type': 'application/octet-stream',
      ...(length > 0 ? { 'content-length': String(length) } : { 'transfer-encoding': 'chunked' }),
    },
  });
  let sent = 0;
  let timer: NodeJS.Timeout | undefined;
  const answer = new Promise<Answer>((resolve, reject) => {
    req.on('response', (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (d) => {
        text += d;
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: text }));
      res.on('error', reject);
    });
    req.on('error', reject);
  });
  answer.catch(() => {});
  req.write(body);
  sent += body.length;
  if (opts.trickle) {
    timer = setInterval(() => {
      if (sent + 100 < length) {
        req.write(Buffer.alloc(100, 7));
        sent += 100;
      }
    }, 250);
  }
  return {
    answer,
    finish() {
      if (!image) throw new Error('finish() sends the rest of opts.image: pass it');
      clearInterval(timer);
      req.end(image.subarray(sent));
      sent = image.length;
    },
    stop() {
      clearInterval(timer);
      req.destroy();
    },
    bodyBytesSent: () => sent,
    length,
  };
}

/** `answer`, or a failure naming the wait once `ms` have passed. */
export async function settle<T>(answer: Promise<T>, ms = 15_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<T>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([answer, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** A 503 naming `code` and the flag of `cap`, with Retry-After, before the client had sent its whole body. */
export function expectRefusedEarly(held: HeldUpload, answer: Answer, code: string, cap: string): void {
  expect(answer.status).toBe(503);
  expect(answer.headers['retry-after']).toBeDefined();
  const body = JSON.parse(answer.body) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message).toContain(cap);
  expect(held.bodyBytesSent()).toBeLessThan(held.length);
}

/** Waits until `token` holds no upload slot any more: a whole upload of it passes (and is deleted). */
export async function slotsFree(url: string, token: string): Promise<void> {
  await until(
    'upload slots released',
    async () => {
      const res = await fetch(`${url}/v1/images`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}` },
        body: pngImage(1_000),
        signal: AbortSignal.timeout(5_000),
      });
      if (res.status !== 201) return false;
      const { id } = (await res.json()) as { id: string };
      const del = await fetch(`${url}/v1/images/${id}`, {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}` },
      });
      return del.status === 204;
    },
    30_000,
  );
}
