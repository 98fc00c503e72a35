// What the drill's clients did and were told: every acknowledged upload with its sha256, every
// acknowledged delete, every failed request, and anything read during the load that contradicts
// an acknowledgement. The checker judges the cluster against this record.

/**
 * `acked`: a 201 was received and no delete was sent; `deleting`: a delete is in flight;
 * `deleted`: a delete was acknowledged (204); `uncertain`: a delete failed without an answer that
 * says whether it took effect, so the image may or may not exist and is checked neither way.
 */
export type ImageState = 'acked' | 'deleting' | 'deleted' | 'uncertain';

export type Op = 'upload' | 'read' | 'delete';

export interface Outcome {
  op: Op;
  /** When the answer arrived (ms since the drill's start). */
  at: number;
  ok: boolean;
  status: number | string;
}

/** A contradiction of an acknowledgement: `missing`/`corrupt` lose an image, `stale` shows a deleted one. */
export interface Problem {
  kind: 'missing' | 'corrupt' | 'unreadable' | 'stale';
  id: string;
  /** The manager that answered, or `load` for a read made by the load's clients. */
  where: string;
  status: number | string;
}

export interface ImageRecord {
  sha256: string;
  state: ImageState;
}

export class DrillLedger {
  readonly images = new Map<string, ImageRecord>();
  readonly outcomes: Outcome[] = [];
  readonly problems: Problem[] = [];
  private readonly started = Date.now();

  now(): number {
    return Date.now() - this.started;
  }

  record(op: Op, ok: boolean, status: number | string): void {
    this.outcomes.push({ op, at: this.now(), ok, status });
  }

  acked(id: string, sha256: string): void {
    this.images.set(id, { sha256, state: 'acked' });
  }

  setState(id: string, state: ImageState): void {
    const image = this.images.get(id);
    if (image) image.state = state;
  }

  state(id: string): ImageState | undefined {
    return this.images.get(id)?.state;
  }

  /** Ids in `state`, e.g. to pick an image to read or delete. */
  idsIn(state: ImageState): string[] {
    return [...this.images].filter(([, r]) => r.state === state).map(([id]) => id);
  }

  /** Images every manager must serve byte for byte, and ids none may serve. */
  expected(): ExpectedImages {
    const present = new Map<string, string>();
    const deleted = new Set<string>();
    for (const [id, r] of this.images) {
      if (r.state === 'acked') present.set(id, r.sha256);
      if (r.state === 'deleted') deleted.add(id);
    }
    return { present, deleted };
  }
}

export interface ExpectedImages {
  /** id -> sha256 of the bytes acknowledged. */
  present: Map<string, string>;
  deleted: Set<string>;
}
