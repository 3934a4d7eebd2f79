import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, qkNormLayers, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields, layerTypeRopeFields, parseActivation, parseSlidingLayerTypes, parseCommonFields, parseHeadDim, parseHeads, parseRope, parseRopeParameters, ropeParameterFields, type RopeSettings } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import type { PipelineStage } from './pipeline-stage.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';

/*
 * OLMo 2 and OLMo 3 (AI2), and EXAONE 4 (LG), which transformers builds from OLMo 2's layer. Their
 * decoder layer has no pre-norms: the norms sit on the outputs, inside the residual,
 * h += post_attention_norm(attn(h)), then h += post_feedforward_norm(mlp(h)). q and k are
 * RMS-normed before RoPE: OLMo over the whole projection (every head together), EXAONE 4 per head.
 * OLMo 3 adds sliding-window layers (`layer_types`) with a RoPE of their own; EXAONE 4's sliding
 * layers are the only ones that rotate (its full layers are NoPE), unless it has no window.
 */

type OlmoModelType = 'olmo2' | 'olmo3' | 'exaone4';

export interface OlmoConfig extends ModelConfig {
  modelType: OlmoModelType;
  intermediateSize: number;
  activation: Activation;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  maxPositionEmbeddings: number;
  /** q, k, v and o carry a bias (`attention_bias`). */
  attentionBias: boolean;
  /** q and k RMS-normed over the whole projection (OLMo) or per head (EXAONE 4). */
  qkNormOver: 'projection' | 'head';
  /** Each layer's window, or null for a full-attention layer. */
  slidingWindows: (number | null)[];
  /** Whether each layer rotates q and k: false for EXAONE 4's full-attention (NoPE) layers. */
  ropeLayers: boolean[];
  /** RoPE of the full-attention layers (every layer's in OLMo 2). */
  fullRope: RopeSettings;
  /** RoPE of the sliding layers (OLMo 3); null: the full one. */
  slidingRope: RopeSettings | null;
}

const MODEL_TYPES: readonly OlmoModelType[] = ['olmo2', 'olmo3', 'exaone4'];
/** OlmoConfig's defaults, which Olmo2Config, Olmo3Config and Exaone4Config keep. */
const DEFAULTS = { maxPositions: 2048, rmsNormEps: 1e-5 };
/** Olmo3Config's own: default_theta, sliding_window, and a full-attention layer every fourth. */
const OLMO3 = { ropeTheta: 500_000, slidingWindow: 4096, fullEvery: 4 };
/** Exaone4Config's sliding_window and sliding_window_pattern (a full-attention layer every fourth). */
const EXAONE4 = { slidingWindow: 4096, fullEvery: 4 };

function parseOlmoConfig(json: Record<string, unknown>, source: string): OlmoConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as OlmoModelType;
  const common = parseCommonFields(fields, modelType);
  const { numHeads, numKvHeads } = parseHeads(fields);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULTS.maxPositions);
  const { fullRope, slidingRope } = modelType === 'olmo3' ? parseOlmo3Rope(fields, maxPositionEmbeddings) : { fullRope: parseRope(fields, maxPositionEmbeddings), slidingRope: null };
  const layers = modelType === 'exaone4' ? parseExaone4Layers(fields, common.numLayers) : null;
  const slidingWindows = layers?.slidingWindows ?? (modelType === 'olmo3' ? parseOlmo3Windows(fields, common.numLayers) : new Array<null>(common.numLayers).fill(null));
  return {
    ...common,
    modelType,
    contextLength: ropeContextLength({ scaling: fullRope.ropeScaling, maxPositionEmbeddings }),
    intermediateSize: fields.positiveInt('intermediate_size'),
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    numHeads,
    numKvHeads,
    headDim: parseHeadDim(fields, common.hiddenSize, numHeads),
    rmsNormEps: fields.positiveNumber('rms_norm_eps', DEFAULTS.rmsNormEps),
    maxPositionEmbeddings,
    // Exaone4Config has no attention_bias: its projections never carry one.
    attentionBias: modelType !== 'exaone4' && fields.boolean('attention_bias', false),
    qkNormOver: modelType === 'exaone4' ? 'head' : 'projection',
    slidingWindows,
    ropeLayers: layers?.ropeLayers ?? new Array<boolean>(common.numLayers).fill(true),
    fullRope,
    slidingRope,
  };
}

/**
 * `layer_types` ("sliding_attention" / "full_attention" per layer), by default every fourth layer
 * full; a null `sliding_window` makes every layer full.
 */
function parseOlmo3Windows(fields: ConfigFields, numLayers: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', OLMO3.slidingWindow);
  const sliding = parseSlidingLayerTypes(fields, numLayers) ?? Array.from({ length: numLayers }, (_, i) => (i + 1) % OLMO3.fullEvery !== 0);
  return sliding.map((s) => (s ? window : null));
}

/**
 * EXAONE 4's layers (EXAONE MoE's too, whose attention is EXAONE 4's): the windows, and which layers
 * rotate, its sliding layers only (its full layers are NoPE), or every layer when `sliding_window`
 * is null.
 */
export function parseExaone4Layers(fields: ConfigFields, numLayers: number): { slidingWindows: (number | null)[]; ropeLayers: boolean[] } {
  const slidingWindows = parseExaone4Windows(fields, numLayers);
  const noPe = fields.raw('sliding_window') !== null;
  return { slidingWindows, ropeLayers: slidingWindows.map((w) => !noPe || w !== null) };
}

/**
 * EXAONE 4's `layer_types`, by default all but every `sliding_window_pattern`-th layer sliding; a
 * null `sliding_window` makes every layer full. A pattern given as a string ("LLLG") is refused
 * without layer_types, as transformers cannot derive them from it either.
 */
function parseExaone4Windows(fields: ConfigFields, numLayers: number): (number | null)[] {
  const window = fields.optionalPositiveInt('sliding_window', EXAONE4.slidingWindow);
  if (window === null) return new Array<null>(numLayers).fill(null);
  const listed = parseSlidingLayerTypes(fields, numLayers);
  if (listed !== null) return listed.map((s) => (s ? window : null));
  if (typeof fields.raw('sliding_window_pattern') === 'string') {
    throw invalidModel(`${fields.source}: sliding_window_pattern ${JSON.stringify(fields.raw('sliding_window_pattern'))} is a string: give layer_types (transformers derives them from an integer pattern only)`);
  }
  const every = fields.positiveInt('sliding_window_pattern', EXAONE4.fullEvery);
  return Array.from({ length: numLayers }, (_, i) => ((i + 1) % every !== 0 ? window : null));
}

/**
 * OLMo 3's RoPE per layer type, as Olmo3Config builds it: transformers 5's `rope_parameters`
 * entries, or the 4.x `rope_scaling`, which applies to the full-attention layers only. A
 * full-attention entry without rope_theta takes the top-level one, or 5e5; a sliding one always
 * 5e5 (Olmo3Config reads the top-level rope_theta once, for the full layers).
 */
function parseOlmo3Rope(fields: ConfigFields, maxPositionEmbeddings: number): { fullRope: RopeSettings; slidingRope: RopeSettings } {
  const ropes = parseOlmo3RopeByLayerType(fields, maxPositionEmbeddings);
  // transformers grows and resets a dynamic table per layer type with state shared between the
  // types (rotary_emb's attention_scaling, original_max_seq_len), which a config-fuzz variant showed
  // Keel's per-sequence dynamic tables do not reproduce.
  if (ropes.fullRope.ropeScaling.type === 'dynamic' || ropes.slidingRope.ropeScaling.type === 'dynamic') {
    throw invalidModel(`${fields.source}: dynamic RoPE is not supported for olmo3 (its per-layer-type RoPE); use another rope_type`);
  }
  return ropes;
}

function parseOlmo3RopeByLayerType(fields: ConfigFields, maxPositionEmbeddings: number): { fullRope: RopeSettings; slidingRope: RopeSettings } {
  const noTopLevel = new ConfigFields({}, fields.source);
  const perLayerType = layerTypeRopeFields(fields);
  if (perLayerType !== null) {
    const { full, sliding, outer } = perLayerType;
    return {
      fullRope: parseRopeParameters(full, fields, maxPositionEmbeddings, OLMO3.ropeTheta, outer),
      slidingRope: parseRopeParameters(sliding, noTopLevel, maxPositionEmbeddings, OLMO3.ropeTheta, outer),
    };
  }
  if (fields.raw('rope_parameters') != null) {
    // Olmo3Config keeps a flat rope_parameters beside per-layer-type defaults it adds, and its layers read only those.
    throw invalidModel(`${fields.source}: olmo3 reads rope_parameters per layer type ({"full_attention": {...}, "sliding_attention": {...}}); a single RoPE dict is ignored by transformers (give it as rope_scaling, or per layer type)`);
  }
  return {
    fullRope: parseRopeParameters(ropeParameterFields(fields), fields, maxPositionEmbeddings, OLMO3.ropeTheta),
    slidingRope: { ropeTheta: OLMO3.ropeTheta, ropeScaling: { type: 'default' } },
  };
}

/** One OLMo 2 / 3 or EXAONE 4 layer: attention with q/k norms, an MLP, each followed by its norm. */
class OlmoDecoderLayer extends ComposedLayer {
  readonly attention: SelfAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: GatedMlp;
  readonly postFeedforwardNorm: RmsNorm;

  constructor(config: OlmoConfig, index: number, rotary: RotaryEmbedding) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, numHeads, numKvHeads, headDim, rmsNormEps: eps, attentionBias } = config;
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
      ...qkNormLayers({ q: `${p}.self_attn.q_norm.weight`, k: `${p}.self_attn.k_norm.weight` }, config.qkNormOver, config, eps),
      ...projectionNames(`${p}.self_attn`),
      qkvBias: attentionBias,
      oBias: attentionBias,
    });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = new GatedMlp(
      { gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` },
      hiddenSize,
      config.intermediateSize,
      config.activation,
    );
    this.postFeedforwardNorm = new RmsNorm(`${p}.post_feedforward_layernorm.weight`, hiddenSize, eps);
  }

  protected get sublayers(): Layer[] {
    return [this.attention, this.postAttentionNorm, this.mlp, this.postFeedforwardNorm];
  }

  loraTargets(): LoraTarget[] {
    return [...this.attention.loraTargets(), ...this.mlp.loraTargets()];
  }
}

/**
 * The OLMo 2 / 3 decoder. A layer reads the residual stream itself (no pre-norm to fuse the
 * pending add into), so it first adds what the layer before left pending; its MLP's normed
 * output is left pending in turn, for the next layer or the final norm.
 */
export class OlmoModel extends DecoderStack<OlmoConfig, OlmoDecoderLayer> {
  constructor(config: OlmoConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    const rotary = (rope: RopeSettings) =>
      new RotaryEmbedding({ rotaryDim: config.headDim, theta: rope.ropeTheta, scaling: rope.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions, streaming);
    const full = rotary(config.fullRope);
    // Only layers that slide read the sliding table, and only NoPE layers the identity one: a model without them builds none.
    const sliding = config.slidingRope === null || config.slidingWindows.every((w) => w === null) ? full : rotary(config.slidingRope);
    const none = config.ropeLayers.every((r) => r) ? null : rotary({ ropeTheta: config.fullRope.ropeTheta, ropeScaling: { type: 'none' } });
    const tableOf = (i: number) => (!config.ropeLayers[i] && none !== null ? none : config.slidingWindows[i] === null ? full : sliding);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    super(config, {
      rotaries: [full, ...(sliding === full ? [] : [sliding]), ...(none === null ? [] : [none])],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new OlmoDecoderLayer(config, i, tableOf(i))),
      finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  protected layerForward(b: Backend, layer: OlmoDecoderLayer, { residual, pending }: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    if (pending !== null) b.addInto(residual, pending, null);
    b.addInto(residual, layer.postAttentionNorm.forward(b, layer.attention.forward(b, residual, step, cache)), null);
    return layer.postFeedforwardNorm.forward(b, layer.mlp.forward(b, residual, step));
  }
}

export const olmoFamily: ModelFamily<OlmoConfig> = {
  name: 'OLMo',
  modelTypes: MODEL_TYPES,
  parseConfig: parseOlmoConfig,
  create: (config, maxPositions, streaming, stage) => new OlmoModel(config, maxPositions, streaming, stage),
};
