// The chaos run's seeded randomness (mulberry32): the seed fixes the nemesis's schedule and the
// clients' operations and image bytes. The processes' timing is real, so a replay repeats the
// same decisions, not the same interleaving.

export class Rng {
  private state: number;

  constructor(seed: number) {
    this.state = seed >>> 0;
  }

  /** Uniform float in [0, 1). */
  float(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.float() * n);
  }

  pick<T>(items: readonly T[]): T {
    if (items.length === 0) throw new Error('pick from an empty list');
    return items[this.int(items.length)]!;
  }

  /** A child generator: the nemesis and the clients draw from their own, so neither shifts the other. */
  fork(): Rng {
    return new Rng(this.int(2 ** 32));
  }
}
