import type { RopeTable } from '../backend/backend.ts';
import type { ModelConfig } from './model-config.ts';

/**
 * Host-side rotary tables reproducing transformers' `ROPE_INIT_FUNCTIONS` (default, linear,
 * dynamic, llama3, yarn). Computed in float64 and stored as float32; YaRN's attention factor is
 * folded into cos and sin so backends apply every variant the same way.
 */
export function buildRopeTable(config: ModelConfig, maxPositions: number): RopeTable {
  const half = config.headDim / 2;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  const scale = config.ropeScaling.type === 'yarn' ? config.ropeScaling.attentionFactor : 1;
  let inverse = inverseFrequencies(config, 0);
  for (let p = 0; p < maxPositions; p++) {
    // Dynamic NTK rescales once a position passes max_position_embeddings (see inverseFrequencies).
    if (config.ropeScaling.type === 'dynamic' && p + 1 > config.maxPositionEmbeddings) inverse = inverseFrequencies(config, p);
    for (let i = 0; i < half; i++) {
      const angle = p * inverse[i];
      cos[p * half + i] = Math.cos(angle) * scale;
      sin[p * half + i] = Math.sin(angle) * scale;
    }
  }
  return { maxPositions, headDim: config.headDim, cos, sin };
}

/**
 * Inverse frequency of each rotated pair [headDim / 2] for the token at `position`. Only dynamic
 * NTK depends on the position: transformers recomputes its base from seq_len = max(position_ids) + 1,
 * and with a KV cache each decoded token is rotated with seq_len = its position + 1 while earlier
 * keys keep theirs, so Keel uses seq_len = max(position + 1, max_position_embeddings) per position.
 */
export function inverseFrequencies(config: ModelConfig, position: number): Float64Array {
  const dim = config.headDim;
  const scaling = config.ropeScaling;
  switch (scaling.type) {
    case 'default':
      return baseInverseFrequencies(config.ropeTheta, dim);
    case 'linear':
      return baseInverseFrequencies(config.ropeTheta, dim).map((f) => f / scaling.factor);
    case 'dynamic': {
      const maxPositions = config.maxPositionEmbeddings;
      const seqLen = Math.max(position + 1, maxPositions);
      const base = config.ropeTheta * ((scaling.factor * seqLen) / maxPositions - (scaling.factor - 1)) ** (dim / (dim - 2));
      return baseInverseFrequencies(base, dim);
    }
    case 'llama3': {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldContext } = scaling;
      const lowFreqWavelength = oldContext / lowFreqFactor;
      const highFreqWavelength = oldContext / highFreqFactor;
      return baseInverseFrequencies(config.ropeTheta, dim).map((f) => {
        const wavelength = (2 * Math.PI) / f;
        if (wavelength < highFreqWavelength) return f;
        if (wavelength > lowFreqWavelength) return f / factor;
        const smooth = (oldContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        return ((1 - smooth) * f) / factor + smooth * f;
      });
    }
    case 'yarn': {
      const [low, high] = yarnCorrectionRange(config.ropeTheta, dim, scaling);
      const span = low === high ? 0.001 : high - low;
      return baseInverseFrequencies(config.ropeTheta, dim).map((extrapolated, i) => {
        // Pairs below `low` rotate many times within the original context: keep them (extrapolate);
        // pairs above `high` rotate less than once: interpolate them by the factor; ramp in between.
        const interpolationWeight = Math.min(1, Math.max(0, (i - low) / span));
        return (extrapolated / scaling.factor) * interpolationWeight + extrapolated * (1 - interpolationWeight);
      });
    }
  }
}

function baseInverseFrequencies(base: number, dim: number): Float64Array {
  const inverse = new Float64Array(dim / 2);
  for (let i = 0; i < dim / 2; i++) inverse[i] = 1 / base ** ((2 * i) / dim);
  return inverse;
}

/** Pair indices where YaRN's ramp starts and ends: the dims that complete beta_fast and beta_slow rotations in the original context. */
function yarnCorrectionRange(
  base: number,
  dim: number,
  s: { betaFast: number; betaSlow: number; originalMaxPositionEmbeddings: number; truncate: boolean },
): [number, number] {
  const correctionDim = (rotations: number) =>
    (dim * Math.log(s.originalMaxPositionEmbeddings / (rotations * 2 * Math.PI))) / (2 * Math.log(base));
  let low = correctionDim(s.betaFast);
  let high = correctionDim(s.betaSlow);
  if (s.truncate) {
    low = Math.floor(low);
    high = Math.ceil(high);
  }
  return [Math.max(low, 0), Math.min(high, dim - 1)];
}
