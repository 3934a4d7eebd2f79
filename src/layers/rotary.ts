import type { RopeTable, Tensor } from '../backend/backend.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import { loaded, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from './parameters.ts';

/** RoPE scaling variants, as transformers' `ROPE_INIT_FUNCTIONS` define them. */
export type RopeScaling =
  | { type: 'default' }
  /**
   * No rotation at all (NoPE: Llama 4's no-rope layers): every frequency is zero, so the table's
   * rotation is the identity and such layers cache their keys through the same op as the others.
   */
  | { type: 'none' }
  | { type: 'linear'; factor: number }
  /**
   * Gemma 4's full-attention RoPE: the head's leading floor(partialRotaryFactor · d / 2) pairs rotate
   * at default frequencies over the whole head (1 / theta^(2i/d), d = rotaryDim, the head dim) divided
   * by `factor`; the other pairs have frequency 0 and do not rotate. Unlike a partial rotary dim, the
   * pairs are rotate_half's over the whole head: dimension i with i + d/2.
   */
  | { type: 'proportional'; factor: number; partialRotaryFactor: number }
  | { type: 'dynamic'; factor: number }
  | {
      type: 'llama3';
      factor: number;
      lowFreqFactor: number;
      highFreqFactor: number;
      originalMaxPositionEmbeddings: number;
    }
  | {
      type: 'yarn';
      factor: number;
      originalMaxPositionEmbeddings: number;
      betaFast: number;
      betaSlow: number;
      /** Multiplies cos/sin; HF's `attention_factor`, derived from `mscale` when absent. */
      attentionFactor: number;
      /** HF's `truncate` (default true): round the correction range to whole dimensions. */
      truncate: boolean;
    }
  | {
      /**
       * Phi-3's LongRoPE: inv_freq_i = 1 / (factor_i · theta^(2i/d)) with the short factors, or the
       * long ones for a token at or past the original context or of a sequence whose prompt was
       * longer than it (see RotaryEmbedding.rotaryRow).
       */
      type: 'longrope';
      shortFactor: number[];
      longFactor: number[];
      originalMaxPositionEmbeddings: number;
      /** Multiplies cos/sin in both regimes. */
      attentionFactor: number;
    };

/** One rotary embedding: which dimensions of a head rotate, at which frequencies. */
export interface RotaryConfig {
  /** Leading dimensions of each head that rotate (the head dim, unless partial_rotary_factor < 1). */
  rotaryDim: number;
  theta: number;
  scaling: RopeScaling;
  maxPositionEmbeddings: number;
}

/**
 * A rotary embedding shared by the attention layers that use it: its table, built on the host for
 * `maxPositions` positions, is uploaded with the weights. Under StreamingLLM (`streaming`) the
 * attention layers assign positions inside the cache (docs/long-context.md): every row then rotates
 * at the frequencies of a sequence as long as the cache, since no query sees a key farther away.
 */
export class RotaryEmbedding implements Layer {
  readonly config: RotaryConfig;
  readonly streaming: StreamingWindow | null;
  private readonly maxPositions: number;
  private tableTensor: Tensor | null = null;

  constructor(config: RotaryConfig, maxPositions: number, streaming: StreamingWindow | null = null) {
    if (config.rotaryDim % 2 !== 0) throw new Error(`rotary dim must be even (got ${config.rotaryDim})`);
    const scaling = config.scaling;
    if (scaling.type === 'longrope' && (scaling.shortFactor.length !== config.rotaryDim / 2 || scaling.longFactor.length !== config.rotaryDim / 2)) {
      throw new Error(`LongRoPE needs ${config.rotaryDim / 2} short and long factors for rotary dim ${config.rotaryDim}`);
    }
    this.config = config;
    this.maxPositions = maxPositions;
    this.streaming = streaming;
  }

  /**
   * The table row a token at `position` is rotated with, in a sequence whose original prompt had
   * `promptLength` tokens: the position, except under LongRoPE, whose long-factor rows follow the
   * short ones. transformers picks the long factors for a whole forward once its longest position
   * reaches the original context; with a KV cache that means a prompt longer than the original
   * context is rotated long from position 0, and a shorter one short, its later tokens long from
   * the original context on (their earlier keys stay as they were cached).
   */
  rotaryRow(position: number, promptLength: number): number {
    const scaling = this.config.scaling;
    if (scaling.type !== 'longrope' || this.streaming !== null) return position;
    const original = scaling.originalMaxPositionEmbeddings;
    return position >= original || promptLength > original ? longropeShortRows(scaling, this.maxPositions) + position : position;
  }

  /** Rotation that depends on the prompt makes cached K/V depend on it too: long-factor prompts get a salt of their own. */
  prefixCacheSalt(promptLength: number): string | null {
    const scaling = this.config.scaling;
    const long = scaling.type === 'longrope' && this.streaming === null && promptLength > scaling.originalMaxPositionEmbeddings;
    return long ? 'longrope:long-factors' : null;
  }

  parameters(): ParameterSpec[] {
    return [];
  }

  load(_source: WeightSource, uploader: WeightUploader): void {
    const { streaming } = this;
    const table = streaming === null ? buildRopeTable(this.config, this.maxPositions) : buildFixedRopeTable(this.config, this.maxPositions, streaming.sinks + streaming.window);
    this.tableTensor = uploader.uploadRopeTable(table);
  }

  get table(): Tensor {
    return loaded(this.tableTensor, 'the rotary table');
  }
}

/**
 * The longest sequence a rotary embedding supports. Scaling that stretches positions (linear,
 * dynamic NTK, YaRN) extends the trained context by its factor, as vLLM derives it; llama3
 * checkpoints already declare their extended length in max_position_embeddings.
 */
export function ropeContextLength(config: Pick<RotaryConfig, 'scaling' | 'maxPositionEmbeddings'>): number {
  const scaling = config.scaling;
  switch (scaling.type) {
    case 'linear':
    case 'dynamic':
      return Math.floor(config.maxPositionEmbeddings * scaling.factor);
    case 'yarn':
      return Math.max(config.maxPositionEmbeddings, Math.floor(scaling.originalMaxPositionEmbeddings * scaling.factor));
    case 'default':
    case 'none':
    case 'proportional':
    case 'llama3':
    case 'longrope':
      return config.maxPositionEmbeddings;
  }
}

/** LongRoPE's table starts with short-factor rows for the positions before the original context. */
function longropeShortRows(scaling: { originalMaxPositionEmbeddings: number }, maxPositions: number): number {
  return Math.min(scaling.originalMaxPositionEmbeddings, maxPositions);
}

/**
 * Host-side rotary tables reproducing transformers' `ROPE_INIT_FUNCTIONS` (default, linear,
 * dynamic, llama3, yarn, longrope). Computed in float64 and stored as float32; YaRN's and
 * LongRoPE's attention factors are folded into cos and sin so backends apply every variant the
 * same way. Row p holds position p, except that LongRoPE's table holds the short-factor rows of
 * the positions before the original context, then a long-factor row for every position
 * (RotaryEmbedding.rotaryRow says which a token reads).
 */
export function buildRopeTable(config: RotaryConfig, maxPositions: number): RopeTable {
  const half = config.rotaryDim / 2;
  const scaling = config.scaling;
  const shortRows = scaling.type === 'longrope' ? longropeShortRows(scaling, maxPositions) : 0;
  const rows = shortRows + maxPositions;
  const cos = new Float32Array(rows * half);
  const sin = new Float32Array(rows * half);
  const scale = scaling.type === 'yarn' || scaling.type === 'longrope' ? scaling.attentionFactor : 1;
  const fill = (row: number, position: number, inverse: Float64Array) => {
    for (let i = 0; i < half; i++) {
      const angle = position * inverse[i];
      cos[row * half + i] = Math.cos(angle) * scale;
      sin[row * half + i] = Math.sin(angle) * scale;
    }
  };
  if (scaling.type === 'longrope') {
    const short = inverseFrequencies(config, 0);
    const long = factorInverseFrequencies(config.theta, config.rotaryDim, scaling.longFactor);
    for (let p = 0; p < shortRows; p++) fill(p, p, short);
    for (let p = 0; p < maxPositions; p++) fill(shortRows + p, p, long);
    return { maxPositions: rows, rotaryDim: config.rotaryDim, cos, sin };
  }
  let inverse = inverseFrequencies(config, 0);
  for (let p = 0; p < maxPositions; p++) {
    // Dynamic NTK rescales once a position passes max_position_embeddings (see inverseFrequencies).
    if (scaling.type === 'dynamic' && p + 1 > config.maxPositionEmbeddings) inverse = inverseFrequencies(config, p);
    fill(p, p, inverse);
  }
  return { maxPositions: rows, rotaryDim: config.rotaryDim, cos, sin };
}

/**
 * A table whose every row rotates at the frequencies transformers uses for a sequence of
 * `spanLength` positions (dynamic NTK's base for that length, LongRoPE's short or long factors by
 * it), for StreamingLLM, whose queries never see a key more than `spanLength - 1` positions away.
 * Rotations at one set of frequencies depend only on the distance between query and key, so keys
 * rotated at their absolute positions score as keys rotated at their positions inside the cache.
 */
export function buildFixedRopeTable(config: RotaryConfig, maxPositions: number, spanLength: number): RopeTable {
  const half = config.rotaryDim / 2;
  const scaling = config.scaling;
  const longFactors = scaling.type === 'longrope' && spanLength > scaling.originalMaxPositionEmbeddings;
  const inverse = longFactors ? factorInverseFrequencies(config.theta, config.rotaryDim, scaling.longFactor) : inverseFrequencies(config, spanLength - 1);
  const scale = scaling.type === 'yarn' || scaling.type === 'longrope' ? scaling.attentionFactor : 1;
  const cos = new Float32Array(maxPositions * half);
  const sin = new Float32Array(maxPositions * half);
  for (let p = 0; p < maxPositions; p++) {
    for (let i = 0; i < half; i++) {
      const angle = p * inverse[i];
      cos[p * half + i] = Math.cos(angle) * scale;
      sin[p * half + i] = Math.sin(angle) * scale;
    }
  }
  return { maxPositions, rotaryDim: config.rotaryDim, cos, sin };
}

/**
 * Inverse frequency of each rotated pair [headDim / 2] for the token at `position`. Only dynamic
 * NTK depends on the position: transformers recomputes its base from seq_len = max(position_ids) + 1,
 * and with a KV cache each decoded token is rotated with seq_len = its position + 1 while earlier
 * keys keep theirs, so Keel uses seq_len = max(position + 1, max_position_embeddings) per position.
 */
export function inverseFrequencies(config: RotaryConfig, position: number): Float64Array {
  const dim = config.rotaryDim;
  const scaling = config.scaling;
  switch (scaling.type) {
    case 'default':
      return baseInverseFrequencies(config.theta, dim);
    case 'none':
      return new Float64Array(dim / 2);
    case 'linear':
      return baseInverseFrequencies(config.theta, dim).map((f) => f / scaling.factor);
    case 'proportional': {
      const rotated = Math.floor((scaling.partialRotaryFactor * dim) / 2);
      return baseInverseFrequencies(config.theta, dim).map((f, i) => (i < rotated ? f / scaling.factor : 0));
    }
    case 'dynamic': {
      const maxPositions = config.maxPositionEmbeddings;
      const seqLen = Math.max(position + 1, maxPositions);
      const base = config.theta * ((scaling.factor * seqLen) / maxPositions - (scaling.factor - 1)) ** (dim / (dim - 2));
      return baseInverseFrequencies(base, dim);
    }
    case 'llama3': {
      const { factor, lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: oldContext } = scaling;
      const lowFreqWavelength = oldContext / lowFreqFactor;
      const highFreqWavelength = oldContext / highFreqFactor;
      return baseInverseFrequencies(config.theta, dim).map((f) => {
        const wavelength = (2 * Math.PI) / f;
        if (wavelength < highFreqWavelength) return f;
        if (wavelength > lowFreqWavelength) return f / factor;
        // Equal factors: the band between the two wavelengths is a single point, never smoothed.
        if (highFreqFactor === lowFreqFactor) return f;
        const smooth = (oldContext / wavelength - lowFreqFactor) / (highFreqFactor - lowFreqFactor);
        return ((1 - smooth) * f) / factor + smooth * f;
      });
    }
    case 'longrope':
      // The short factors: transformers' inv_freq until a sequence reaches the original context.
      return factorInverseFrequencies(config.theta, dim, scaling.shortFactor);
    case 'yarn': {
      const [low, high] = yarnCorrectionRange(config.theta, dim, scaling);
      const span = low === high ? 0.001 : high - low;
      return baseInverseFrequencies(config.theta, dim).map((extrapolated, i) => {
        // Pairs below `low` rotate many times within the original context: keep them (extrapolate);
        // pairs above `high` rotate less than once: interpolate them by the factor; ramp in between.
        const interpolationWeight = Math.min(1, Math.max(0, (i - low) / span));
        return (extrapolated / scaling.factor) * interpolationWeight + extrapolated * (1 - interpolationWeight);
      });
    }
  }
}

/** LongRoPE's 1 / (factor_i · base^(2i/d)). */
function factorInverseFrequencies(base: number, dim: number, factors: readonly number[]): Float64Array {
  return baseInverseFrequencies(base, dim).map((f, i) => f / factors[i]);
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
