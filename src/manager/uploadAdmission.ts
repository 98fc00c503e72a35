// Admission of uploads on the leader, before a byte of the body is read. Every upload holds a slot
// and reserves its staged bytes (its Content-Length, or the image size limit when it declares none)
// until it is answered: a client, even one holding a valid token, cannot fill the staging disk or
// exhaust the leader's sockets and memory with uploads it never finishes (docs/security.md).

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

export class UploadAdmission {
  private readonly total: Usage = { uploads: 0, bytes: 0 };
  private readonly clients = new Map<string, Usage>();

  constructor(readonly limits: UploadLimits) {}

  /** Takes a slot and `bytes` of staging for `client`, or says which cap is reached. */
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
      },
    };
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
