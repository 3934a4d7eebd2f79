import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import type { SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import { ropeContextLength, type RotaryEmbedding } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { CausalLM } from './causal-lm.ts';
import { preNormLayerForward } from './decoder.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { parseMlpLayerTypes } from './moe-fields.ts';
import { ConfigFields, parseActivation, parseCommonFields, parseHeads, parseSlidingLayerTypes } from './hf-config.ts';
import { layerTypeRopeTables, parseLayerTypeRopes, type LayerTypeRope } from './layer-type-rope.ts';
import type { ModelConfig } from './model-config.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import type { FeedForward, PreNormLayer } from './pre-norm-layer.ts';

/** What a decoder of full and sliding layers, each type with its own RoPE, reads of its config. */
export interface LayerTypeDecoderConfig extends ModelConfig {
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  /** Per layer: whether it is a sliding-window layer (`layer_types`). */
  slidingLayers: boolean[];
  /** The RoPE of the full and of the sliding layers (`rope_parameters` per layer type). */
  fullRope: LayerTypeRope;
  slidingRope: LayerTypeRope;
}

/** The keys MiMo-V2-Flash and Laguna read alike: the decoder's, its heads, window, dense MLPs and MoE layers. */
export interface LayerTypeDecoderFields extends LayerTypeDecoderConfig {
  numHeads: number;
  numKvHeads: number;
  /** Query and key head width (`head_dim`). */
  headDim: number;
  /** q/k/v projections carry a bias (`attention_bias`). */
  attentionBias: boolean;
  slidingWindow: number;
  activation: Activation;
  /** Width of the dense layers' MLP. */
  intermediateSize: number;
  /** Per layer: whether its feed-forward is the MoE block (`mlp_layer_types`, by default all but layer 0). */
  sparseLayers: boolean[];
}

/** A config class's defaults for those keys, its RoPE dict per layer type where a config gives none, and its layer types. */
export interface LayerTypeDecoderDefaults {
  maxPositions: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  slidingWindow: number;
  intermediateSize: number;
  rope: Record<'full_attention' | 'sliding_attention', Record<string, unknown>>;
  /** partial_rotary_factor where a RoPE entry of this type leaves it out. */
  partialRotaryDefault: (ropeType: string) => number;
  /** Whether each layer slides where `layer_types` is absent. */
  slidingLayers: (numLayers: number) => boolean[];
}

/**
 * `json` read with a layer-type family's defaults (the class's RoPE per layer type where it gives no
 * rope_parameters: those classes read neither rope_scaling nor a top-level rope_theta); returns the
 * fields read with those defaults, for the family's own keys.
 */
export function parseLayerTypeDecoderFields(json: Record<string, unknown>, source: string, modelType: string, defaults: LayerTypeDecoderDefaults): { fields: ConfigFields; decoder: LayerTypeDecoderFields } {
  const fields = new ConfigFields(json.rope_parameters == null ? { ...json, rope_parameters: defaults.rope } : json, source);
  const common = parseCommonFields(fields, modelType);
  const { numLayers } = common;
  const { numHeads, numKvHeads } = parseHeads(fields, defaults.numKvHeads);
  const headDim = fields.positiveInt('head_dim', defaults.headDim);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', defaults.maxPositions);
  const slidingLayers = parseSlidingLayerTypes(fields, numLayers) ?? defaults.slidingLayers(numLayers);
  const { fullRope, slidingRope } = parseLayerTypeRopes(fields, { headDim, maxPositionEmbeddings, slidingLayers, partialRotaryDefault: defaults.partialRotaryDefault });
  const decoder: LayerTypeDecoderFields = {
    ...common,
    contextLength: ropeContextLength({ scaling: fullRope.ropeScaling, maxPositionEmbeddings }),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', defaults.rmsNormEps),
    maxPositionEmbeddings,
    attentionBias: fields.boolean('attention_bias', false),
    slidingLayers,
    slidingWindow: fields.positiveInt('sliding_window', defaults.slidingWindow),
    fullRope,
    slidingRope,
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    intermediateSize: fields.positiveInt('intermediate_size', defaults.intermediateSize),
    sparseLayers: parseMlpLayerTypes(fields, numLayers, 1),
  };
  return { fields, decoder };
}

/** A pre-norm layer under `model.layers.<index>`: input_layernorm, self_attn, post_attention_layernorm, mlp. */
export class PreNormDecoderLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: FeedForward;

  constructor(index: number, hiddenSize: number, eps: number, attention: SelfAttention, mlp: FeedForward) {
    super();
    this.attention = attention;
    this.mlp = mlp;
    this.inputNorm = new RmsNorm(`model.layers.${index}.input_layernorm.weight`, hiddenSize, eps);
    this.postAttentionNorm = new RmsNorm(`model.layers.${index}.post_attention_layernorm.weight`, hiddenSize, eps);
  }

  get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }
}

/**
 * A pre-norm decoder whose full and sliding layers rotate by RoPE tables of their own (MiMo-V2-Flash,
 * Laguna): the family gives each layer's attention, on the table of its type, and feed-forward.
 */
export class LayerTypeDecoderModel<C extends LayerTypeDecoderConfig> extends DecoderStack<C, PreNormDecoderLayer> {
  constructor(
    config: C,
    maxPositions: number,
    streaming: StreamingWindow | null,
    stage: PipelineStage,
    layer: { attention: (index: number, rotary: RotaryEmbedding) => SelfAttention; mlp: (index: number) => FeedForward },
  ) {
    const { full, sliding } = layerTypeRopeTables(config, maxPositions, streaming);
    const { hiddenSize, rmsNormEps: eps } = config;
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, hiddenSize);
    super(config, {
      rotaries: [full, sliding],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new PreNormDecoderLayer(i, hiddenSize, eps, layer.attention(i, config.slidingLayers[i] ? sliding : full), layer.mlp(i))),
      finalNorm: new RmsNorm('model.norm.weight', hiddenSize, eps),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  override get tapsLayerInputs(): boolean {
    return true;
  }

  protected layerForward(b: Backend, layer: PreNormDecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }

  earlyExit(numLayers: number): CausalLM {
    return this.earlyExitAfter(numLayers);
  }
}
