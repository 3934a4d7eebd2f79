import type { Activation } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import type { RopeScaling } from '../layers/rotary.ts';
import type { WeightDType } from '../tensor/host-tensor.ts';
import type { ModelConfig } from './model-config.ts';

/*
 * Reading Hugging Face config.json keys shared by every family, with transformers' defaults where
 * a key is absent. Accepts both transformers 4.x spellings (`rope_theta`, `rope_scaling`,
 * `torch_dtype`) and 5.x ones (`rope_parameters`, `dtype`); RoPE parameters follow transformers 5
 * (`standardize_rope_params` and the `_compute_*_parameters` functions).
 */

const DEFAULT_ROPE_THETA = 10000;
const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn', 'longrope', 'proportional'];
const DTYPES: Record<string, WeightDType> = { float32: 'f32', float16: 'f16', bfloat16: 'bf16' };

/** The keys every family shares; `contextLength` is the family's to derive. */
export function parseCommonFields(fields: ConfigFields, modelType: string): Omit<ModelConfig, 'contextLength'> {
  return {
    modelType,
    vocabSize: fields.positiveInt('vocab_size'),
    hiddenSize: fields.positiveInt('hidden_size'),
    numLayers: fields.positiveInt('num_hidden_layers'),
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', false),
    dtype: parseDtype(fields),
    bosTokenId: fields.tokenIds('bos_token_id')[0] ?? null,
    eosTokenIds: fields.tokenIds('eos_token_id'),
  };
}

/** `num_attention_heads` and `num_key_value_heads` (default: `kvHeadsDefault`, else as many as query heads), checked to group evenly. */
export function parseHeads(fields: ConfigFields, kvHeadsDefault?: number): { numHeads: number; numKvHeads: number } {
  const numHeads = fields.positiveInt('num_attention_heads');
  const numKvHeads = fields.positiveInt('num_key_value_heads', kvHeadsDefault ?? numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw invalidModel(`${fields.source}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  return { numHeads, numKvHeads };
}

/** `head_dim`, defaulting to hidden_size / num_attention_heads, or `fallback` where the family's config class has one. */
export function parseHeadDim(fields: ConfigFields, hiddenSize: number, numHeads: number, fallback?: number): number {
  if (fallback === undefined) {
    if (hiddenSize % numHeads !== 0 && fields.raw('head_dim') == null) {
      throw invalidModel(`${fields.source}: hidden_size (${hiddenSize}) is not divisible by num_attention_heads (${numHeads}) and no head_dim is given`);
    }
    fallback = hiddenSize / numHeads;
  }
  const headDim = fields.positiveInt('head_dim', fallback);
  if (headDim % 2 !== 0) throw invalidModel(`${fields.source}: head_dim must be even for rotary embeddings (got ${headDim})`);
  return headDim;
}

/**
 * transformers' ACT2FN names Keel runs, by the Activation computing them: gelu_new, gelu_fast and
 * gelu_pytorch_tanh are one formula (the tanh approximation), "gelu" the exact erf GELU.
 */
const ACTIVATIONS: Record<string, Activation> = {
  silu: { kind: 'silu' },
  swish: { kind: 'silu' },
  gelu_pytorch_tanh: { kind: 'gelu-tanh' },
  gelu_new: { kind: 'gelu-tanh' },
  gelu_fast: { kind: 'gelu-tanh' },
  gelu: { kind: 'gelu' },
  relu: { kind: 'relu' },
};

/** The gated MLP's activation named by `key` (transformers' ACT2FN name), or `fallback` when absent. */
export function parseActivation(fields: ConfigFields, key: string, fallback: string): Activation {
  const name = fields.string(key, fallback);
  const activation = ACTIVATIONS[name];
  if (!activation) throw invalidModel(`${fields.source}: ${key} "${name}" is not supported (supported: ${Object.keys(ACTIVATIONS).join(', ')})`);
  return activation;
}

function parseDtype(fields: ConfigFields): WeightDType {
  const key = fields.raw('dtype') != null ? 'dtype' : 'torch_dtype';
  const name = fields.string(key, 'float32');
  const dtype = DTYPES[name];
  if (!dtype) throw invalidModel(`${fields.source}: ${key} "${name}" is not supported (expected ${Object.keys(DTYPES).join(', ')})`);
  return dtype;
}

export interface RopeSettings {
  ropeTheta: number;
  ropeScaling: RopeScaling;
}

/** The RoPE dict of a config: `rope_parameters` (5.x, holds rope_theta too) or `rope_scaling` (4.x), `{}` when neither is set. */
export function ropeParameterFields(fields: ConfigFields): ConfigFields {
  const key = fields.raw('rope_parameters') != null ? 'rope_parameters' : 'rope_scaling';
  const dict = fields.raw(key);
  if (dict != null && !isObject(dict)) throw invalidModel(`${fields.source}: ${key} must be an object or null`);
  return new ConfigFields(dict ?? {}, `${fields.source} ${key}`);
}

/**
 * RoPE settings from `rope_parameters` (5.x) or `rope_scaling` + `rope_theta` (4.x): one RoPE for
 * every layer, rotating whole heads unless `partialRotary` (a family reading partial_rotary_factor
 * itself, through parsePartialRotary); `defaultTheta` where the config class has its own.
 */
export function parseRope(fields: ConfigFields, maxPositionEmbeddings: number, options: { partialRotary?: boolean; defaultTheta?: number } = {}): RopeSettings {
  const { partialRotary = false, defaultTheta = DEFAULT_ROPE_THETA } = options;
  const params = ropeParameterFields(fields);
  if (params.values().some(isObject)) {
    throw invalidModel(`${params.source}: per-layer-type RoPE parameters are not supported for model_type ${JSON.stringify(fields.raw('model_type'))} (Keel uses one RoPE for all its layers)`);
  }
  for (const where of partialRotary ? [] : [params, fields]) {
    const partial = where.raw('partial_rotary_factor');
    if (partial != null && partial !== 1) throw invalidModel(`${where.source}: partial_rotary_factor ${partial} is not supported (Keel rotates the whole head)`);
  }
  return parseRopeParameters(params, fields, maxPositionEmbeddings, defaultTheta);
}

/** The entries of a `rope_parameters` given per layer type (transformers 5's Gemma 3 and OLMo 3), an absent one as `{}`. */
export interface LayerTypeRopeFields {
  full: ConfigFields;
  sliding: ConfigFields;
  /** The whole dict: parseRopeParameters' `outer`. */
  outer: ConfigFields;
}

/**
 * `rope_parameters` as a dict per layer type ({full_attention, sliding_attention}), or null where
 * the config gives one RoPE dict (or none); other layer types are refused by name.
 */
export function layerTypeRopeFields(fields: ConfigFields): LayerTypeRopeFields | null {
  const params = ropeParameterFields(fields);
  if (fields.raw('rope_parameters') == null || !params.values().some(isObject)) return null;
  const unknown = Object.keys(fields.raw('rope_parameters') as object).filter((k) => k !== 'full_attention' && k !== 'sliding_attention');
  if (unknown.length > 0) throw invalidModel(`${params.source}: unknown layer types ${unknown.map((k) => JSON.stringify(k)).join(', ')}`);
  const entry = (type: string): ConfigFields => {
    const dict = params.raw(type);
    if (dict != null && !isObject(dict)) throw invalidModel(`${params.source}: "${type}" must be an object`);
    return new ConfigFields(dict ?? {}, `${params.source}.${type}`);
  };
  return { full: entry('full_attention'), sliding: entry('sliding_attention'), outer: params };
}

/**
 * The leading dims of each head that rotate: head_dim × partial_rotary_factor, the RoPE dict's
 * factor winning over the top-level one (transformers' setdefault), else `defaultFactor` (the
 * family's config class default). Refused unless it gives an even number of dims within the head.
 */
export function parsePartialRotary(fields: ConfigFields, headDim: number, defaultFactor: number): number {
  const params = ropeParameterFields(fields);
  const partial = params.raw('partial_rotary_factor') != null ? params.positiveNumber('partial_rotary_factor') : fields.positiveNumber('partial_rotary_factor', defaultFactor);
  const rotaryDim = Math.floor(headDim * partial);
  if (partial > 1 || rotaryDim % 2 !== 0 || rotaryDim === 0) {
    throw invalidModel(`${fields.source}: partial_rotary_factor ${partial} gives ${rotaryDim} rotary dims of head_dim ${headDim}; Keel needs an even number, at most the head`);
  }
  return rotaryDim;
}

/**
 * One RoPE dict `params` (`rope_parameters`, one of its per-layer-type entries, or `rope_scaling`):
 * its type and scaling, its rope_theta or else the top-level one, or else `defaultTheta`.
 * `outer` is the whole `rope_parameters` where `params` is one of its per-layer-type entries:
 * transformers reads YaRN's `truncate` from there, never from the entry (so such a layer always
 * truncates, whatever its entry says).
 */
export function parseRopeParameters(params: ConfigFields, fields: ConfigFields, maxPositionEmbeddings: number, defaultTheta: number, outer: ConfigFields = params): RopeSettings {
  const ropeTheta = params.raw('rope_theta') != null ? params.positiveNumber('rope_theta') : fields.positiveNumber('rope_theta', defaultTheta);
  const type = params.raw('rope_type') ?? params.raw('type') ?? 'default';
  // transformers 5 prefers a top-level original_max_position_embeddings (Phi-3 style) over the one in the dict.
  const originalMax = () =>
    fields.raw('original_max_position_embeddings') != null
      ? fields.positiveInt('original_max_position_embeddings')
      : params.positiveInt('original_max_position_embeddings', maxPositionEmbeddings);

  switch (type) {
    case 'default':
      return { ropeTheta, ropeScaling: { type: 'default' } };
    case 'linear':
      return { ropeTheta, ropeScaling: { type: 'linear', factor: params.positiveNumber('factor') } };
    case 'dynamic':
      return { ropeTheta, ropeScaling: { type: 'dynamic', factor: params.positiveNumber('factor') } };
    case 'proportional': {
      const partialRotaryFactor = params.positiveNumber('partial_rotary_factor', 1);
      if (partialRotaryFactor > 1) throw invalidModel(`${params.source}: partial_rotary_factor ${partialRotaryFactor} of proportional RoPE must be at most 1`);
      return { ropeTheta, ropeScaling: { type: 'proportional', factor: params.positiveNumber('factor', 1), partialRotaryFactor } };
    }
    case 'llama3': {
      const lowFreqFactor = params.positiveNumber('low_freq_factor');
      const highFreqFactor = params.positiveNumber('high_freq_factor');
      // Equal factors leave no band to smooth (Llama 4 Scout's 1 and 1), which transformers accepts.
      if (highFreqFactor < lowFreqFactor) {
        throw invalidModel(`${params.source}: high_freq_factor (${highFreqFactor}) must not be less than low_freq_factor (${lowFreqFactor})`);
      }
      return {
        ropeTheta,
        ropeScaling: { type: 'llama3', factor: params.positiveNumber('factor'), lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: originalMax() },
      };
    }
    case 'longrope':
      return { ropeTheta, ropeScaling: parseLongrope(params, originalMax(), maxPositionEmbeddings) };
    case 'yarn':
      return { ropeTheta, ropeScaling: parseYarn(params, originalMax(), maxPositionEmbeddings, outer.boolean('truncate', true)) };
    default:
      throw invalidModel(`${params.source}: rope type ${JSON.stringify(type)} is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(', ')})`);
  }
}

/**
 * transformers' `_compute_longrope_parameters`: short and long factors (their count is checked
 * against the rotary dim by RotaryEmbedding), and the attention factor: the dict's, or
 * √(1 + ln(factor) / ln(original)) with factor = max_position_embeddings / original unless the dict
 * sets one (1 where factor ≤ 1).
 */
export function parseLongrope(params: ConfigFields, originalMaxPositionEmbeddings: number, maxPositionEmbeddings: number): Extract<RopeScaling, { type: 'longrope' }> {
  const factor = params.raw('factor') != null ? params.positiveNumber('factor') : maxPositionEmbeddings / originalMaxPositionEmbeddings;
  const attentionFactor =
    params.raw('attention_factor') != null
      ? params.positiveNumber('attention_factor')
      : factor <= 1
        ? 1
        : Math.sqrt(1 + Math.log(factor) / Math.log(originalMaxPositionEmbeddings));
  return {
    type: 'longrope',
    shortFactor: params.numberList('short_factor'),
    longFactor: params.numberList('long_factor'),
    originalMaxPositionEmbeddings,
    attentionFactor,
  };
}

/** transformers' `_compute_yarn_parameters`: defaults for factor, attention_factor and beta_fast/slow. */
function parseYarn(params: ConfigFields, originalMaxPositionEmbeddings: number, maxPositionEmbeddings: number, truncate: boolean): RopeScaling {
  const factor = params.raw('factor') != null ? params.positiveNumber('factor') : maxPositionEmbeddings / originalMaxPositionEmbeddings;
  const mscale = (scale: number, m: number) => (scale <= 1 ? 1 : 0.1 * m * Math.log(scale) + 1);
  let attentionFactor: number;
  if (params.raw('attention_factor') != null) {
    attentionFactor = params.positiveNumber('attention_factor');
  } else {
    const m = params.finiteNumber('mscale', 0);
    const mAllDim = params.finiteNumber('mscale_all_dim', 0);
    attentionFactor = m && mAllDim ? mscale(factor, m) / mscale(factor, mAllDim) : mscale(factor, 1);
  }
  return {
    type: 'yarn',
    factor,
    originalMaxPositionEmbeddings,
    // `or` defaults, as transformers does: an explicit 0 also means the default.
    betaFast: params.finiteNumber('beta_fast', 32) || 32,
    betaSlow: params.finiteNumber('beta_slow', 1) || 1,
    attentionFactor,
    truncate,
  };
}

/** `layer_types` as whether each layer slides ("sliding_attention") or not ("full_attention"); null where absent. */
export function parseSlidingLayerTypes(fields: ConfigFields, numLayers: number): boolean[] | null {
  const layerTypes = fields.raw('layer_types');
  if (layerTypes == null) return null;
  if (!Array.isArray(layerTypes) || layerTypes.length !== numLayers || !layerTypes.every((t) => t === 'sliding_attention' || t === 'full_attention')) {
    throw invalidModel(`${fields.source}: layer_types must list "sliding_attention" or "full_attention" for each of the ${numLayers} layers`);
  }
  return layerTypes.map((t) => t === 'sliding_attention');
}

/** A list of `numLayers` layer indices or flags from config key `key`, checked. */
export function layerList(fields: ConfigFields, key: string, numLayers: number, what: 'indices' | 'flags'): number[] | null {
  const v = fields.raw(key);
  if (v == null) return null;
  const ok =
    Array.isArray(v) &&
    (what === 'indices' ? v.every((i) => Number.isInteger(i) && i >= 0 && i < numLayers) : v.length === numLayers && v.every((f) => f === 0 || f === 1 || typeof f === 'boolean'));
  if (!ok) {
    const expected = what === 'indices' ? `layer indices below ${numLayers}` : `a 0 or 1 for each of the ${numLayers} layers`;
    throw invalidModel(`${fields.source}: "${key}" must list ${expected} (got ${JSON.stringify(v)})`);
  }
  return (v as (number | boolean)[]).map(Number);
}

/** transformers' default `no_rope_layer_interval` (Llama 4, SmolLM3). */
const NO_ROPE_LAYER_INTERVAL = 4;

/**
 * Which layers rotate q and k (Llama 4's and SmolLM3's NoPE layers): `no_rope_layers` (1: the layer
 * rotates; an empty list counts as absent, as transformers reads it), or all but every
 * `no_rope_layer_interval`-th.
 */
export function parseRopeLayers(fields: ConfigFields, numLayers: number): boolean[] {
  const raw = fields.raw('no_rope_layers');
  const listed = Array.isArray(raw) && raw.length === 0 ? null : layerList(fields, 'no_rope_layers', numLayers, 'flags');
  const interval = fields.positiveInt('no_rope_layer_interval', NO_ROPE_LAYER_INTERVAL);
  return Array.from({ length: numLayers }, (_, i) => (listed === null ? (i + 1) % interval !== 0 : listed[i] === 1));
}

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * Typed access to the keys of one JSON object; errors name the key and the file. A key set to
 * null counts as absent, as transformers treats None.
 */
export class ConfigFields {
  private readonly json: Record<string, unknown>;
  readonly source: string;

  constructor(json: Record<string, unknown>, source: string) {
    this.json = json;
    this.source = source;
  }

  raw(key: string): unknown {
    return this.json[key];
  }

  positiveInt(key: string, fallback?: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 1) throw this.invalid(key, 'a positive integer');
    return v;
  }

  /** Absent -> fallback; explicit null -> null (e.g. `"sliding_window": null` disables the window). */
  optionalPositiveInt(key: string, fallback: number | null): number | null {
    if (!(key in this.json)) return fallback;
    return this.json[key] === null ? null : this.positiveInt(key);
  }

  /** Absent -> fallback; explicit null -> null (e.g. `"final_logit_softcapping": null` turns the cap off). */
  optionalPositiveNumber(key: string, fallback: number | null): number | null {
    if (!(key in this.json)) return fallback;
    return this.json[key] === null ? null : this.positiveNumber(key);
  }

  nonNegativeInt(key: string, fallback?: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw this.invalid(key, 'a non-negative integer');
    return v;
  }

  positiveNumber(key: string, fallback?: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw this.invalid(key, 'a positive number');
    return v;
  }

  finiteNumber(key: string, fallback?: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.invalid(key, 'a number');
    return v;
  }

  /** A non-empty list of finite numbers (LongRoPE's factors). */
  numberList(key: string): number[] {
    const v = this.present(key, undefined);
    if (!Array.isArray(v) || v.length === 0 || !v.every((x) => typeof x === 'number' && Number.isFinite(x))) throw this.invalid(key, 'a list of numbers');
    return v as number[];
  }

  /** The values of every key, for a dict whose entries may be dicts themselves. */
  values(): unknown[] {
    return Object.values(this.json);
  }

  boolean(key: string, fallback: boolean): boolean {
    const v = this.present(key, fallback);
    if (typeof v !== 'boolean') throw this.invalid(key, 'true or false');
    return v;
  }

  string(key: string, fallback: string): string {
    const v = this.present(key, fallback);
    if (typeof v !== 'string') throw this.invalid(key, 'a string');
    return v;
  }

  /** A token id or a list of them (`eos_token_id` is either); absent -> []. */
  tokenIds(key: string): number[] {
    const v = this.json[key];
    if (v == null) return [];
    const ids = Array.isArray(v) ? v : [v];
    if (!ids.every((id) => typeof id === 'number' && Number.isSafeInteger(id) && id >= 0)) {
      throw this.invalid(key, 'a token id or a list of token ids');
    }
    return ids as number[];
  }

  private present(key: string, fallback: unknown): unknown {
    const v = this.json[key];
    if (v != null) return v;
    if (fallback === undefined) throw invalidModel(`${this.source}: required key "${key}" is missing`);
    return fallback;
  }

  private invalid(key: string, expected: string): Error {
    return invalidModel(`${this.source}: "${key}" must be ${expected} (got ${JSON.stringify(this.json[key])})`);
  }
}
