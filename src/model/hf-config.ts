import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { invalidModel } from '../errors.ts';
import { SUPPORTED_MODEL_TYPES, type ModelConfig, type ModelType, type RopeScaling, type WeightDType } from './model-config.ts';

/**
 * `config.json` -> ModelConfig, with the defaults of the transformers config class of each
 * model_type where a key is absent. Accepts both transformers 4.x spellings (`rope_theta`,
 * `rope_scaling`, `torch_dtype`) and 5.x ones (`rope_parameters`, `dtype`); RoPE parameters follow
 * transformers 5 (`standardize_rope_params` and the `_compute_*_parameters` functions).
 */
export function readModelConfig(dir: string): ModelConfig {
  const path = join(dir, 'config.json');
  return parseHfConfig(readJsonFile(path), path);
}

/** Reads and parses a JSON file; a missing file or bad JSON is an invalid model naming the path. */
export function readJsonFile(path: string): unknown {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (error) {
    throw invalidModel(`cannot read ${path}: ${(error as Error).message}`);
  }
  try {
    return JSON.parse(text);
  } catch (error) {
    throw invalidModel(`${path} is not valid JSON: ${(error as Error).message}`);
  }
}

const DEFAULT_MAX_POSITIONS: Record<ModelType, number> = { llama: 2048, mistral: 4096 * 32, qwen2: 32768, qwen3: 32768 };
const DEFAULT_SLIDING_WINDOW = 4096;
const DEFAULT_MAX_WINDOW_LAYERS = 28;
/** Qwen3Config defaults head_dim to 128 rather than hidden_size / num_attention_heads. */
const QWEN3_DEFAULT_HEAD_DIM = 128;
const DEFAULT_ROPE_THETA = 10000;
const SUPPORTED_ROPE_TYPES = ['default', 'linear', 'dynamic', 'llama3', 'yarn'];
const DTYPES: Record<string, WeightDType> = { float32: 'f32', float16: 'f16', bfloat16: 'bf16' };

export function parseHfConfig(json: unknown, source: string): ModelConfig {
  if (!isObject(json)) throw invalidModel(`${source} must hold a JSON object`);
  const fields = new ConfigFields(json, source);
  const modelType = parseModelType(fields.raw('model_type'), source);

  const hiddenSize = fields.positiveInt('hidden_size');
  const numHeads = fields.positiveInt('num_attention_heads');
  const numKvHeads = fields.positiveInt('num_key_value_heads', numHeads);
  if (numHeads % numKvHeads !== 0) {
    throw invalidModel(`${source}: num_attention_heads (${numHeads}) must be a multiple of num_key_value_heads (${numKvHeads})`);
  }
  const numLayers = fields.positiveInt('num_hidden_layers');
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULT_MAX_POSITIONS[modelType]);

  const hiddenAct = fields.string('hidden_act', 'silu');
  if (hiddenAct !== 'silu') throw invalidModel(`${source}: hidden_act "${hiddenAct}" is not supported (Keel implements silu)`);
  // Llama and Qwen3 put `attention_bias` on q, k, v and o; Qwen2 always biases q, k, v only; Mistral never.
  const attentionBiasKey = modelType === 'llama' || modelType === 'qwen3' ? fields.boolean('attention_bias', false) : false;
  if (modelType === 'llama' && fields.boolean('mlp_bias', false)) {
    throw invalidModel(`${source}: mlp_bias=true is not supported (Keel's MLP projections carry no bias)`);
  }

  return {
    modelType,
    vocabSize: fields.positiveInt('vocab_size'),
    hiddenSize,
    intermediateSize: fields.positiveInt('intermediate_size'),
    numLayers,
    numHeads,
    numKvHeads,
    headDim: parseHeadDim(fields, modelType, hiddenSize, numHeads),
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-6),
    ...parseRope(fields, maxPositionEmbeddings),
    maxPositionEmbeddings,
    attentionBias: modelType === 'qwen2' || attentionBiasKey,
    outputBias: attentionBiasKey,
    qkNorm: modelType === 'qwen3',
    slidingWindow: parseSlidingWindow(fields, modelType, numLayers),
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', false),
    dtype: parseDtype(fields),
    bosTokenId: fields.tokenIds('bos_token_id')[0] ?? null,
    eosTokenIds: fields.tokenIds('eos_token_id'),
  };
}

function parseModelType(value: unknown, source: string): ModelType {
  if (SUPPORTED_MODEL_TYPES.includes(value as ModelType)) return value as ModelType;
  const got = value === undefined ? 'no model_type' : `model_type ${JSON.stringify(value)}`;
  throw invalidModel(`${source}: ${got} is not supported; Keel supports model_type ${SUPPORTED_MODEL_TYPES.join(', ')}`);
}

function parseHeadDim(fields: ConfigFields, modelType: ModelType, hiddenSize: number, numHeads: number): number {
  let fallback = QWEN3_DEFAULT_HEAD_DIM;
  if (modelType !== 'qwen3') {
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
 * Mistral slides every layer. Qwen2/Qwen3 slide only when `use_sliding_window` is true, and then
 * only layers whose `layer_types` entry is "sliding_attention" (derived, when absent, as the layers
 * from `max_window_layers` on). Keel's attention takes one window for all layers.
 */
function parseSlidingWindow(fields: ConfigFields, modelType: ModelType, numLayers: number): number | null {
  if (modelType === 'llama') return null;
  if (modelType === 'mistral') return fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  if (!fields.boolean('use_sliding_window', false)) return null;
  const window = fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  if (window === null) return null;
  const layerTypes = fields.raw('layer_types');
  let slidingLayers: number;
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) {
      throw invalidModel(`${fields.source}: layer_types has ${layerTypes.length} entries for ${numLayers} layers`);
    }
    slidingLayers = layerTypes.filter((t) => t === 'sliding_attention').length;
  } else {
    slidingLayers = Math.max(0, numLayers - fields.nonNegativeInt('max_window_layers', DEFAULT_MAX_WINDOW_LAYERS));
  }
  if (slidingLayers === 0) return null;
  if (slidingLayers === numLayers) return window;
  throw invalidModel(
    `${fields.source}: sliding-window attention on ${slidingLayers} of ${numLayers} layers is not supported (Keel applies one window to all layers or none)`,
  );
}

function parseDtype(fields: ConfigFields): WeightDType {
  const key = fields.raw('dtype') != null ? 'dtype' : 'torch_dtype';
  const name = fields.string(key, 'float32');
  const dtype = DTYPES[name];
  if (!dtype) throw invalidModel(`${fields.source}: ${key} "${name}" is not supported (expected ${Object.keys(DTYPES).join(', ')})`);
  return dtype;
}

/** RoPE settings from `rope_parameters` (5.x, holds rope_theta too) or `rope_scaling` + `rope_theta` (4.x). */
function parseRope(fields: ConfigFields, maxPositionEmbeddings: number): { ropeTheta: number; ropeScaling: RopeScaling } {
  const key = fields.raw('rope_parameters') != null ? 'rope_parameters' : 'rope_scaling';
  const dict = fields.raw(key);
  if (dict != null && !isObject(dict)) throw invalidModel(`${fields.source}: ${key} must be an object or null`);
  const params = new ConfigFields(dict ?? {}, `${fields.source} ${key}`);
  if (isObject(dict) && Object.values(dict).some(isObject)) {
    throw invalidModel(`${params.source}: per-layer-type RoPE parameters are not supported (Keel uses one RoPE for all layers)`);
  }

  const ropeTheta = params.raw('rope_theta') != null ? params.positiveNumber('rope_theta') : fields.positiveNumber('rope_theta', DEFAULT_ROPE_THETA);
  for (const where of [params, fields]) {
    const partial = where.raw('partial_rotary_factor');
    if (partial != null && partial !== 1) throw invalidModel(`${where.source}: partial_rotary_factor ${partial} is not supported (Keel rotates the whole head)`);
  }
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
    case 'llama3': {
      const lowFreqFactor = params.positiveNumber('low_freq_factor');
      const highFreqFactor = params.positiveNumber('high_freq_factor');
      if (highFreqFactor <= lowFreqFactor) {
        throw invalidModel(`${params.source}: high_freq_factor (${highFreqFactor}) must be greater than low_freq_factor (${lowFreqFactor})`);
      }
      return {
        ropeTheta,
        ropeScaling: { type: 'llama3', factor: params.positiveNumber('factor'), lowFreqFactor, highFreqFactor, originalMaxPositionEmbeddings: originalMax() },
      };
    }
    case 'yarn':
      return { ropeTheta, ropeScaling: parseYarn(params, originalMax(), maxPositionEmbeddings) };
    default:
      throw invalidModel(`${params.source}: rope type ${JSON.stringify(type)} is not supported (supported: ${SUPPORTED_ROPE_TYPES.join(', ')})`);
  }
}

/** transformers' `_compute_yarn_parameters`: defaults for factor, attention_factor, beta_fast/slow and truncate. */
function parseYarn(params: ConfigFields, originalMaxPositionEmbeddings: number, maxPositionEmbeddings: number): RopeScaling {
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
    truncate: params.boolean('truncate', true),
  };
}

function isObject(v: unknown): v is Record<string, unknown> {
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

  nonNegativeInt(key: string, fallback: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isSafeInteger(v) || v < 0) throw this.invalid(key, 'a non-negative integer');
    return v;
  }

  positiveNumber(key: string, fallback?: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw this.invalid(key, 'a positive number');
    return v;
  }

  finiteNumber(key: string, fallback: number): number {
    const v = this.present(key, fallback);
    if (typeof v !== 'number' || !Number.isFinite(v)) throw this.invalid(key, 'a number');
    return v;
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
