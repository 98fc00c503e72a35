// The chaos clients: each uploads (PUT /v1/images/:id, re-uploading the same id with the same or
// other bytes), reads and deletes small valid PNGs made from the seed, through any manager, and
// records every operation with its call and return time for the linearizability checker. An
// operation whose outcome cannot be known (timeout, cut connection, 5xx) is recorded `unknown`
// with return +Infinity; a read that got no answer tells nothing and is left out.

import { createHash } from 'node:crypto';
import { pngChunk } from '../../src/cli/drill/pngImages.ts';
import type { Input, Operation, Output } from './linearizability.ts';
import type { Rng } from './rng.ts';

export const sha256 = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** A well-formed 1x1 grey PNG padded to about `size` bytes with seeded bytes in a private chunk. */
export function seededPng(rng: Rng, size: number): Buffer {
  const signature = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(1, 0);
  ihdr.writeUInt32BE(1, 4);
  ihdr[8] = 8;
  const pad = Buffer.alloc(Math.max(1, size - 57));
  for (let i = 0; i < pad.length; i++) pad[i] = rng.int(256);
  return Buffer.concat([
    signature,
    pngChunk('IHDR', ihdr),
    pngChunk('prVt', pad),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

/**
 * One request, following a follower's 307 by hand (up to 3 hops): Node's fetch fails to re-send a
 * Buffer body on a redirect ("detached ArrayBuffer"), so each hop sends a fresh copy.
 */
export async function requestFollowingRedirects(
  url: string,
  init: { method: string; body?: Buffer },
  timeoutMs: number,
): Promise<Response> {
  const signal = AbortSignal.timeout(timeoutMs);
  let target = url;
  for (let hop = 0; ; hop++) {
    const body = init.body ? new Uint8Array(init.body) : undefined;
    const res = await fetch(target, { method: init.method, body, redirect: 'manual', signal });
    const location = res.headers.get('location');
    if ((res.status !== 307 && res.status !== 308) || location === null || hop >= 3) return res;
    await res.arrayBuffer().catch(() => undefined);
    target = new URL(location, target).href;
  }
}

interface IdState {
  id: string;
  variants: [Buffer, Buffer];
  ops: number;
}

export interface WorkloadOptions {
  seed: number;
  rng: Rng;
  managerUrls: () => string[];
  clients: number;
  /** Operations an id gets before it is retired for a fresh one: bounds each id's history. */
  opsPerId: number;
  activeIds: number;
  requestTimeoutMs: number;
  now: () => number;
}

export class Workload {
  readonly history: Operation[] = [];
  /** Every id ever used, with its two candidate contents. */
  readonly ids = new Map<string, IdState>();
  readonly unexpected: string[] = [];
  /** Why operations ended `unknown`: `PUT 503 NoLeader`, `DELETE timeout`... */
  readonly unknownReasons = new Map<string, number>();
  private active: IdState[] = [];
  private nextId = 0;
  private stopping = false;

  constructor(private readonly opts: WorkloadOptions) {}

  async run(until: Promise<void>): Promise<void> {
    void until.then(() => {
      this.stopping = true;
    });
    await Promise.all(Array.from({ length: this.opts.clients }, (_, i) => this.client(`c${i + 1}`)));
  }

  private pickId(): IdState {
    const { rng } = this.opts;
    this.active = this.active.filter((s) => s.ops < this.opts.opsPerId);
    while (this.active.length < this.opts.activeIds) {
      const id = `s${this.opts.seed}-${this.nextId++}`;
      const size = () => 100 + rng.int(8_000);
      const state: IdState = { id, variants: [seededPng(rng, size()), seededPng(rng, size())], ops: 0 };
      this.ids.set(id, state);
      this.active.push(state);
    }
    const s = rng.pick(this.active);
    s.ops++;
    return s;
  }

  private async client(name: string): Promise<void> {
    const { rng } = this.opts;
    while (!this.stopping) {
      const s = this.pickId();
      const url = rng.pick(this.opts.managerUrls());
      const r = rng.float();
      if (r < 0.5) await this.put(name, url, s, s.variants[rng.float() < 0.8 ? 0 : 1]);
      else if (r < 0.8) await this.get(name, url, s.id);
      else await this.delete(name, url, s.id);
    }
  }

  private record(id: string, client: string, input: Input, output: Output, call: number): void {
    const ret = output.kind === 'unknown' ? Number.POSITIVE_INFINITY : this.opts.now();
    this.history.push({ id, client, input, output, call, ret });
  }

  private async request(url: string, init: { method: string; body?: Buffer }): Promise<Response | null> {
    try {
      return await requestFollowingRedirects(url, init, this.opts.requestTimeoutMs);
    } catch (err) {
      this.noteUnknown(`${init.method} ${(err as Error).name}`);
      return null;
    }
  }

  private noteUnknown(reason: string): void {
    this.unknownReasons.set(reason, (this.unknownReasons.get(reason) ?? 0) + 1);
  }

  /** Reads the body; for a 5xx notes its error code among the unknown reasons. */
  private async drain(method: string, res: Response | null): Promise<void> {
    if (res === null) return;
    const text = await res.text().catch(() => '');
    if (res.status < 500) return;
    let code = '';
    try {
      code = (JSON.parse(text) as { error?: { code?: string } }).error?.code ?? '';
    } catch {}
    this.noteUnknown(`${method} ${res.status} ${code}`.trim());
  }

  async put(client: string, base: string, s: IdState, bytes: Buffer): Promise<void> {
    const call = this.opts.now();
    const res = await this.request(`${base}/v1/images/${s.id}`, { method: 'PUT', body: bytes });
    const input: Input = { kind: 'put', sha256: sha256(bytes) };
    const status = res?.status ?? 0;
    await this.drain('PUT', res);
    const output: Output =
      status === 201
        ? { kind: 'created' }
        : status === 200
          ? { kind: 'same' }
          : status === 409
            ? { kind: 'conflict' }
            : { kind: 'unknown' };
    if (status >= 400 && status < 500 && status !== 409) this.unexpected.push(`PUT ${s.id}: ${status}`);
    this.record(s.id, client, input, output, call);
  }

  /** A read: `found` only when the whole body arrived; no answer records nothing. */
  async get(client: string, base: string, id: string): Promise<Output | null> {
    const call = this.opts.now();
    const res = await this.request(`${base}/v1/images/${id}`, { method: 'GET' });
    if (res === null) return null;
    let output: Output | null = null;
    if (res.status === 200) {
      const body = await res.arrayBuffer().catch(() => null);
      if (body !== null) output = { kind: 'found', sha256: sha256(new Uint8Array(body)) };
    } else {
      await this.drain('GET', res);
      if (res.status === 404) output = { kind: 'notFound' };
      else if (res.status < 500) this.unexpected.push(`GET ${id}: ${res.status}`);
    }
    if (output) this.record(id, client, { kind: 'get' }, output, call);
    return output;
  }

  async delete(client: string, base: string, id: string): Promise<void> {
    const call = this.opts.now();
    const res = await this.request(`${base}/v1/images/${id}`, { method: 'DELETE' });
    const status = res?.status ?? 0;
    await this.drain('DELETE', res);
    const output: Output =
      status === 204 ? { kind: 'deleted' } : status === 404 ? { kind: 'notFound' } : { kind: 'unknown' };
    if (status >= 400 && status < 500 && status !== 404) this.unexpected.push(`DELETE ${id}: ${status}`);
    this.record(id, client, { kind: 'delete' }, output, call);
  }
}
