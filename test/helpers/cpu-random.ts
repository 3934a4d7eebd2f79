import { forkStream, type Rng } from '../../src/sampling/rng.ts';

/**
 * The seed of a randomized test file: KEEL_TEST_SEED when set (to replay a failure), else a fresh
 * one. Printed either way so any failure can be reproduced.
 */
export function testSeed(label: string): number {
  const fromEnv = process.env.KEEL_TEST_SEED;
  const seed = fromEnv === undefined ? Math.floor(Math.random() * 2 ** 31) : Number(fromEnv);
  console.log(`${label}: seed ${seed} (replay with KEEL_TEST_SEED=${seed})`);
  return seed;
}

/** Seeded draws for building random shapes and tensors. */
export class TestRandom {
  private readonly rng: Rng;

  constructor(seed: number) {
    this.rng = forkStream(seed, 0);
  }

  /** Uniform in [lo, hi). */
  uniform(lo: number, hi: number): number {
    return lo + (hi - lo) * this.rng.nextFloat();
  }

  /** Uniform integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.rng.nextFloat() * (hi - lo + 1));
  }

  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)];
  }

  /** `count` float32 values uniform in [-scale, scale). */
  floats(count: number, scale = 1): Float32Array {
    const out = new Float32Array(count);
    for (let i = 0; i < count; i++) out[i] = this.uniform(-scale, scale);
    return out;
  }

  /** A Fisher-Yates shuffled copy. */
  shuffled<T>(items: readonly T[]): T[] {
    const out = [...items];
    for (let i = out.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [out[i], out[j]] = [out[j], out[i]];
    }
    return out;
  }
}
