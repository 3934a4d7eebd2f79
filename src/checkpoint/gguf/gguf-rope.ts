import { invalidModel } from '../../errors.ts';
import type { GgufMetadata } from './metadata.ts';

/**
 * A GGUF file's RoPE as config.json's `rope_parameters` (transformers 5: rope_theta inside).
 * llama.cpp's converter writes linear and YaRN scaling as `ARCH.rope.scaling.*` keys, and Llama
 * 3's scaling only as the per-frequency divisors of `rope_freqs.weight`, from which the llama3
 * parameters are recovered here (`freqFactors`).
 */
export function ropeParameters(m: GgufMetadata, arch: string, headDim: number, freqFactors: Float32Array | null): Record<string, unknown> {
  const theta = m.number(`${arch}.rope.freq_base`, 10000);
  const type = m.string(`${arch}.rope.scaling.type`, m.has(`${arch}.rope.scale_linear`) ? 'linear' : 'none');
  if (freqFactors !== null) {
    if (type !== 'none') throw invalidModel(`${m.source}: rope_freqs.weight and ${arch}.rope.scaling.type ${type} both scale RoPE; Keel reads one or the other`);
    return llama3FromFactors(m.source, theta, headDim, freqFactors);
  }
  switch (type) {
    case 'none':
      return { rope_type: 'default', rope_theta: theta };
    case 'linear':
      return { rope_type: 'linear', rope_theta: theta, factor: m.number(`${arch}.rope.scaling.factor`, m.number(`${arch}.rope.scale_linear`, 1)) };
    case 'yarn': {
      const params: Record<string, unknown> = {
        rope_type: 'yarn',
        rope_theta: theta,
        factor: m.number(`${arch}.rope.scaling.factor`),
        original_max_position_embeddings: m.uint(`${arch}.rope.scaling.original_context_length`),
      };
      const optional: [string, string][] = [
        ['yarn_beta_fast', 'beta_fast'],
        ['yarn_beta_slow', 'beta_slow'],
        ['yarn_attn_factor', 'attention_factor'],
      ];
      for (const [key, name] of optional) if (m.has(`${arch}.rope.scaling.${key}`)) params[name] = m.number(`${arch}.rope.scaling.${key}`);
      if (m.has(`${arch}.rope.scaling.yarn_ext_factor`) && m.number(`${arch}.rope.scaling.yarn_ext_factor`) !== 1) {
        throw invalidModel(`${m.source}: ${arch}.rope.scaling.yarn_ext_factor ${m.number(`${arch}.rope.scaling.yarn_ext_factor`)} is not supported (Keel's YaRN extrapolates fully, factor 1)`);
      }
      return params;
    }
    default:
      throw invalidModel(`${m.source}: ${arch}.rope.scaling.type "${type}" is not supported (none, linear, yarn; llama3 as rope_freqs.weight)`);
  }
}

/** Llama 3's own high_freq_factor, taken where the divisors leave it open. */
const LLAMA3_HIGH_FREQ_FACTOR = 4;

/**
 * Llama 3's scaling divides frequency i (wavelength w = 2π·θ^(2i/d)) by 1 where w is shorter than
 * original/high, by `factor` where it is longer than original/low, and in between by
 * 1 / ((1 − s)/factor + s) with s = (original/w − low)/(high − low). The divisors fix `factor`
 * (the largest) and s at the in-between frequencies. Only original/low and original/high matter,
 * so low = 1, as every Llama 3 config has it. Two or more in-between frequencies fix high and
 * original (s is a line in 1/w); with fewer, high is Llama 3's 4 and original what the one
 * in-between frequency, or else the shortest wavelength divided by `factor`, allows. Every divisor
 * is then recomputed from the result and compared.
 */
function llama3FromFactors(source: string, theta: number, headDim: number, factors: Float32Array): Record<string, unknown> {
  if (factors.length !== headDim / 2) throw invalidModel(`${source}: rope_freqs.weight has ${factors.length} values for a head dim of ${headDim} (${headDim / 2} expected)`);
  const factor = Math.max(...factors);
  const wavelength = (i: number) => 2 * Math.PI * theta ** ((2 * i) / headDim);
  const cannot = (why: string) => invalidModel(`${source}: rope_freqs.weight is not Llama 3 RoPE scaling that Keel can recover (${why})`);
  if (factor <= 1) throw cannot('no frequency is scaled');
  const middle: { w: number; s: number }[] = [];
  factors.forEach((f, i) => {
    if (f > 1 + 1e-6 && f < factor - 1e-6) middle.push({ w: wavelength(i), s: (1 / f - 1 / factor) / (1 - 1 / factor) });
  });
  let high: number;
  let original: number;
  if (middle.length >= 2) {
    const [first, last] = [middle[0], middle[middle.length - 1]];
    const slope = (last.s - first.s) / (1 / last.w - 1 / first.w);
    const lowOverRange = slope / first.w - first.s;
    if (!(lowOverRange > 0 && slope > 0)) throw cannot('the in-between divisors do not fall with the wavelength');
    high = Number((1 + 1 / lowOverRange).toFixed(4));
    original = Math.round(slope * (high - 1));
  } else {
    high = LLAMA3_HIGH_FREQ_FACTOR;
    const shortestScaled = Math.min(...[...factors].flatMap((f, i) => (f >= factor - 1e-6 ? [wavelength(i)] : [])));
    original = middle.length === 1 ? Math.round(middle[0].w * (1 + middle[0].s * (high - 1))) : Math.floor(shortestScaled);
  }
  factors.forEach((f, i) => {
    const w = wavelength(i);
    const s = (original / w - 1) / (high - 1);
    const expected = w < original / high ? 1 : w > original ? factor : 1 / ((1 - s) / factor + s);
    if (Math.abs(expected - f) > 1e-3 * f) throw cannot(`frequency ${i} is divided by ${f}, the recovered parameters give ${expected}`);
  });
  return { rope_type: 'llama3', rope_theta: theta, factor, low_freq_factor: 1, high_freq_factor: high, original_max_position_embeddings: original };
}
