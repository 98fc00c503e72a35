// An image sent as a multipart/form-data part (an HTML form, `curl -F file=@photo.jpg`): the first
// file part is the image, streamed through as it is parsed (@fastify/busboy), never buffered whole.
// Other fields are ignored; a second file part is refused rather than silently dropped.

import type { IncomingMessage } from 'node:http';
import type { Readable } from 'node:stream';
import { Busboy, type BusboyInstance } from '@fastify/busboy';
import { ImageError } from '../imageService.ts';

/** Bounds on what a form may carry besides its one file. */
const LIMITS = { files: 1, fields: 32, fieldSize: 64 * 1024, parts: 40, headerPairs: 100 };

export class FormError extends Error {}

/**
 * Waits for the form's first file part and returns its bytes as a stream; FormError when the body
 * is no well-formed form or ends without a file. Only the form up to that part is read here.
 */
export function formFile(incoming: IncomingMessage): Promise<AsyncIterable<Uint8Array>> {
  return new Promise((resolve, reject) => {
    let parser: BusboyInstance;
    try {
      parser = new Busboy({ headers: incoming.headers as { 'content-type': string }, limits: LIMITS });
    } catch (err) {
      reject(new FormError(err instanceof Error ? err.message : 'malformed multipart/form-data'));
      return;
    }
    let found = false;
    let failure: Error | null = null;
    parser.on('file', (_field: string, stream: Readable) => {
      found = true;
      resolve(checked(stream, () => failure));
    });
    parser.on('filesLimit', () => {
      failure = new FormError('the form holds more than one file: send one image per request');
    });
    parser.on('error', (err: unknown) => {
      failure = new FormError(err instanceof Error ? err.message : 'malformed multipart/form-data');
      if (!found) reject(failure);
    });
    parser.on('finish', () => {
      if (!found)
        reject(
          new FormError('the form holds no file part: send the image as a file (curl -F file=@photo.jpg)'),
        );
    });
    incoming.pipe(parser);
  });
}

async function* checked(stream: Readable, failure: () => Error | null): AsyncGenerator<Uint8Array> {
  for await (const chunk of stream) yield chunk as Uint8Array;
  const err = failure();
  if (err) throw new ImageError('EmptyBody', err.message);
  if ((stream as Readable & { truncated?: boolean }).truncated) {
    throw new ImageError('EmptyBody', 'the file part was cut short');
  }
}
