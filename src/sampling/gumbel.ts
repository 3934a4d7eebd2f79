/**
 * Noise for sampling by the Gumbel-max trick: argmax over i of (logit_i / T + g_i), with g_i
 * independent Gumbel(0, 1) noise, is a draw from softmax(logits / T) — no sort, no
 * normalization, one pass, which is how the GPU samples (draw-sampler.ts). The noise is a pure
 * function of (seed, token index), the same on every backend, so a row samples the same token
 * wherever it is computed (up to float rounding).
 */

/** murmur3's 32-bit finalizer: a bijection that mixes every input bit into every output bit. */
function mix32(h: number): number {
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

/** Gumbel(0, 1) noise for token `index` of a row drawn with `seed` (float32 arithmetic, as on the GPU). */
export function gumbelNoise(seed: number, index: number): number {
  const h = mix32(mix32((seed ^ Math.imul(index, 0x9e3779b9)) >>> 0) ^ 0x5bd1e995);
  // 24 random bits, centred in their interval: u in (0, 1), never 0 or 1.
  const u = Math.fround((Math.fround(h >>> 8) + 0.5) * 2 ** -24);
  return Math.fround(-Math.log(Math.fround(-Math.log(u))));
}
