/**
 * Per-sequence random numbers. Every completion owns its generator, so its tokens depend only on
 * its request's seed and its completion index, never on what else shares the batch.
 */
export interface Rng {
  /** Uniform in [0, 2^32). */
  nextUint32(): number;
  /** Uniform in [0, 1) with 53 random bits. */
  nextFloat(): number;
  /** A generator in this one's state that goes on independently (to look ahead without consuming). */
  clone(): Rng;
}

/**
 * xoshiro128** (Blackman & Vigna): 128 bits of state, 32-bit integer math only, so it runs at
 * full speed in JS without BigInt. The state must not be all zero.
 */
export class Xoshiro128StarStar implements Rng {
  private s0: number;
  private s1: number;
  private s2: number;
  private s3: number;

  constructor(state: readonly [number, number, number, number]) {
    [this.s0, this.s1, this.s2, this.s3] = state.map((word) => word >>> 0);
    if ((this.s0 | this.s1 | this.s2 | this.s3) === 0) throw new RangeError('xoshiro128** state must not be all zero');
  }

  nextUint32(): number {
    const result = Math.imul(rotl(Math.imul(this.s1, 5), 7), 9) >>> 0;
    const t = this.s1 << 9;
    this.s2 ^= this.s0;
    this.s3 ^= this.s1;
    this.s1 ^= this.s2;
    this.s0 ^= this.s3;
    this.s2 ^= t;
    this.s3 = rotl(this.s3, 11);
    return result;
  }

  clone(): Xoshiro128StarStar {
    const copy = Object.create(Xoshiro128StarStar.prototype) as Xoshiro128StarStar;
    [copy.s0, copy.s1, copy.s2, copy.s3] = [this.s0, this.s1, this.s2, this.s3];
    return copy;
  }

  nextFloat(): number {
    // 27 + 26 bits fill a double's mantissa: even a token of probability 1e-12 can be drawn.
    const high = this.nextUint32() >>> 5;
    const low = this.nextUint32() >>> 6;
    return (high * 67108864 + low) / 9007199254740992;
  }
}

/**
 * The generator of completion `streamIndex` of a request seeded with `seed` (any safe integer,
 * negative included). Distinct (seed, streamIndex) pairs give distinct states.
 */
export function forkStream(seed: number, streamIndex: number): Rng {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`rng seed must be a safe integer (got ${seed})`);
  if (!Number.isInteger(streamIndex) || streamIndex < 0 || streamIndex > 0xffffffff) {
    throw new RangeError(`rng stream index must be an integer in [0, 2^32) (got ${streamIndex})`);
  }
  const low = seed >>> 0;
  const high = Math.floor(seed / 4294967296) >>> 0;
  // fmix32 is a bijection, so each input word lands in its own state word without collisions; the
  // last word is a non-zero constant, which keeps the state from ever being all zero.
  const rng = new Xoshiro128StarStar([fmix32(low ^ 0x9e3779b9), fmix32(high ^ 0x85ebca6b), fmix32(streamIndex ^ 0xc2b2ae35), 0x27d4eb2f]);
  // The first outputs read only some state words; warming up spreads every input bit over all of them.
  for (let i = 0; i < 16; i++) rng.nextUint32();
  return rng;
}

function rotl(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}

/** MurmurHash3's 32-bit finalizer: an invertible avalanche mix. */
function fmix32(x: number): number {
  x ^= x >>> 16;
  x = Math.imul(x, 0x85ebca6b);
  x ^= x >>> 13;
  x = Math.imul(x, 0xc2b2ae35);
  x ^= x >>> 16;
  return x >>> 0;
}
