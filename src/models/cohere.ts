import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { MoeBlock } from '../layers/moe.ts';
import { BiaslessLayerNorm, RmsNorm, type ResidualNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { HiddenStateTap, ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields, parseActivation, parseCommonFields, parseHeadDim, parseHeads, parseRope, parseSlidingLayerTypes, type RopeSettings } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import { parseExpertsPerToken, parseMlpLayerTypes, parseNumExperts } from './moe-fields.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import type { FeedForward } from './pre-norm-layer.ts';

/*
 * Cohere's Command-R (cohere) and Command-A / R7B (cohere2). A layer is parallel: one LayerNorm
 * (no bias) feeds both attention and the MLP, h = x + attn(ln(x)) + mlp(ln(x)). RoPE pairs each
 * head's dims as (x[2i], x[2i+1]); the logits are multiplied by `logit_scale`; the LM head is tied
 * by default. Command-R+ norms q and k with a LayerNorm per head, each head its own weights
 * (`use_qk_norm`). Cohere 2 mixes sliding-window layers, which rotate, with full-attention layers,
 * which do not (NoPE). Cohere 2 MoE (cohere2_moe) is Cohere 2 with a mixture of experts in the layers
 * `mlp_layer_types` calls sparse (the first `first_k_dense_replace` dense, their own width and window
 * pattern, and rotating whatever their attention when `prefix_dense_sliding_window_pattern` is 1):
 * Mixtral's experts under a router that takes the top-k logits, then a softmax over them or their
 * sigmoids (renormalized with `norm_topk_prob`), plus `num_shared_experts` shared experts added;
 * its norms are RMSNorms where `rms_norm_eps` is set.
 */

type CohereModelType = 'cohere' | 'cohere2' | 'cohere2_moe';

export interface CohereConfig extends ModelConfig {
  modelType: CohereModelType;
  intermediateSize: number;
  activation: Activation;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** The norms' epsilon: `layer_norm_eps`, or an RMSNorm's `rms_norm_eps`. */
  layerNormEps: number;
  /** The input and final norms: Cohere's LayerNorm without a bias, or an RMSNorm (Cohere 2 MoE with rms_norm_eps). */
  norm: 'layer' | 'rms';
  maxPositionEmbeddings: number;
  rope: RopeSettings;
  /** q, k, v and o carry a bias (`attention_bias`). */
  attentionBias: boolean;
  /** q and k LayerNorm-ed per head before RoPE, weights [heads, head_dim] (`use_qk_norm`: cohere only). */
  qkNorm: boolean;
  /** The logits are multiplied by this (`logit_scale`). */
  logitScale: number;
  /** Each layer's window, or null for a full-attention layer. */
  slidingWindows: (number | null)[];
  /** Whether each layer rotates q and k: false for Cohere 2's full-attention layers. */
  ropeLayers: boolean[];
  /** Per layer: a MoE block (Cohere 2 MoE's sparse layers) or the dense MLP. */
  sparseLayers: boolean[];
  /** The MoE layers' block; null for Cohere and Cohere 2. */
  moe: CohereMoeConfig | null;
}

/** Cohere 2 MoE's experts, each `intermediate_size` wide; its dense layers are `CohereConfig.intermediateSize` wide. */
export interface CohereMoeConfig {
  numExperts: number;
  numExpertsPerToken: number;
  expertIntermediateSize: number;
  /** The top-k logits' softmax (`expert_selection_fn` softmax) or sigmoids, renormalized with `norm_topk_prob`. */
  scoring: 'topk-softmax' | 'sigmoid';
  normalize: boolean;
  /** The shared experts as one MLP, `intermediate_size` × `num_shared_experts` wide; 0 for none. */
  sharedIntermediateSize: number;
}

const MODEL_TYPES: readonly CohereModelType[] = ['cohere', 'cohere2', 'cohere2_moe'];
/** CohereConfig's and Cohere2Config's defaults; only Cohere's class sets a rope_theta default of its own. */
const DEFAULTS = { maxPositions: 8192, layerNormEps: 1e-5, logitScale: 0.0625, cohereRopeTheta: 500_000 };
/** Cohere2Config's sliding_window and sliding_window_pattern (a full-attention layer every fourth). */
const COHERE2 = { slidingWindow: 4096, fullEvery: 4 };
/** Cohere2MoeConfig's own defaults. */
const COHERE2_MOE = { headDim: 128, numExperts: 8, numExpertsPerToken: 2, sharedExperts: 0, firstDense: 0, prefixFullEvery: 1 };

function parseCohereConfig(json: Record<string, unknown>, source: string): CohereConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as CohereModelType;
  const common = parseCommonFields(fields, modelType);
  const { numHeads, numKvHeads } = parseHeads(fields);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULTS.maxPositions);
  // Cohere2MoeConfig declares the 4.x rope_scaling key and never reads it (its RoPE is rope_parameters, or rope_theta's default).
  if (modelType === 'cohere2_moe' && fields.raw('rope_parameters') == null && fields.raw('rope_scaling') != null) {
    throw invalidModel(`${source}: rope_scaling is not read by transformers' Cohere2MoeConfig (it runs default RoPE); give the scaling as rope_parameters`);
  }
  const rope = parseRope(fields, maxPositionEmbeddings, modelType === 'cohere' ? { defaultTheta: DEFAULTS.cohereRopeTheta } : {});
  const moeLayers = modelType === 'cohere2_moe' ? parseCohere2MoeLayers(fields, common.numLayers) : null;
  const slidingWindows = modelType === 'cohere' ? new Array<null>(common.numLayers).fill(null) : parseCohere2Windows(fields, common.numLayers, moeLayers?.firstDense ?? 0);
  // Cohere2Config has no use_qk_norm: its attention never norms q and k.
  const qkNorm = modelType === 'cohere' && fields.boolean('use_qk_norm', false);
  const rmsNorm = modelType === 'cohere2_moe' && fields.raw('rms_norm_eps') != null;
  return {
    ...common,
    modelType,
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', true),
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings }),
    intermediateSize: moeLayers?.denseIntermediateSize ?? fields.positiveInt('intermediate_size'),
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    numHeads,
    numKvHeads,
    headDim: parseHeadDim(fields, common.hiddenSize, numHeads, modelType === 'cohere2_moe' ? COHERE2_MOE.headDim : undefined),
    layerNormEps: rmsNorm ? fields.positiveNumber('rms_norm_eps') : fields.positiveNumber('layer_norm_eps', DEFAULTS.layerNormEps),
    norm: rmsNorm ? 'rms' : 'layer',
    maxPositionEmbeddings,
    rope,
    attentionBias: fields.boolean('attention_bias', false),
    qkNorm,
    logitScale: parseLogitScale(fields),
    slidingWindows,
    // Cohere 2 MoE's dense layers rotate whatever their attention where prefix_dense_sliding_window_pattern is 1 (its force_rope).
    ropeLayers: slidingWindows.map((w, i) => modelType === 'cohere' || w !== null || (moeLayers?.denseRotate === true && !moeLayers.sparseLayers[i])),
    sparseLayers: moeLayers?.sparseLayers ?? new Array<boolean>(common.numLayers).fill(false),
    moe: moeLayers?.moe ?? null,
  };
}

/**
 * Cohere 2 MoE's layers, as Cohere2MoeConfig derives them: `mlp_layer_types`, else the first
 * `first_k_dense_replace` (a key it reads once and does not save) dense; the dense layers'
 * width (`prefix_dense_intermediate_size`, else intermediate_size); the experts. The router's
 * `expert_selection_fn` and `shared_expert_combination_strategy` are checked: Keel adds the shared
 * experts to the routed ones ("sum"), and refuses "average" where there are any.
 */
function parseCohere2MoeLayers(fields: ConfigFields, numLayers: number): { firstDense: number; sparseLayers: boolean[]; denseRotate: boolean; denseIntermediateSize: number; moe: CohereMoeConfig } {
  const { source } = fields;
  const firstDense = fields.nonNegativeInt('first_k_dense_replace', COHERE2_MOE.firstDense);
  const expertIntermediateSize = fields.positiveInt('intermediate_size');
  const numExperts = parseNumExperts(fields, COHERE2_MOE.numExperts);
  const selection = fields.string('expert_selection_fn', 'softmax');
  if (selection !== 'softmax' && selection !== 'sigmoid') throw invalidModel(`${source}: expert_selection_fn "${selection}" is not supported for cohere2_moe (softmax or sigmoid)`);
  const sharedExperts = fields.nonNegativeInt('num_shared_experts', COHERE2_MOE.sharedExperts);
  const combination = fields.string('shared_expert_combination_strategy', 'average');
  if (sharedExperts > 0 && combination !== 'sum') {
    throw invalidModel(`${source}: shared_expert_combination_strategy "${combination}" is not supported for cohere2_moe with shared experts (Keel adds them to the routed experts: "sum")`);
  }
  return {
    firstDense,
    sparseLayers: parseMlpLayerTypes(fields, numLayers, firstDense),
    denseRotate: fields.positiveInt('prefix_dense_sliding_window_pattern', COHERE2_MOE.prefixFullEvery) === 1,
    denseIntermediateSize: fields.raw('prefix_dense_intermediate_size') != null ? fields.positiveInt('prefix_dense_intermediate_size') : expertIntermediateSize,
    moe: {
      numExperts,
      numExpertsPerToken: parseExpertsPerToken(fields, numExperts, COHERE2_MOE.numExpertsPerToken),
      expertIntermediateSize,
      scoring: selection === 'softmax' ? 'topk-softmax' : 'sigmoid',
      normalize: selection === 'sigmoid' && fields.boolean('norm_topk_prob', true),
      sharedIntermediateSize: expertIntermediateSize * sharedExperts,
    },
  };
}

/** `logit_scale`, any finite number; null is refused, as transformers' forward cannot multiply by None. */
function parseLogitScale(fields: ConfigFields): number {
  if (fields.raw('logit_scale') === null) {
    throw invalidModel(`${fields.source}: logit_scale is null: give the factor the logits are multiplied by (transformers' forward fails without one)`);
  }
  return fields.finiteNumber('logit_scale', DEFAULTS.logitScale);
}

/**
 * Cohere 2's `layer_types`, by default all but every `sliding_window_pattern`-th layer sliding
 * (Cohere 2 MoE's first `firstDense` layers by their own `prefix_dense_sliding_window_pattern`,
 * counted from their first, the others from theirs). A null `sliding_window` is refused:
 * transformers builds a sliding-window mask for every model and fails without one.
 */
function parseCohere2Windows(fields: ConfigFields, numLayers: number, firstDense: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', COHERE2.slidingWindow);
  if (window === null) throw invalidModel(`${fields.source}: sliding_window is null: ${fields.raw('model_type')} needs a window for its sliding layers (transformers fails without one)`);
  const listed = parseSlidingLayerTypes(fields, numLayers);
  if (listed !== null) return listed.map((s) => (s ? window : null));
  const every = fields.positiveInt('sliding_window_pattern', COHERE2.fullEvery);
  const prefixEvery = firstDense > 0 ? fields.positiveInt('prefix_dense_sliding_window_pattern', COHERE2_MOE.prefixFullEvery) : 1;
  return Array.from({ length: numLayers }, (_, i) => {
    const [position, pattern] = i < firstDense ? [i, prefixEvery] : [i - firstDense, every];
    return (position + 1) % pattern !== 0 ? window : null;
  });
}

/** The norm of the module at `name` (`model.norm`, `model.layers.3.input_layernorm`), over whole rows. */
function cohereNorm(config: CohereConfig, name: string): ResidualNorm {
  const { hiddenSize, layerNormEps: eps } = config;
  return config.norm === 'rms' ? new RmsNorm(`${name}.weight`, hiddenSize, eps) : new BiaslessLayerNorm(`${name}.weight`, [hiddenSize], eps);
}

/** One parallel layer: an input norm, then attention and the MLP (or MoE block) side by side on its output. */
class CohereDecoderLayer extends ComposedLayer {
  readonly inputNorm: ResidualNorm;
  readonly attention: SelfAttention;
  readonly mlp: FeedForward & { loraTargets?(): LoraTarget[] };

  constructor(config: CohereConfig, index: number, rotary: RotaryEmbedding) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, layerNormEps: eps, attentionBias } = config;
    this.inputNorm = cohereNorm(config, `${p}.input_layernorm`);
    const qkNorm = config.qkNorm
      ? { q: new BiaslessLayerNorm(`${p}.self_attn.q_norm.weight`, [numHeads, headDim], eps), k: new BiaslessLayerNorm(`${p}.self_attn.k_norm.weight`, [numKvHeads, headDim], eps) }
      : null;
    this.attention = new SelfAttention({
      layer: index,
      hiddenSize,
      numHeads,
      numKvHeads,
      headDim,
      scale: headDim ** -0.5,
      slidingWindow: config.slidingWindows[index],
      softcap: null,
      sinks: null,
      rotary,
      qkNorm: null,
      projectionNorm: qkNorm,
      // A NoPE layer reads an identity table: its dims need no reordering.
      interleavedRope: config.ropeLayers[index],
      ...projectionNames(`${p}.self_attn`),
      qkvBias: attentionBias,
      oBias: attentionBias,
    });
    this.mlp = cohereMlp(config, index);
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.mlp];
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...(this.mlp.loraTargets?.() ?? [])];
  }
}

/** Layer `index`'s `mlp`: a dense gated MLP, or Cohere 2 MoE's block (router `gate`, Mixtral's experts, `shared_experts`). */
function cohereMlp(config: CohereConfig, index: number): FeedForward & { loraTargets?(): LoraTarget[] } {
  const p = `model.layers.${index}.mlp`;
  const { hiddenSize, activation, moe } = config;
  const gatedMlp = (prefix: string, width: number, sharedExpert = false) =>
    new GatedMlp({ gate: `${prefix}.gate_proj.weight`, up: `${prefix}.up_proj.weight`, down: `${prefix}.down_proj.weight` }, hiddenSize, width, activation, { sharedExpert });
  if (moe === null || !config.sparseLayers[index]) return gatedMlp(p, config.intermediateSize);
  return new MoeBlock({
    hiddenSize,
    intermediateSize: moe.expertIntermediateSize,
    numExperts: moe.numExperts,
    router: `${p}.gate.weight`,
    routerBias: false,
    routing: { topK: moe.numExpertsPerToken, scoring: moe.scoring, selectionBias: null, groups: null, normalize: moe.normalize, scale: 1 },
    experts: { layout: 'per-expert', name: (e, projection) => `${p}.experts.${e}.${projection}_proj.weight` },
    activation,
    shared: moe.sharedIntermediateSize === 0 ? null : { mlp: gatedMlp(`${p}.shared_experts`, moe.sharedIntermediateSize, true), gate: null },
  });
}

/**
 * The Cohere decoder. A layer adds what the layer before left pending, norms the residual once,
 * adds attention's output and leaves the MLP's pending: the sum x + attn + mlp in transformers'
 * order.
 */
export class CohereModel extends DecoderStack<CohereConfig, CohereDecoderLayer> {
  constructor(config: CohereConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    const rope = { rotaryDim: config.headDim, theta: config.rope.ropeTheta, scaling: config.rope.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings };
    const rotary = new RotaryEmbedding(rope, maxPositions, streaming);
    // Cohere 2's full-attention layers read a table of identity rows, so their keys are cached through the same op.
    const none = config.ropeLayers.every((r) => r) ? null : new RotaryEmbedding({ ...rope, scaling: { type: 'none' } }, maxPositions, streaming);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    super(config, {
      rotaries: none === null ? [rotary] : [rotary, none],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new CohereDecoderLayer(config, i, config.ropeLayers[i] || none === null ? rotary : none)),
      finalNorm: cohereNorm(config, 'model.norm'),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  protected layerForward(b: Backend, layer: CohereDecoderLayer, { residual, pending }: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    const normed = pending === null ? layer.inputNorm.forward(b, residual) : layer.inputNorm.addAndForward(b, pending, residual);
    b.addInto(residual, layer.attention.forward(b, normed, step, cache), null);
    return layer.mlp.forward(b, normed, step);
  }

  protected override finalLogits(b: Backend, step: StepInputs, stream: ResidualStream, tap: HiddenStateTap | undefined): Tensor {
    const logits = super.finalLogits(b, step, stream, tap);
    b.scale(logits, this.config.logitScale);
    return logits;
  }
}

export const cohereFamily: ModelFamily<CohereConfig> = {
  name: 'Cohere',
  modelTypes: MODEL_TYPES,
  parseConfig: parseCohereConfig,
  create: (config, maxPositions, streaming, stage) => new CohereModel(config, maxPositions, streaming, stage),
};
