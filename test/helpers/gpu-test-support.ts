// Helpers shared by the *.gpu.test.ts files (data and batches come from src/bench/synthetic-batch.ts).
import type { Rng } from '../../src/bench/synthetic-batch.ts';

/** A seed from the environment (KEEL_TEST_SEED) or the clock, printed so a failure can be replayed. */
export function testSeed(name: string): number {
  const seed = process.env.KEEL_TEST_SEED ? Number(process.env.KEEL_TEST_SEED) : Date.now() % 1_000_000;
  console.log(`${name}: seed ${seed}`);
  return seed;
}

export function randInt(rng: Rng, lo: number, hi: number): number {
  return lo + Math.floor(rng() * (hi - lo + 1));
}

export function pick<T>(rng: Rng, items: readonly T[]): T {
  return items[Math.floor(rng() * items.length)];
}

/**
 * Relative error allowed between CUDA and CPU attention over a quantized KV cache. The CPU
 * quantizes float32 keys, the GPU bf16 ones, so a value near a rounding boundary lands one code
 * apart: an e4m3 code step is 6-12 % of the value (3 mantissa bits), an int8 step 1/127 of the
 * row's largest, an int4 step 1/15 of its range. On the H200, fp8 prefills over 100+ keys reached
 * 0.023; int8 stayed under 0.02. int4's bound is set from fp8's, whose steps are alike, before any
 * GPU run.
 */
export function kvCodeTolerance(dtype: string): number {
  return dtype === 'int8' ? 2e-2 : dtype === 'int4' ? 6e-2 : 4e-2;
}

/** ‖out − ref‖ / ‖ref‖, Infinity when out holds a NaN or the sizes differ. */
export function relativeError(out: Float32Array, ref: Float32Array): number {
  if (out.length !== ref.length) return Infinity;
  let num = 0;
  let den = 0;
  for (let i = 0; i < out.length; i++) {
    if (Number.isNaN(out[i])) return Infinity;
    num += (out[i] - ref[i]) ** 2;
    den += ref[i] ** 2;
  }
  return Math.sqrt(num / Math.max(den, 1e-30));
}

