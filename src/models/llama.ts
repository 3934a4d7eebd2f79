import type { QueryTemperature } from '../backend/backend.ts';
import type { RopeScaling } from '../layers/rotary.ts';
import { invalidModel } from '../errors.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { XieluMlp } from '../layers/xielu-mlp.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderModel, LLAMA_NORM_NAMES, parseDecoderFields, type DecoderConfig, type DecoderFields, type DecoderMultipliers, type DecoderNormNames } from './decoder.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import { ConfigFields, parseRopeLayers, parseSlidingLayerTypes, ropeParameterFields } from './hf-config.ts';
import { checkMropeSections, withMropeTypeAsDefault, type Mrope } from './mrope.ts';

/**
 * The Llama family: llama, mistral, ministral3, qwen2, qwen3, smollm3, granite, seed_oss, arcee,
 * hunyuan_v1_dense, apertus, ernie4_5, glm, glm4 and jais2 differ only in defaults, biases, q/k norms
 * (before RoPE, or after it: Hunyuan's), norm names (GLM-4's sandwich norms among them), windows,
 * NoPE layers (SmolLM3's), multipliers (Granite's), a query scale by position (Ministral 3's),
 * NTK-alpha RoPE (Hunyuan's), a gateless MLP (Arcee's relu², Apertus's xIELU), gate and up stored
 * as one tensor (GLM's), partial rotary (GLM's), RoPE over interleaved pairs (ERNIE 4.5's, GLM's) and
 * LayerNorms with biases in place of RMSNorms (Jais 2's).
 * The language models of Qwen2-VL and Qwen2.5-VL (qwen2_vl_text, qwen2_5_vl_text: Qwen2's layers),
 * Qwen3-VL (qwen3_vl_text: Qwen3's) and GLM-4.1V (glm4v_text: GLM-4's) are rows too, their
 * multimodal RoPE read for text positions (mrope.ts).
 */
export interface LlamaConfig extends DecoderConfig {
  intermediateSize: number;
  /** gate/up/down carry biases (Llama's `mlp_bias`, ERNIE's `use_bias`). */
  mlpBias: boolean;
  /**
   * The MLP: `gated`, down(act(gate(x)) · up(x)); `relu2`, without a gate projection,
   * down(relu(up(x))²), which is down(relu(u) · u), the gated `activation` (relu) with up as its own
   * gate (Arcee, Apertus); `xielu`, down(xielu(up(x))) with each layer's learned constants
   * (Apertus), which reads no `activation`.
   */
  mlp: 'gated' | 'relu2' | 'xielu';
  /** A gated MLP's gate and up rows are stored as one `mlp.gate_up_proj`, gate first (GLM, as Phi-3). */
  fusedGateUp: boolean;
}

type LlamaModelType =
  | 'llama'
  | 'mistral'
  | 'ministral3'
  | 'qwen2'
  | 'qwen3'
  | 'smollm3'
  | 'granite'
  | 'seed_oss'
  | 'arcee'
  | 'hunyuan_v1_dense'
  | 'apertus'
  | 'ernie4_5'
  | 'qwen2_vl_text'
  | 'qwen2_5_vl_text'
  | 'qwen3_vl_text'
  | 'glm'
  | 'glm4'
  | 'glm4v_text'
  | 'jais2';

/** Where a model_type's config puts attention biases. */
export type AttentionBiasRule =
  /** `attention_bias` on q, k, v and o (Llama, Qwen3, SmolLM3, Granite). */
  | 'attention_bias'
  /** Always on q, k and v, never on o (Qwen2). */
  | 'qkv'
  /** `attention_bias` (default true) on q, k and v, `attention_out_bias` on o (Seed-OSS). */
  | 'attention_bias+attention_out_bias'
  /** `attention_bias` (default true) on q, k and v, never on o (GLM). */
  | 'attention_bias-qkv'
  /** `use_bias` on q, k, v and o, and on the MLP (ERNIE 4.5). */
  | 'use_bias'
  /** None (Mistral). */
  | 'none';

/** What each model_type's config class reads differently, with its defaults. */
interface LlamaTypeTraits {
  maxPositions: number;
  /** head_dim's default where the class has one (else hidden_size / num_attention_heads). */
  headDim?: number;
  /** num_key_value_heads' default where the class has one (else num_attention_heads). */
  numKvHeads?: number;
  /** rope_theta's default where the class has one (else 1e4). */
  ropeTheta?: number;
  /** rms_norm_eps's default where the class has one (else 1e-6). */
  rmsNormEps?: number;
  attentionBias: AttentionBiasRule;
  /** The key that gives the MLP biases, or false for none. */
  mlpBias: 'mlp_bias' | 'use_bias' | false;
  /** attention_bias's and mlp_bias's default where the class has its own (Jais2Config's true; else false). */
  biasDefault?: boolean;
  /** LayerNorms with a bias, of epsilon `layer_norm_eps` (Jais 2's, default 1e-5), in place of RMSNorms. */
  layerNorm?: boolean;
  /** intermediate_size's default where the class has one (else the key is required). */
  intermediateSize?: number;
  /** RoPE pairs each head's dims (x[2i], x[2i+1]) (ERNIE 4.5's), not rotate_half's halves. */
  interleavedRope?: boolean;
  /** partial_rotary_factor's default where the class rotates part of each head (else the key is refused unless 1). */
  partialRotaryFactor?: number;
  /** gate and up stored as one `mlp.gate_up_proj` (GLM). */
  fusedGateUp?: boolean;
  tiedByDefault: boolean;
  /** Per-head q/k RMSNorms, applied before RoPE or after it; absent: none. */
  qkNorm?: 'before-rope' | 'after-rope';
  /** The layers' norm names where they are not Llama's. */
  normNames?: DecoderNormNames;
  /**
   * An MLP without a gate (NemotronMLP's down(act(up(x)))): the `hidden_act` values Keel runs for
   * it, the first the class's default; absent: a gated MLP.
   */
  ungatedActivations?: readonly ('relu2' | 'xielu')[];
  /** `rope_parameters` where the config gives neither it nor `rope_scaling` (the class's __post_init__ default). */
  defaultRope?: Record<string, unknown>;
  /** max_window_layers' default where the class has its own (else 28). */
  maxWindowLayers?: number;
  /** Multimodal RoPE (the Qwen VL language models), which text positions turn into 1-D RoPE. */
  mrope?: Mrope;
  /**
   * The attention sizes its heads hidden_size / num_attention_heads whatever `head_dim` says
   * (Qwen2-VL's, GLM-4.1V's); its rotary reads head_dim, so transformers fails on one that differs: refused.
   */
  headDimFromHidden?: boolean;
}

/**
 * GlmConfig's and Glm4Config's defaults: GLM-4-9B-chat-hf (glm) and GLM-4-0414 (glm4) differ only in
 * glm4's sandwich norms.
 */
const GLM_TRAITS: LlamaTypeTraits = {
  maxPositions: 131072,
  headDim: 128,
  numKvHeads: 2,
  rmsNormEps: 1.5625e-7,
  intermediateSize: 13696,
  attentionBias: 'attention_bias-qkv',
  mlpBias: false,
  tiedByDefault: false,
  interleavedRope: true,
  partialRotaryFactor: 0.5,
  fusedGateUp: true,
};

/** GLM-4's sandwich norms: attention's and the MLP's outputs normed before each residual add. */
const GLM4_NORM_NAMES: DecoderNormNames = { ...LLAMA_NORM_NAMES, attentionOutput: 'post_self_attn_layernorm', mlpOutput: 'post_mlp_layernorm' };

/** Qwen2VLTextConfig and Qwen2_5_VLTextConfig, alike: Qwen2's layers with defaults of their own. */
const QWEN2_VL_TEXT: LlamaTypeTraits = {
  maxPositions: 32768,
  numKvHeads: 8,
  ropeTheta: 1_000_000,
  rmsNormEps: 1e-5,
  intermediateSize: 29568,
  attentionBias: 'qkv',
  mlpBias: false,
  tiedByDefault: false,
  maxWindowLayers: 80,
  mrope: { layout: 'chunks', defaultSections: [16, 24, 24], mropeTypeIsDefault: true },
  headDimFromHidden: true,
};

const TRAITS: Record<LlamaModelType, LlamaTypeTraits> = {
  llama: { maxPositions: 2048, attentionBias: 'attention_bias', mlpBias: 'mlp_bias', tiedByDefault: false },
  mistral: { maxPositions: 4096 * 32, attentionBias: 'none', mlpBias: false, tiedByDefault: false },
  ministral3: {
    maxPositions: 262144,
    headDim: 128,
    rmsNormEps: 1e-5,
    attentionBias: 'none',
    mlpBias: false,
    tiedByDefault: false,
    defaultRope: {
      rope_type: 'yarn',
      rope_theta: 1e6,
      factor: 16,
      original_max_position_embeddings: 16384,
      beta_fast: 32,
      beta_slow: 1,
      mscale_all_dim: 1,
      mscale: 1,
      llama_4_scaling_beta: 0.1,
    },
  },
  qwen2: { maxPositions: 32768, attentionBias: 'qkv', mlpBias: false, tiedByDefault: false },
  qwen3: { maxPositions: 32768, headDim: 128, attentionBias: 'attention_bias', mlpBias: false, tiedByDefault: false, qkNorm: 'before-rope' },
  qwen2_vl_text: QWEN2_VL_TEXT,
  qwen2_5_vl_text: QWEN2_VL_TEXT,
  qwen3_vl_text: {
    maxPositions: 128000,
    headDim: 128,
    numKvHeads: 32,
    ropeTheta: 500_000,
    intermediateSize: 22016,
    attentionBias: 'attention_bias',
    mlpBias: false,
    tiedByDefault: false,
    qkNorm: 'before-rope',
    mrope: { layout: 'interleaved', defaultSections: [24, 20, 20] },
  },
  smollm3: { maxPositions: 32768, ropeTheta: 2_000_000, attentionBias: 'attention_bias', mlpBias: 'mlp_bias', tiedByDefault: true },
  granite: { maxPositions: 2048, attentionBias: 'attention_bias', mlpBias: 'mlp_bias', tiedByDefault: false },
  seed_oss: { maxPositions: 524288, headDim: 128, attentionBias: 'attention_bias+attention_out_bias', mlpBias: 'mlp_bias', tiedByDefault: false },
  arcee: { maxPositions: 4096, rmsNormEps: 1e-5, attentionBias: 'attention_bias', mlpBias: 'mlp_bias', tiedByDefault: false, ungatedActivations: ['relu2'] },
  hunyuan_v1_dense: {
    maxPositions: 2048,
    intermediateSize: 11008,
    rmsNormEps: 1e-5,
    attentionBias: 'attention_bias',
    mlpBias: false,
    tiedByDefault: false,
    qkNorm: 'after-rope',
    normNames: { ...LLAMA_NORM_NAMES, q: 'self_attn.query_layernorm', k: 'self_attn.key_layernorm' },
  },
  apertus: {
    maxPositions: 65536,
    ropeTheta: 12e6,
    rmsNormEps: 1e-5,
    attentionBias: 'attention_bias',
    mlpBias: false,
    tiedByDefault: false,
    qkNorm: 'before-rope',
    normNames: { ...LLAMA_NORM_NAMES, input: 'attention_layernorm', postAttention: 'feedforward_layernorm' },
    ungatedActivations: ['xielu', 'relu2'],
    defaultRope: { rope_type: 'llama3', rope_theta: 12e6, factor: 8, original_max_position_embeddings: 8192, low_freq_factor: 1, high_freq_factor: 4 },
  },
  ernie4_5: {
    maxPositions: 131072,
    headDim: 128,
    numKvHeads: 2,
    ropeTheta: 500_000,
    rmsNormEps: 1e-5,
    attentionBias: 'use_bias',
    mlpBias: 'use_bias',
    tiedByDefault: true,
    intermediateSize: 3072,
    interleavedRope: true,
  },
  glm: GLM_TRAITS,
  glm4: { ...GLM_TRAITS, normNames: GLM4_NORM_NAMES },
  // Glm4vTextConfig: glm4's layer, whose attention biases q, k and v whatever attention_bias says and
  // sizes heads hidden_size / num_attention_heads; the whole head rotates unless
  // partial_rotary_factor says otherwise (the Hub's configs say 0.5).
  glm4v_text: {
    maxPositions: 32768,
    numKvHeads: 2,
    rmsNormEps: 1e-5,
    intermediateSize: 13696,
    attentionBias: 'qkv',
    mlpBias: false,
    tiedByDefault: false,
    interleavedRope: true,
    partialRotaryFactor: 1,
    fusedGateUp: true,
    normNames: GLM4_NORM_NAMES,
    mrope: { layout: 'chunks', defaultSections: [8, 12, 12] },
    headDimFromHidden: true,
  },
  // Jais2Config: Llama's attention, NemotronMLP's up → relu² → down, and nn.LayerNorm (with biases) for every norm.
  jais2: { maxPositions: 8192, attentionBias: 'attention_bias', mlpBias: 'mlp_bias', biasDefault: true, tiedByDefault: false, ungatedActivations: ['relu2'], layerNorm: true },
};
const MODEL_TYPES = Object.keys(TRAITS) as LlamaModelType[];
const DEFAULT_SLIDING_WINDOW = 4096;
/** layer_norm_eps's default (Jais2Config's). */
const LAYER_NORM_EPS = 1e-5;
const DEFAULT_MAX_WINDOW_LAYERS = 28;

function parseLlamaConfig(json: Record<string, unknown>, source: string): LlamaConfig {
  return parseLlamaTypeConfig(json, source, json.model_type as LlamaModelType);
}

/**
 * Hunyuan dense's keys and defaults, which Hunyuan MoE's attention and layers share (its config
 * class is the dense one's with the MoE keys added): the config's own model_type is kept.
 */
export function parseHunyuanConfig(json: Record<string, unknown>, source: string): LlamaConfig {
  return parseLlamaTypeConfig(json, source, 'hunyuan_v1_dense');
}

/** `json` read with the traits of `modelType`. */
function parseLlamaTypeConfig(json: Record<string, unknown>, source: string, modelType: LlamaModelType): LlamaConfig {
  const traits = TRAITS[modelType];
  const defaultRope = traits.defaultRope !== undefined && json.rope_parameters == null && json.rope_scaling == null;
  const withRope = defaultRope ? { ...json, rope_parameters: traits.defaultRope } : json;
  const fields = new ConfigFields(traits.mrope === undefined ? withRope : withMropeTypeAsDefault(withRope, traits.mrope), source);
  const mlp = parseMlp(fields, modelType, traits.ungatedActivations);
  const decoder = parseDecoderFields(fields, {
    maxPositionEmbeddings: traits.maxPositions,
    headDim: traits.headDim,
    numKvHeads: traits.numKvHeads,
    ropeTheta: traits.ropeTheta,
    rmsNormEps: traits.rmsNormEps,
    partialRotaryFactor: traits.partialRotaryFactor,
    // relu² runs as the gated relu (relu(u) · u); an xIELU MLP reads no activation.
    ...(mlp !== 'gated' && { activation: { kind: 'relu' } }),
  });
  const ropeLayers = modelType === 'smollm3' ? parseRopeLayers(fields, decoder.numLayers) : decoder.ropeLayers;
  if (traits.headDimFromHidden && decoder.headDim * decoder.numHeads !== decoder.hiddenSize) {
    throw invalidModel(`${source}: head_dim ${decoder.headDim} is not hidden_size / num_attention_heads (${decoder.hiddenSize} / ${decoder.numHeads}), which ${modelType}'s attention always uses`);
  }
  if (traits.mrope !== undefined) checkMropeSections(fields, traits.mrope, decoder.rotaryDim);
  return {
    ...decoder,
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', traits.tiedByDefault),
    intermediateSize: fields.positiveInt('intermediate_size', traits.intermediateSize),
    mlpBias: traits.mlpBias !== false && fields.boolean(traits.mlpBias, traits.biasDefault ?? false),
    interleavedRope: traits.interleavedRope ?? false,
    mlp,
    fusedGateUp: traits.fusedGateUp ?? false,
    ...parseAttentionBiases(fields, traits.attentionBias, traits.biasDefault),
    ...(traits.layerNorm && { norm: 'layer' as const, rmsNormEps: fields.positiveNumber('layer_norm_eps', LAYER_NORM_EPS) }),
    qkNorm: traits.qkNorm !== undefined,
    qkNormAfterRope: traits.qkNorm === 'after-rope',
    normNames: traits.normNames ?? LLAMA_NORM_NAMES,
    slidingWindows: modelType === 'smollm3' ? parseSmolLM3Windows(fields, ropeLayers) : parseSlidingWindows(fields, modelType, decoder.numLayers, traits.maxWindowLayers),
    ropeLayers,
    multipliers: modelType === 'granite' ? parseGraniteMultipliers(fields) : null,
    queryTemperature: modelType === 'ministral3' ? parseLlama4ScalingTemperature(fields, decoder.ropeScaling) : null,
    ...(modelType === 'hunyuan_v1_dense' && parseHunyuan(fields, decoder)),
  };
}

/**
 * Hunyuan's head_dim, required (HunYuanDenseV1Config leaves it None, which its attention cannot run
 * with), and its NTK-alpha RoPE: a `dynamic` RoPE dict with `alpha` rotates by the fixed base
 * theta · alpha^(d / (d − 2)), d = head_dim, whatever its factor. transformers drops alpha past
 * max_position_embeddings (it recomputes plain dynamic NTK frequencies there), so Keel serves no
 * longer context. Without alpha: no change. LongRoPE is refused: its rows depend on the prompt,
 * which the identity table the normed keys are cached through (qkNormAfterRope) does not follow.
 */
function parseHunyuan(fields: ConfigFields, decoder: DecoderFields): Partial<DecoderFields> {
  const d = fields.positiveInt('head_dim');
  if (decoder.ropeScaling.type === 'longrope') throw invalidModel(`${fields.source}: LongRoPE is not supported for ${decoder.modelType} (its q/k norms after RoPE cache keys through a second rotary table)`);
  const rope = ropeParameterFields(fields);
  if ((rope.raw('rope_type') ?? rope.raw('type')) !== 'dynamic' || rope.raw('alpha') == null) return {};
  const alpha = rope.positiveNumber('alpha');
  return { ropeTheta: decoder.ropeTheta * alpha ** (d / (d - 2)), ropeScaling: { type: 'default' }, contextLength: decoder.maxPositionEmbeddings };
}

/**
 * Ministral 3 and Mistral 4 scale every query after RoPE by 1 + β · ln(1 + ⌊p / original⌋) at
 * position p (transformers' get_llama_4_attn_scale), with β the RoPE dict's `llama_4_scaling_beta`
 * and original its `original_max_position_embeddings` (for YaRN, llama3 and LongRoPE the one the
 * scaling reads, which transformers puts there; other RoPE types must give it). transformers fails
 * without either, so Keel requires both.
 */
export function parseLlama4ScalingTemperature(fields: ConfigFields, scaling: RopeScaling): QueryTemperature {
  const rope = ropeParameterFields(fields);
  const floorScale = 'originalMaxPositionEmbeddings' in scaling ? scaling.originalMaxPositionEmbeddings : rope.positiveInt('original_max_position_embeddings');
  return { floorScale, attnScale: rope.finiteNumber('llama_4_scaling_beta'), positionOffset: 0 };
}

/**
 * The attention biases as `rule` spells them (`attention_bias`: q, k, v and o alike, as Llama's and
 * most families', absent `fallback`: false but for Jais 2's).
 */
export function parseAttentionBiases(fields: ConfigFields, rule: AttentionBiasRule, fallback = false): { attentionBias: boolean; outputBias: boolean } {
  switch (rule) {
    case 'attention_bias': {
      const bias = fields.boolean('attention_bias', fallback);
      return { attentionBias: bias, outputBias: bias };
    }
    case 'qkv':
      return { attentionBias: true, outputBias: false };
    case 'attention_bias+attention_out_bias':
      return { attentionBias: fields.boolean('attention_bias', true), outputBias: fields.boolean('attention_out_bias', false) };
    case 'attention_bias-qkv':
      return { attentionBias: fields.boolean('attention_bias', true), outputBias: false };
    case 'use_bias': {
      const bias = fields.boolean('use_bias', false);
      return { attentionBias: bias, outputBias: bias };
    }
    case 'none':
      return { attentionBias: false, outputBias: false };
  }
}

/**
 * The MLP: gated, or for a model_type without a gate (Arcee, Apertus) its `hidden_act`, one of
 * `ungated` (other ungated activations are refused by name).
 */
function parseMlp(fields: ConfigFields, modelType: LlamaModelType, ungated: readonly ('relu2' | 'xielu')[] | undefined): LlamaConfig['mlp'] {
  if (ungated === undefined) return 'gated';
  const name = fields.string('hidden_act', ungated[0]);
  const mlp = ungated.find((a) => a === name);
  if (mlp === undefined) throw invalidModel(`${fields.source}: hidden_act "${name}" is not supported for ${modelType} (Keel runs its MLP without a gate with ${ungated.join(' or ')})`);
  return mlp;
}

/** GraniteConfig's multipliers (GraniteMoE's too), each 1 by default (the attention's too: not head_dim^-0.5). */
export function parseGraniteMultipliers(fields: ConfigFields): DecoderMultipliers {
  return {
    embedding: fields.finiteNumber('embedding_multiplier', 1),
    residual: fields.finiteNumber('residual_multiplier', 1),
    attention: fields.finiteNumber('attention_multiplier', 1),
    logits: fields.positiveNumber('logits_scaling', 1),
  };
}

/**
 * SmolLM3's windows, as transformers' masks apply them: a layer slides by `sliding_window` where
 * `layer_types` says "sliding_attention" (whatever `use_sliding_window` says); without layer_types
 * the NoPE layers slide when `use_sliding_window` is true and a window is given.
 */
function parseSmolLM3Windows(fields: ConfigFields, ropeLayers: boolean[]): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', null);
  const useWindow = () => fields.boolean('use_sliding_window', false) && window !== null;
  const sliding = parseSlidingLayerTypes(fields, ropeLayers.length) ?? ropeLayers.map((rotates) => !rotates && useWindow());
  return sliding.map((s) => (s ? window : null));
}

/**
 * Llama, Granite, Seed-OSS, Hunyuan, Apertus, Qwen3-VL, GLM, GLM-4.1V and Jais 2 never slide. Mistral slides every layer (by default 4096), Ministral 3
 * too where it gives a sliding_window (its default is none). Qwen2/Qwen3 (and Qwen2-VL's and Qwen2.5-VL's language models) slide
 * only when `use_sliding_window` is true, and then only layers whose `layer_types` entry is "sliding_attention" (derived, when
 * absent, as the layers from `max_window_layers` on, by default `maxWindowLayers`).
 */
function parseSlidingWindows(fields: ConfigFields, modelType: Exclude<LlamaModelType, 'smollm3'>, numLayers: number, maxWindowLayers = DEFAULT_MAX_WINDOW_LAYERS): (number | null)[] {
  const all = (window: number | null) => new Array<number | null>(numLayers).fill(window);
  const neverSlides: readonly LlamaModelType[] = ['llama', 'granite', 'seed_oss', 'hunyuan_v1_dense', 'apertus', 'qwen3_vl_text', 'glm', 'glm4', 'glm4v_text', 'jais2'];
  if (neverSlides.includes(modelType)) return all(null);
  if (modelType === 'mistral') return all(fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW));
  if (modelType === 'ministral3') return all(fields.optionalPositiveInt('sliding_window', null));
  if (!fields.boolean('use_sliding_window', false)) return all(null);
  const window = fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  if (window === null) return all(null);
  const layerTypes = fields.raw('layer_types');
  if (Array.isArray(layerTypes)) {
    if (layerTypes.length !== numLayers) {
      throw invalidModel(`${fields.source}: layer_types has ${layerTypes.length} entries for ${numLayers} layers`);
    }
    return layerTypes.map((t) => (t === 'sliding_attention' ? window : null));
  }
  const firstSliding = fields.nonNegativeInt('max_window_layers', maxWindowLayers);
  return Array.from({ length: numLayers }, (_, i) => (i >= firstSliding ? window : null));
}

/** The Llama-family decoder: a dense MLP in every layer. */
export class LlamaModel extends DecoderModel {
  constructor(config: LlamaConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    super(config, maxPositions, streaming, stage, (i) => {
      const p = `model.layers.${i}.mlp`;
      const projections = { up: `${p}.up_proj.weight`, down: `${p}.down_proj.weight` };
      if (config.mlp === 'xielu') return new XieluMlp({ ...projections, activation: `${p}.act_fn` }, config.hiddenSize, config.intermediateSize);
      const options = { bias: config.mlpBias };
      if (config.fusedGateUp) return new GatedMlp({ gateUp: `${p}.gate_up_proj.weight`, down: projections.down }, config.hiddenSize, config.intermediateSize, config.activation, options);
      const gate = config.mlp === 'relu2' ? {} : { gate: `${p}.gate_proj.weight` };
      return new GatedMlp({ ...gate, ...projections }, config.hiddenSize, config.intermediateSize, config.activation, options);
    });
  }
}

export const llamaFamily: ModelFamily<LlamaConfig> = {
  name: 'Llama',
  modelTypes: MODEL_TYPES,
  parseConfig: parseLlamaConfig,
  create: (config, maxPositions, streaming, stage) => new LlamaModel(config, maxPositions, streaming, stage),
};
