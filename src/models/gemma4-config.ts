import type { Activation } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { ConfigFields, isObject, layerTypeRopeFields, parseActivation, parseCommonFields, parseRopeParameters, parseSlidingLayerTypes, type RopeSettings } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';

/*
 * Gemma 4's config.json (transformers' Gemma4TextConfig, model_type gemma4_text; the gemma4
 * wrapper's text_config), read into one record per layer. What sets Gemma 4 apart from Gemma 3
 * is per layer: full-attention layers have their own head dim and kv heads (`per_layer_config`,
 * or `global_head_dim` / `num_global_key_value_heads`), the last `num_kv_shared_layers` layers read
 * the keys and values of the last earlier layer of their type, and those layers' MLPs may be twice
 * as wide (`use_double_wide_mlp`).
 */

export interface Gemma4LayerConfig {
  /** A sliding-window layer ("sliding_attention"), else full attention. */
  sliding: boolean;
  headDim: number;
  numKvHeads: number;
  /** The earlier layer whose keys and values it reads (`num_kv_shared_layers`), or null: its own. */
  kvSource: number | null;
  /** Its dense MLP's width (doubled on KV-shared layers by `use_double_wide_mlp`). */
  intermediateSize: number;
}

export interface Gemma4Config extends ModelConfig {
  modelType: 'gemma4_text';
  activation: Activation;
  numHeads: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  /** q, k, v and o carry a bias. */
  attentionBias: boolean;
  /** The window of the sliding layers. */
  slidingWindow: number;
  layers: Gemma4LayerConfig[];
  /** RoPE of the sliding layers (default) and of the full layers (proportional by default). */
  slidingRope: RopeSettings;
  fullRope: RopeSettings;
  /** Full-attention layers have no v_proj: their values are k_proj's output (`attention_k_eq_v`). */
  attentionKEqV: boolean;
  /** Final logits become cap · tanh(logit / cap); null for none. */
  finalLogitSoftcap: number | null;
  /** Per-layer input embeddings (PLE: the small models), or null. */
  perLayerInput: { hiddenSize: number; vocabSize: number } | null;
  /** The mixture of experts beside each layer's dense MLP (`enable_moe_block`), or null. */
  moe: { numExperts: number; topK: number; intermediateSize: number } | null;
}

/** Gemma4TextConfig's defaults for the keys a config may leave out. */
const GEMMA4_TEXT_DEFAULTS: Record<string, unknown> = {
  vocab_size: 262_144,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 30,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  head_dim: 256,
  max_position_embeddings: 131_072,
  sliding_window: 512,
  bos_token_id: 2,
  eos_token_id: 1,
  tie_word_embeddings: true,
  hidden_size_per_layer_input: 256,
  vocab_size_per_layer_input: 262_144,
};
/** Every sixth layer is full attention when `layer_types` is absent. */
const SLIDING_WINDOW_PATTERN = 6;
const DEFAULT_GLOBAL_HEAD_DIM = 512;
const THETA = { sliding: 10_000, full: 1_000_000 };
/** The full layers' RoPE when the config gives none. */
const DEFAULT_FULL_ROPE: RopeSettings = { ropeTheta: THETA.full, ropeScaling: { type: 'proportional', factor: 1, partialRotaryFactor: 0.25 } };
/** The per-layer keys Keel reads from `per_layer_config`. */
const PER_LAYER_KEYS = ['head_dim', 'num_key_value_heads'];

export function parseGemma4Config(json: Record<string, unknown>, source: string): Gemma4Config {
  const fields = new ConfigFields({ ...GEMMA4_TEXT_DEFAULTS, ...json }, source);
  const common = parseCommonFields(fields, 'gemma4_text');
  const bidirectional = fields.raw('use_bidirectional_attention');
  if (bidirectional === 'all') {
    throw invalidModel(`${source}: use_bidirectional_attention "all" (every token attending both ways) is not supported; Keel runs Gemma 4 as a causal language model`);
  }
  // "vision" lets image tokens attend both ways: a text prompt has none.
  if (bidirectional != null && bidirectional !== 'vision') throw invalidModel(`${source}: use_bidirectional_attention must be "vision", "all" or null, not ${JSON.stringify(bidirectional)}`);
  const numHeads = fields.positiveInt('num_attention_heads');
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings');
  const attentionKEqV = fields.boolean('attention_k_eq_v', false);
  const sliding = parseSlidingLayerTypes(fields, common.numLayers) ?? Array.from({ length: common.numLayers }, (_, i) => (i + 1) % SLIDING_WINDOW_PATTERN !== 0);
  // transformers forces the last layer to full attention (with a warning).
  sliding[common.numLayers - 1] = false;
  const shapes = parseLayerShapes(fields, sliding, attentionKEqV);
  for (const [i, shape] of shapes.entries()) {
    if (numHeads % shape.numKvHeads !== 0) throw invalidModel(`${source}: layer ${i}'s ${shape.numKvHeads} key/value heads do not divide num_attention_heads (${numHeads})`);
  }
  const kvSources = parseKvSources(fields, sliding, shapes);
  const intermediateSize = fields.positiveInt('intermediate_size');
  const doubleWide = fields.boolean('use_double_wide_mlp', false);
  const { slidingRope, fullRope } = parseRopes(fields, maxPositionEmbeddings, sliding);
  return {
    ...common,
    modelType: 'gemma4_text',
    contextLength: maxPositionEmbeddings,
    activation: parseActivation(fields, 'hidden_activation', 'gelu_pytorch_tanh'),
    numHeads,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-6),
    maxPositionEmbeddings,
    attentionBias: fields.boolean('attention_bias', false),
    slidingWindow: fields.positiveInt('sliding_window'),
    layers: shapes.map((shape, i) => ({
      sliding: sliding[i],
      ...shape,
      kvSource: kvSources[i],
      intermediateSize: intermediateSize * (doubleWide && kvSources[i] !== null ? 2 : 1),
    })),
    slidingRope,
    fullRope,
    attentionKEqV,
    finalLogitSoftcap: fields.optionalPositiveNumber('final_logit_softcapping', null),
    perLayerInput: fields.raw('hidden_size_per_layer_input') ? { hiddenSize: fields.positiveInt('hidden_size_per_layer_input'), vocabSize: fields.positiveInt('vocab_size_per_layer_input') } : null,
    moe: fields.boolean('enable_moe_block', false)
      ? { numExperts: fields.positiveInt('num_experts'), topK: fields.positiveInt('top_k_experts'), intermediateSize: fields.positiveInt('moe_intermediate_size') }
      : null,
  };
}

/**
 * Each layer's head dim and kv heads: head_dim and num_key_value_heads, overridden per layer by
 * `per_layer_config` ({"<layer>": {"head_dim": …, "num_key_value_heads": …}}, as transformers 5
 * saves it), or else, as Gemma4TextConfig builds that, on every full layer head_dim
 * `global_head_dim` and, with attention_k_eq_v, num_key_value_heads `num_global_key_value_heads`.
 * A layer type's layers share one head dim (transformers' rotary embedding is per layer type).
 */
function parseLayerShapes(fields: ConfigFields, sliding: readonly boolean[], attentionKEqV: boolean): { headDim: number; numKvHeads: number }[] {
  const base = { headDim: fields.positiveInt('head_dim'), numKvHeads: fields.positiveInt('num_key_value_heads') };
  const perLayer = fields.raw('per_layer_config');
  let shapes: { headDim: number; numKvHeads: number }[];
  if (perLayer != null) {
    if (!isObject(perLayer)) throw invalidModel(`${fields.source}: per_layer_config must map layer indices to their settings`);
    shapes = sliding.map(() => ({ ...base }));
    for (const [key, overrides] of Object.entries(perLayer)) {
      const layer = Number(key);
      const where = `${fields.source} per_layer_config["${key}"]`;
      if (!(/^\d+$/.test(key) && layer < sliding.length)) throw invalidModel(`${where}: not a layer index below num_hidden_layers (${sliding.length})`);
      if (!isObject(overrides)) throw invalidModel(`${where} must be an object`);
      const unknown = Object.keys(overrides).filter((k) => !PER_LAYER_KEYS.includes(k));
      if (unknown.length > 0) throw invalidModel(`${where}: ${unknown.join(', ')} per layer is not supported (Keel reads ${PER_LAYER_KEYS.join(' and ')} per layer)`);
      const layerFields = new ConfigFields(overrides, where);
      shapes[layer] = { headDim: layerFields.positiveInt('head_dim', base.headDim), numKvHeads: layerFields.positiveInt('num_key_value_heads', base.numKvHeads) };
    }
  } else {
    const globalHeadDim = fields.positiveInt('global_head_dim', DEFAULT_GLOBAL_HEAD_DIM);
    const globalKvHeads = attentionKEqV && fields.raw('num_global_key_value_heads') != null ? fields.positiveInt('num_global_key_value_heads') : base.numKvHeads;
    shapes = sliding.map((s) => (s ? { ...base } : { headDim: globalHeadDim, numKvHeads: globalKvHeads }));
  }
  for (const type of [true, false]) {
    const dims = new Set(shapes.filter((_, i) => sliding[i] === type).map((s) => s.headDim));
    if (dims.size > 1) throw invalidModel(`${fields.source}: the ${type ? 'sliding' : 'full'}-attention layers have head dims ${[...dims].join(', ')}; Keel, as transformers, needs one per layer type`);
  }
  return shapes;
}

/**
 * The layer each of the last `num_kv_shared_layers` layers reads keys and values from: the last
 * layer of its type before them (transformers' shared_kv_states), which must exist and match it.
 */
function parseKvSources(fields: ConfigFields, sliding: readonly boolean[], shapes: readonly { headDim: number; numKvHeads: number }[]): (number | null)[] {
  const numLayers = sliding.length;
  const shared = fields.nonNegativeInt('num_kv_shared_layers', 0);
  if (shared >= numLayers) throw invalidModel(`${fields.source}: num_kv_shared_layers (${shared}) must leave some of the ${numLayers} layers caching their own keys and values`);
  const first = numLayers - shared;
  return sliding.map((type, i) => {
    if (i < first) return null;
    const source = sliding.lastIndexOf(type, first - 1);
    const what = type ? 'sliding' : 'full';
    if (source < 0) throw invalidModel(`${fields.source}: layer ${i} shares the keys and values of the last ${what}-attention layer before layer ${first}, and there is none`);
    if (shapes[source].numKvHeads !== shapes[i].numKvHeads) {
      throw invalidModel(`${fields.source}: layer ${i} reads the keys and values of layer ${source}, whose ${shapes[source].numKvHeads} key/value heads differ from its ${shapes[i].numKvHeads}`);
    }
    return source;
  });
}

/**
 * `rope_parameters` per layer type (sliding_attention, full_attention), rope_theta defaulting to
 * 1e4 and 1e6; without it, Gemma4TextConfig's: default RoPE on sliding layers, proportional RoPE
 * over a quarter of each full layer's head.
 */
function parseRopes(fields: ConfigFields, maxPositionEmbeddings: number, sliding: readonly boolean[]): { slidingRope: RopeSettings; fullRope: RopeSettings } {
  if (fields.raw('rope_parameters') == null) return { slidingRope: { ropeTheta: THETA.sliding, ropeScaling: { type: 'default' } }, fullRope: DEFAULT_FULL_ROPE };
  const perType = layerTypeRopeFields(fields);
  if (perType === null) throw invalidModel(`${fields.source}: rope_parameters must hold one RoPE dict per layer type ("sliding_attention", "full_attention")`);
  const { full, sliding: slidingFields, outer } = perType;
  for (const [type, entry] of [['sliding_attention', slidingFields], ['full_attention', full]] as const) {
    const used = sliding.includes(type === 'sliding_attention');
    if (used && outer.raw(type) == null) throw invalidModel(`${outer.source}: no RoPE dict for the ${type} layers`);
    if (entry.raw('rope_type') === 'dynamic') throw invalidModel(`${entry.source}: dynamic RoPE is not supported for Gemma 4 (transformers updates it per layer type with shared state)`);
  }
  return {
    slidingRope: parseRopeParameters(slidingFields, fields, maxPositionEmbeddings, THETA.sliding, outer),
    fullRope: parseRopeParameters(full, fields, maxPositionEmbeddings, THETA.full, outer),
  };
}
