// The drill's steady load: a few clients, each uploading, reading and deleting real PNG files in a
// loop through the managers the drill says are up (round robin), following redirects. Every answer
// goes into the ledger; a read that contradicts an acknowledgement is recorded as a problem there.

import { randomInt } from 'node:crypto';
import { drillRequest } from './drillHttp.ts';
import type { DrillLedger } from './drillLedger.ts';
import { sha256Hex } from './imageChecker.ts';
import { randomPng } from './pngImages.ts';

export interface LoadOptions {
  clients: number;
  /** Pause of each client between two requests. */
  pauseMs: number;
  requestTimeoutMs: number;
  /** The managers to send requests to now; the drill changes this as it kills and restarts them. */
  targets: () => string[];
}

/** How long a client waits on one upload before it sends the next beside it. */
const STRAGGLER_MS = 1_000;
/** Uploads of one client in flight at most, stragglers included. */
const MAX_STRAGGLERS = 4;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

const pick = <T>(items: T[]): T | undefined =>
  items.length === 0 ? undefined : items[randomInt(items.length)];

export class LoadGenerator {
  private running = false;
  private loops: Promise<void>[] = [];
  private turn = 0;

  constructor(
    private readonly ledger: DrillLedger,
    private readonly opts: LoadOptions,
  ) {}

  start(): void {
    this.running = true;
    // Each client writes and reads on two loops of its own, so a read held up by an election never
    // delays the next upload: the write-unavailable window measures the cluster, not the client.
    this.loops = Array.from({ length: this.opts.clients }, () => [this.writer(), this.reader()]).flat();
  }

  /** Stops sending and waits for the requests in flight to be answered (each is bounded). */
  async stop(): Promise<void> {
    this.running = false;
    await Promise.all(this.loops);
  }

  private target(): string | undefined {
    const targets = this.opts.targets();
    if (targets.length === 0) return undefined;
    return targets[this.turn++ % targets.length];
  }

  private async writer(): Promise<void> {
    const inFlight = new Set<Promise<void>>();
    while (this.running) {
      const target = this.target();
      if (target) {
        const upload: Promise<void> = this.upload(target).finally(() => inFlight.delete(upload));
        inFlight.add(upload);
        // An upload held by a stopped leader (leader-pause) must not hold this client's next one
        // until its timeout: past STRAGGLER_MS the client sends the next (to the next manager), as
        // a user's retry would, so the write-unavailable window measures the cluster.
        await Promise.race([upload, sleep(STRAGGLER_MS)]);
        if (inFlight.size >= MAX_STRAGGLERS) await Promise.race(inFlight);
      }
      await sleep(this.opts.pauseMs);
    }
    await Promise.all(inFlight);
  }

  /** Reads, and one request in four a delete, while there are a few images to spare. */
  private async reader(): Promise<void> {
    while (this.running) {
      const target = this.target();
      const acked = this.ledger.idsIn('acked');
      if (target && acked.length >= 4) {
        if (randomInt(4) === 0) await this.remove(target, pick(acked)!);
        else await this.read(target);
      }
      await sleep(this.opts.pauseMs);
    }
  }

  private async upload(target: string): Promise<void> {
    const bytes = randomPng();
    const res = await drillRequest(
      `${target}/v1/images`,
      { method: 'POST', body: bytes, headers: { 'content-type': 'image/png' } },
      this.opts.requestTimeoutMs,
    );
    const ok = res.status === 201;
    if (ok) {
      const { id } = JSON.parse(res.body.toString('utf8')) as { id: string };
      this.ledger.acked(id, sha256Hex(bytes));
    }
    this.ledger.record('upload', ok, res.status);
  }

  /** Mostly an acknowledged image; one read in four, a deleted one (which must not come back). */
  private async read(target: string): Promise<void> {
    const deleted = randomInt(4) === 0 ? pick(this.ledger.idsIn('deleted')) : undefined;
    const id = deleted ?? pick(this.ledger.idsIn('acked'));
    if (id === undefined) return;
    const res = await drillRequest(
      `${target}/v1/images/${encodeURIComponent(id)}`,
      { method: 'GET' },
      this.opts.requestTimeoutMs,
    );
    const record = this.ledger.images.get(id)!;
    if (deleted !== undefined) {
      this.ledger.record('read', res.status === 404, res.status);
      if (res.status === 200) this.ledger.problems.push({ kind: 'stale', id, where: 'load', status: 200 });
      return;
    }
    // Only an image still acknowledged when the answer came (no delete sent meanwhile) must be
    // there; a 404 for one whose delete raced the read is no failure.
    const raced = record.state !== 'acked';
    this.ledger.record('read', res.status === 200 || (raced && res.status === 404), res.status);
    if (raced) return;
    if (res.status === 404) this.ledger.problems.push({ kind: 'missing', id, where: 'load', status: 404 });
    if (res.status === 200 && sha256Hex(res.body) !== record.sha256) {
      this.ledger.problems.push({ kind: 'corrupt', id, where: 'load', status: 200 });
    }
  }

  private async remove(target: string, id: string): Promise<void> {
    this.ledger.setState(id, 'deleting');
    const res = await drillRequest(
      `${target}/v1/images/${encodeURIComponent(id)}`,
      { method: 'DELETE' },
      this.opts.requestTimeoutMs,
    );
    this.ledger.record('delete', res.status === 204, res.status);
    if (res.status === 204) this.ledger.setState(id, 'deleted');
    else if (res.status === 404) {
      // The one delete ever sent for this acknowledged image found it gone.
      this.ledger.setState(id, 'deleted');
      this.ledger.problems.push({ kind: 'missing', id, where: 'load', status: 404 });
    } else this.ledger.setState(id, 'uncertain');
  }
}
