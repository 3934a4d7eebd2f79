import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import {
  ConfigFields,
  layerTypeRopeFields,
  parseSlidingLayerTypes,
  parseCommonFields,
  parseHeadDim,
  parseHeads,
  parseRope,
  parseRopeParameters,
  parseActivation,
  ropeParameterFields,
  type RopeSettings,
} from './hf-config.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { ModelConfig } from './model-config.ts';

/*
 * Gemma 1, 2 and 3 (text) in one file: transformers builds Gemma 3 from Gemma 2's modules and
 * Gemma 2 from Gemma 1's, and they differ in a handful of config fields read side by side below
 * (soft-caps, sliding windows, q/k norms, one RoPE or one per layer type). All scale the
 * embeddings by √hidden, multiply by (1 + w) in every RMSNorm, use gelu-tanh and tie the LM head.
 * Gemma 2 and 3 wrap attention and MLP in pre and post norms, scale scores by
 * query_pre_attn_scalar^-0.5 and alternate sliding-window and global layers; Gemma 1 has Llama's
 * two pre-norms, scales by head_dim^-0.5 and attends globally everywhere.
 */

type GemmaModelType = 'gemma' | 'gemma2' | 'gemma3_text';

export interface GemmaConfig extends ModelConfig {
  modelType: GemmaModelType;
  intermediateSize: number;
  /** The MLP's activation (gelu-tanh in every published Gemma). */
  activation: Activation;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  /** Scores are scaled by queryPreAttnScalar^-0.5, not headDim^-0.5. */
  queryPreAttnScalar: number;
  maxPositionEmbeddings: number;
  /** q, k, v and o carry a bias (`attention_bias`). */
  attentionBias: boolean;
  /** Per-head (1 + w) RMSNorm of q and k before RoPE (Gemma 3). */
  qkNorm: boolean;
  /** Norms after attention and the MLP too (pre_feedforward_layernorm, post_feedforward_layernorm): Gemma 2 and 3. */
  sandwichNorms: boolean;
  /** Each layer's window, or null for a global layer. */
  slidingWindows: (number | null)[];
  /** Attention scores become cap · tanh(score / cap) (`attn_logit_softcapping`); null for none. */
  attnLogitSoftcap: number | null;
  /** Final logits become cap · tanh(logit / cap) (`final_logit_softcapping`); null for none. */
  finalLogitSoftcap: number | null;
  /** RoPE of the global layers. */
  globalRope: RopeSettings;
  /** RoPE of the sliding layers when they have their own (Gemma 3); null: the global one (Gemma 2). */
  localRope: RopeSettings | null;
}

const MODEL_TYPES: readonly GemmaModelType[] = ['gemma', 'gemma2', 'gemma3_text'];
/** transformers' config defaults where they differ between the generations (Gemma 1 has no window: its pattern is unused). */
const DEFAULTS: Record<GemmaModelType, { maxPositions: number; attnSoftcap: number | null; finalSoftcap: number | null; windowPattern: number }> = {
  gemma: { maxPositions: 8192, attnSoftcap: null, finalSoftcap: null, windowPattern: 1 },
  gemma2: { maxPositions: 8192, attnSoftcap: 50, finalSoftcap: 30, windowPattern: 2 },
  gemma3_text: { maxPositions: 131072, attnSoftcap: null, finalSoftcap: null, windowPattern: 6 },
};
const DEFAULT_HEAD_DIM = 256;
const DEFAULT_QUERY_PRE_ATTN_SCALAR = 256;
const DEFAULT_SLIDING_WINDOW = 4096;
/**
 * Gemma3TextConfig's defaults for the keys Gemma 3's Hub configs leave out: gemma-3-4b-it's
 * text_config names six keys and relies on the class for the rest (its heads, its vocabulary).
 */
const GEMMA3_TEXT_DEFAULTS: Record<string, unknown> = {
  vocab_size: 262_208,
  hidden_size: 2304,
  intermediate_size: 9216,
  num_hidden_layers: 26,
  num_attention_heads: 8,
  num_key_value_heads: 4,
  bos_token_id: 2,
  eos_token_id: 1,
};
/** Gemma3TextConfig.default_theta. */
const GEMMA3_THETA = { global: 1_000_000, local: 10_000 };

function parseGemmaConfig(json: Record<string, unknown>, source: string): GemmaConfig {
  const fields = new ConfigFields(json.model_type === 'gemma3_text' ? { ...GEMMA3_TEXT_DEFAULTS, ...json } : json, source);
  const modelType = fields.raw('model_type') as GemmaModelType;
  const defaults = DEFAULTS[modelType];
  const common = parseCommonFields(fields, modelType);
  const { numHeads, numKvHeads } = parseHeads(fields);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', defaults.maxPositions);
  if (fields.boolean('use_bidirectional_attention', false)) {
    throw invalidModel(`${source}: use_bidirectional_attention=true (an embedding model's attention) is not supported; Keel runs causal Gemma models`);
  }
  const { globalRope, localRope } =
    modelType === 'gemma3_text' ? parseGemma3Rope(fields, maxPositionEmbeddings) : { globalRope: parseRope(fields, maxPositionEmbeddings), localRope: null };
  const attentionBias = fields.boolean('attention_bias', false);
  const headDim = parseHeadDim(fields, common.hiddenSize, numHeads, DEFAULT_HEAD_DIM);
  const gemma1 = modelType === 'gemma';
  return {
    ...common,
    modelType,
    // Gemma 3's max_position_embeddings already counts its global layers' linear RoPE scaling;
    // Gemma 1 and 2 stretch it by their one RoPE's factor, as every other family does.
    contextLength: modelType === 'gemma3_text' ? maxPositionEmbeddings : ropeContextLength({ scaling: globalRope.ropeScaling, maxPositionEmbeddings }),
    intermediateSize: fields.positiveInt('intermediate_size'),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-6),
    // Gemma 1 scales scores by head_dim^-0.5 (it has no query_pre_attn_scalar).
    // Gemma 1's MLP runs `hidden_act` (transformers 5 no longer reads Gemma 1.1's `hidden_activation`,
    // nor turns the first configs' "gelu" into the tanh approximation as 4.x did); Gemma 2 and 3 run `hidden_activation`.
    activation: gemma1 ? parseActivation(fields, 'hidden_act', 'gelu_pytorch_tanh') : parseActivation(fields, 'hidden_activation', 'gelu_pytorch_tanh'),
    queryPreAttnScalar: gemma1 ? headDim : fields.positiveNumber('query_pre_attn_scalar', DEFAULT_QUERY_PRE_ATTN_SCALAR),
    maxPositionEmbeddings,
    attentionBias,
    qkNorm: modelType === 'gemma3_text',
    sandwichNorms: !gemma1,
    slidingWindows: gemma1 ? new Array<null>(common.numLayers).fill(null) : parseSlidingWindows(fields, common.numLayers, defaults.windowPattern),
    // transformers' Gemma 3 attention reads attn_logit_softcapping but never passes it on: its scores are uncapped.
    attnLogitSoftcap: modelType === 'gemma3_text' ? null : fields.optionalPositiveNumber('attn_logit_softcapping', defaults.attnSoftcap),
    finalLogitSoftcap: fields.optionalPositiveNumber('final_logit_softcapping', defaults.finalSoftcap),
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', true),
    globalRope,
    localRope,
  };
}

/**
 * `layer_types` ("sliding_attention" / "full_attention" per layer), or else every
 * `sliding_window_pattern`-th layer global (Gemma 3's Hub configs; Gemma 2 alternates, every
 * second layer global). A null `sliding_window` makes every layer global.
 */
function parseSlidingWindows(fields: ConfigFields, numLayers: number, defaultPattern: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', DEFAULT_SLIDING_WINDOW);
  const pattern = () => (fields.raw('model_type') === 'gemma3_text' ? fields.positiveInt('sliding_window_pattern', defaultPattern) : defaultPattern);
  const sliding = parseSlidingLayerTypes(fields, numLayers) ?? Array.from({ length: numLayers }, (_, i) => (i + 1) % pattern() !== 0);
  return sliding.map((s) => (s ? window : null));
}

/**
 * Gemma 3's two RoPEs. transformers 5 writes `rope_parameters` per layer type ({full_attention,
 * sliding_attention}); Hub configs write `rope_theta` and `rope_scaling` for the global layers and
 * `rope_local_base_freq` for the sliding ones, which are never scaled.
 */
function parseGemma3Rope(fields: ConfigFields, maxPositionEmbeddings: number): { globalRope: RopeSettings; localRope: RopeSettings } {
  const localTheta = fields.positiveNumber('rope_local_base_freq', GEMMA3_THETA.local);
  const perLayerType = layerTypeRopeFields(fields);
  if (perLayerType !== null) {
    const { full, sliding, outer } = perLayerType;
    // The top-level rope_theta would be the global one; the sliding layers default to theirs.
    return {
      globalRope: parseRopeParameters(full, fields, maxPositionEmbeddings, GEMMA3_THETA.global, outer),
      localRope: parseRopeParameters(sliding, fields, maxPositionEmbeddings, localTheta, outer),
    };
  }
  const globalRope = parseRopeParameters(ropeParameterFields(fields), fields, maxPositionEmbeddings, GEMMA3_THETA.global);
  return { globalRope, localRope: { ropeTheta: localTheta, ropeScaling: { type: 'default' } } };
}

class GemmaDecoderLayer extends ComposedLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  /** Gemma 2/3: the norm of attention's output; Gemma 1: the norm before the MLP (Llama's). */
  readonly postAttentionNorm: RmsNorm;
  /** Gemma 2/3's sandwich norms around the MLP; null for Gemma 1. */
  readonly preFeedforwardNorm: RmsNorm | null;
  readonly mlp: GatedMlp;
  readonly postFeedforwardNorm: RmsNorm | null;

  constructor(config: GemmaConfig, index: number, rotary: { global: RotaryEmbedding; local: RotaryEmbedding }) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
    const norm = (name: string, size = hiddenSize) => new RmsNorm(name, size, eps, { offset: 1 });
    const window = config.slidingWindows[index];
    this.inputNorm = norm(`${p}.input_layernorm.weight`);
    this.attention = new SelfAttention({
      layer: index,
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      scale: config.queryPreAttnScalar ** -0.5,
      slidingWindow: window,
      softcap: config.attnLogitSoftcap,
      sinks: null,
      rotary: window === null ? rotary.global : rotary.local,
      qkNorm: config.qkNorm ? { q: norm(`${p}.self_attn.q_norm.weight`, headDim), k: norm(`${p}.self_attn.k_norm.weight`, headDim) } : null,
      ...projectionNames(`${p}.self_attn`),
      qkvBias: config.attentionBias,
      oBias: config.attentionBias,
    });
    this.postAttentionNorm = norm(`${p}.post_attention_layernorm.weight`);
    this.preFeedforwardNorm = config.sandwichNorms ? norm(`${p}.pre_feedforward_layernorm.weight`) : null;
    this.mlp = new GatedMlp(
      { gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` },
      hiddenSize,
      config.intermediateSize,
      config.activation,
    );
    this.postFeedforwardNorm = config.sandwichNorms ? norm(`${p}.post_feedforward_layernorm.weight`) : null;
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.preFeedforwardNorm, this.mlp, this.postFeedforwardNorm].filter((l) => l !== null);
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...this.mlp.loraTargets()];
  }
}

/**
 * The Gemma 2 / Gemma 3 decoder: h += post_attention_norm(attn(input_norm(h))), then h +=
 * post_feedforward_norm(mlp(pre_feedforward_norm(h))); Gemma 1's is Llama's: h +=
 * attn(input_norm(h)), then h += mlp(post_attention_norm(h)). Each sublayer's last output is added
 * to the residual inside the next fused addRmsNorm, as Llama's are.
 */
export class GemmaModel extends DecoderStack<GemmaConfig, GemmaDecoderLayer> {
  constructor(config: GemmaConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    const rotary = (rope: RopeSettings) =>
      new RotaryEmbedding({ rotaryDim: config.headDim, theta: rope.ropeTheta, scaling: rope.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions, streaming);
    const global = rotary(config.globalRope);
    const local = config.localRope === null ? global : rotary(config.localRope);
    // √hidden in float32 (transformers' embed_scale buffer); the backend rounds it to the dtype it computes in, as
    // transformers casts it to the weights' dtype: a bf16 checkpoint run in float32 keeps it unrounded.
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize, Math.fround(Math.sqrt(config.hiddenSize)));
    super(config, {
      rotaries: global === local ? [global] : [global, local],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new GemmaDecoderLayer(config, i, { global, local })),
      finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps, { offset: 1 }),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
      finalLogitSoftcap: config.finalLogitSoftcap,
    }, stage);
  }

  /** The layer's last output (the post-feed-forward norm's, or Gemma 1's MLP's) is left pending until the next norm adds it to the residual stream. */
  protected layerForward(b: Backend, layer: GemmaDecoderLayer, { residual, pending }: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    const attnIn: Tensor = pending === null ? layer.inputNorm.forward(b, residual) : layer.inputNorm.addAndForward(b, pending, residual);
    const attention = layer.attention.forward(b, attnIn, step, cache);
    if (layer.preFeedforwardNorm === null || layer.postFeedforwardNorm === null) return layer.mlp.forward(b, layer.postAttentionNorm.addAndForward(b, attention, residual), step);
    const attnOut = layer.postAttentionNorm.forward(b, attention);
    return layer.postFeedforwardNorm.forward(b, layer.mlp.forward(b, layer.preFeedforwardNorm.addAndForward(b, attnOut, residual), step));
  }
}

export const gemmaFamily: ModelFamily<GemmaConfig> = {
  name: 'Gemma',
  modelTypes: MODEL_TYPES,
  parseConfig: parseGemmaConfig,
  create: (config, maxPositions, streaming, stage) => new GemmaModel(config, maxPositions, streaming, stage),
};
