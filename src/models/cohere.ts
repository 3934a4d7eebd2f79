import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { BiaslessLayerNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { HiddenStateTap, ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields, parseActivation, parseCommonFields, parseHeadDim, parseHeads, parseRope, parseSlidingLayerTypes, type RopeSettings } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/*
 * Cohere's Command-R (cohere) and Command-A / R7B (cohere2). A layer is parallel: one LayerNorm
 * (no bias) feeds both attention and the MLP, h = x + attn(ln(x)) + mlp(ln(x)). RoPE pairs each
 * head's dims as (x[2i], x[2i+1]); the logits are multiplied by `logit_scale`; the LM head is tied
 * by default. Command-R+ norms q and k with a LayerNorm per head, each head its own weights
 * (`use_qk_norm`). Cohere 2 mixes sliding-window layers, which rotate, with full-attention layers,
 * which do not (NoPE).
 */

type CohereModelType = 'cohere' | 'cohere2';

export interface CohereConfig extends ModelConfig {
  modelType: CohereModelType;
  intermediateSize: number;
  activation: Activation;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  layerNormEps: number;
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
}

const MODEL_TYPES: readonly CohereModelType[] = ['cohere', 'cohere2'];
/** CohereConfig's and Cohere2Config's defaults; only Cohere's class sets a rope_theta default of its own. */
const DEFAULTS = { maxPositions: 8192, layerNormEps: 1e-5, logitScale: 0.0625, cohereRopeTheta: 500_000 };
/** Cohere2Config's sliding_window and sliding_window_pattern (a full-attention layer every fourth). */
const COHERE2 = { slidingWindow: 4096, fullEvery: 4 };

function parseCohereConfig(json: Record<string, unknown>, source: string): CohereConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as CohereModelType;
  const common = parseCommonFields(fields, modelType);
  const { numHeads, numKvHeads } = parseHeads(fields);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULTS.maxPositions);
  const rope = parseRope(fields, maxPositionEmbeddings, modelType === 'cohere' ? { defaultTheta: DEFAULTS.cohereRopeTheta } : {});
  const slidingWindows = modelType === 'cohere' ? new Array<null>(common.numLayers).fill(null) : parseCohere2Windows(fields, common.numLayers);
  // Cohere2Config has no use_qk_norm: its attention never norms q and k.
  const qkNorm = modelType === 'cohere' && fields.boolean('use_qk_norm', false);
  return {
    ...common,
    modelType,
    tieWordEmbeddings: fields.boolean('tie_word_embeddings', true),
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings }),
    intermediateSize: fields.positiveInt('intermediate_size'),
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    numHeads,
    numKvHeads,
    headDim: parseHeadDim(fields, common.hiddenSize, numHeads),
    layerNormEps: fields.positiveNumber('layer_norm_eps', DEFAULTS.layerNormEps),
    maxPositionEmbeddings,
    rope,
    attentionBias: fields.boolean('attention_bias', false),
    qkNorm,
    logitScale: parseLogitScale(fields),
    slidingWindows,
    ropeLayers: slidingWindows.map((w) => modelType === 'cohere' || w !== null),
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
 * Cohere 2's `layer_types`, by default all but every `sliding_window_pattern`-th layer sliding. A
 * null `sliding_window` is refused: transformers builds a sliding-window mask for every model and
 * fails without one.
 */
function parseCohere2Windows(fields: ConfigFields, numLayers: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', COHERE2.slidingWindow);
  if (window === null) throw invalidModel(`${fields.source}: sliding_window is null: cohere2 needs a window for its sliding layers (transformers fails without one)`);
  const listed = parseSlidingLayerTypes(fields, numLayers);
  if (listed !== null) return listed.map((s) => (s ? window : null));
  const every = fields.positiveInt('sliding_window_pattern', COHERE2.fullEvery);
  return Array.from({ length: numLayers }, (_, i) => ((i + 1) % every !== 0 ? window : null));
}

/** One parallel layer: an input LayerNorm, then attention and the MLP side by side on its output. */
class CohereDecoderLayer extends ComposedLayer {
  readonly inputNorm: BiaslessLayerNorm;
  readonly attention: SelfAttention;
  readonly mlp: GatedMlp;

  constructor(config: CohereConfig, index: number, rotary: RotaryEmbedding) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, layerNormEps: eps, attentionBias } = config;
    this.inputNorm = new BiaslessLayerNorm(`${p}.input_layernorm.weight`, [hiddenSize], eps);
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
    this.mlp = new GatedMlp(
      { gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` },
      hiddenSize,
      config.intermediateSize,
      config.activation,
    );
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.mlp];
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...this.mlp.loraTargets()];
  }
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
      finalNorm: new BiaslessLayerNorm('model.norm.weight', [config.hiddenSize], config.layerNormEps),
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
