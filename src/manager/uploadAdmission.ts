// Admission of uploads on the leader, before a byte of the body is read. Every upload holds a slot
// and reserves its staged bytes (its Content-Length, or the image size limit when it declares none)
// until it is answered: a client, even one holding a valid token, cannot fill the staging disk or
// exhaust the leader's sockets and memory with uploads it never finishes (docs/security.md).
//
// An upload over a cap waits a while for room before it is refused, its body unread: under a
// burst, TCP holds the waiting clients' bytes back, where refusing at once had every refused
// client send its whole body anyway (read and dropped so that it can read its 503) and retry,
// spending on refusals the CPU the admitted uploads needed. The queue is bounded in length and in
// time, so it holds no more sockets than the caps allow plus `maxWaiting`.

export interface UploadLimits {
  /** Uploads in progress on this leader, all clients together. */
  maxUploads: number;
  /** Uploads in progress for one client (a token when tokens are on, else a remote address). */
  maxUploadsPerClient: number;
  /** Bytes reserved in the staging folder, all clients together. */
  maxStagedBytes: number;
  /** Bytes reserved in the staging folder for one client. */
  maxStagedBytesPerClient: number;
}

export type AdmissionCap = keyof UploadLimits;

export interface AdmissionWait {
  /** How long an upload over a cap waits for room before it is refused; 0 refuses at once. */
  waitMs: number;
  /** Uploads waiting at once, all clients together; past it an upload is refused at once. */
  maxWaiting: number;
}

const NO_WAIT: AdmissionWait = { waitMs: 0, maxWaiting: 0 };

/** The flag that sets each cap, named in a refusal so an operator knows what to raise. */
export const CAP_FLAGS: Record<AdmissionCap, string> = {
  maxUploads: '--max-uploads',
  maxUploadsPerClient: '--max-uploads-per-client',
  maxStagedBytes: '--max-staged-bytes',
  maxStagedBytesPerClient: '--max-staged-bytes-per-client',
};

export interface AdmissionRefusal {
  cap: AdmissionCap;
  code: 'TooManyUploads' | 'StagingFull';
  message: string;
}

export type Admission = { ok: true; release: () => void } | { ok: false; refusal: AdmissionRefusal };

interface Usage {
  uploads: number;
  bytes: number;
}

interface Waiter {
  client: string;
  bytes: number;
  settle: (admission: Admission) => void;
}

export class UploadAdmission {
  private readonly total: Usage = { uploads: 0, bytes: 0 };
  private readonly clients = new Map<string, Usage>();
  /** In arrival order; each one does not fit as things stand (every release admits those that do). */
  private readonly waiters: Waiter[] = [];

  constructor(
    readonly limits: UploadLimits,
    readonly wait: AdmissionWait = NO_WAIT,
  ) {}

  /**
   * Takes a slot and `bytes` of staging for `client`, waiting up to `wait.waitMs` for room when a
   * cap is reached; refused at once when the queue is full or no release could ever make room.
   * A client that leaves while it waits keeps its place until then: the wait is what bounds it.
   */
  acquire(client: string, bytes: number): Promise<Admission> {
    const now = this.admit(client, bytes);
    if (now.ok || !this.mayWait(bytes)) return Promise.resolve(now);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        client,
        bytes,
        settle: (admission) => {
          clearTimeout(timer);
          this.waiters.splice(this.waiters.indexOf(waiter), 1);
          resolve(admission);
        },
      };
      const refuseLate = () => {
        const refusal =
          this.refusal(this.clients.get(client) ?? { uploads: 0, bytes: 0 }, bytes) ?? now.refusal;
        waiter.settle({
          ok: false,
          refusal: { ...refusal, message: `waited ${this.wait.waitMs} ms: ${refusal.message}` },
        });
      };
      const timer = setTimeout(refuseLate, this.wait.waitMs);
      this.waiters.push(waiter);
    });
  }

  /** Uploads waiting for room now (tests read it). */
  waiting(): number {
    return this.waiters.length;
  }

  /** Takes a slot and `bytes` of staging for `client` now, or says which cap is reached. */
  admit(client: string, bytes: number): Admission {
    const mine = this.clients.get(client) ?? { uploads: 0, bytes: 0 };
    const refusal = this.refusal(mine, bytes);
    if (refusal) return { ok: false, refusal };
    mine.uploads += 1;
    mine.bytes += bytes;
    this.total.uploads += 1;
    this.total.bytes += bytes;
    this.clients.set(client, mine);
    let released = false;
    return {
      ok: true,
      release: () => {
        if (released) return;
        released = true;
        mine.uploads -= 1;
        mine.bytes -= bytes;
        this.total.uploads -= 1;
        this.total.bytes -= bytes;
        if (mine.uploads === 0) this.clients.delete(client);
        this.admitWaiters();
      },
    };
  }

  /** Room can come of a release only for an upload no bytes cap refuses on its own. */
  private mayWait(bytes: number): boolean {
    const { limits, wait } = this;
    return (
      wait.waitMs > 0 &&
      this.waiters.length < wait.maxWaiting &&
      bytes <= limits.maxStagedBytesPerClient &&
      bytes <= limits.maxStagedBytes
    );
  }

  /** Every waiter that fits now, in arrival order: one whose own client is at its cap lets the next pass. */
  private admitWaiters(): void {
    for (const waiter of [...this.waiters]) {
      if (this.total.uploads >= this.limits.maxUploads) return;
      const admission = this.admit(waiter.client, waiter.bytes);
      if (admission.ok) waiter.settle(admission);
    }
  }

  /** What is held now, for tests and metrics. */
  usage(client?: string): Usage {
    const u = client === undefined ? this.total : this.clients.get(client);
    return { uploads: u?.uploads ?? 0, bytes: u?.bytes ?? 0 };
  }

  private refusal(mine: Usage, bytes: number): AdmissionRefusal | null {
    const { limits } = this;
    if (mine.uploads + 1 > limits.maxUploadsPerClient) {
      return this.refuse(
        'maxUploadsPerClient',
        `this client already has ${mine.uploads} uploads in progress`,
      );
    }
    if (this.total.uploads + 1 > limits.maxUploads) {
      return this.refuse('maxUploads', `the leader already has ${this.total.uploads} uploads in progress`);
    }
    if (mine.bytes + bytes > limits.maxStagedBytesPerClient) {
      return this.refuse(
        'maxStagedBytesPerClient',
        `this client's uploads would stage ${mine.bytes + bytes} bytes`,
      );
    }
    if (this.total.bytes + bytes > limits.maxStagedBytes) {
      return this.refuse(
        'maxStagedBytes',
        `uploads in progress would stage ${this.total.bytes + bytes} bytes`,
      );
    }
    return null;
  }

  private refuse(cap: AdmissionCap, what: string): AdmissionRefusal {
    const isBytes = cap === 'maxStagedBytes' || cap === 'maxStagedBytesPerClient';
    return {
      cap,
      code: isBytes ? 'StagingFull' : 'TooManyUploads',
      message:
        `${what}, over the cap ${cap} = ${this.limits[cap]} (${CAP_FLAGS[cap]}); retry later` +
        (isBytes ? ', and send a Content-Length: an upload without one reserves the image size limit' : ''),
    };
  }
}
