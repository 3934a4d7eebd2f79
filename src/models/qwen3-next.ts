import type { Activation, Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidModel } from '../errors.ts';
import { projectionNames, SelfAttention } from '../layers/attention.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedDeltaNet, type DeltaNetProjections } from '../layers/gated-deltanet.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength, type RopeScaling } from '../layers/rotary.ts';
import type { StreamingWindow } from '../step/kv-cache-layout.ts';
import type { ModelFamily } from './causal-lm.ts';
import { preNormLayerForward } from './decoder.ts';
import type { FeedForward, PreNormLayer } from './pre-norm-layer.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields, isObject, parseActivation, parseCommonFields, parseHeadDim, parseHeads, parseRopeParameters, ropeParameterFields } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import type { MtpLayers } from './mtp-head.ts';
import { parseExpertsPerToken, parseQwenSparseLayers } from './moe-fields.ts';
import { qwenMlp, type QwenFeedForwardConfig } from './qwen-moe.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/*
 * The hybrid Qwen decoders: Qwen3-Next (`qwen3_next`) and Qwen3.5's language model
 * (`qwen3_5_text`, `qwen3_5_moe_text`, and inside the vision-language `qwen3_5` / `qwen3_5_moe`).
 * Of every `full_attention_interval` layers (4), all but the last are Gated DeltaNet (linear
 * attention with a recurrent state per sequence, layers/gated-deltanet.ts) and the last is full
 * attention whose query projection also yields an output gate (σ(gate) times the attention
 * output), with zero-centred q/k norms and partial rotary. Every RMSNorm but the DeltaNet's
 * output norm multiplies by (1 + w), as Gemma's. The feed-forward is a dense gated MLP (Qwen3.5)
 * or a softmax top-k MoE with a sigmoid-gated shared expert (Qwen3-Next, Qwen3.5-MoE).
 * Qwen3-Next stores its DeltaNet input projections grouped by key head, Qwen3.5 one tensor each.
 */

type HybridModelType = 'qwen3_next' | 'qwen3_5_text' | 'qwen3_5_moe_text';
const MODEL_TYPES: readonly HybridModelType[] = ['qwen3_next', 'qwen3_5_text', 'qwen3_5_moe_text'];

/** The MoE blocks' settings (as qwen-moe.ts reads them), where the model has experts. */
export type HybridMoeConfig = Pick<QwenFeedForwardConfig, 'moeIntermediateSize' | 'numExperts' | 'numExpertsPerToken' | 'normTopkProb'> & { sharedExpertIntermediateSize: number };

export interface QwenHybridConfig extends ModelConfig {
  modelType: HybridModelType;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  /** Leading dims of each head that rotate (`partial_rotary_factor`, default 0.25). */
  rotaryDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  attentionBias: boolean;
  activation: Activation;
  /** Per layer: Gated DeltaNet (`linear_attention`) or full attention (`full_attention`). */
  linearLayers: boolean[];
  deltaNet: { numKeyHeads: number; numValueHeads: number; keyDim: number; valueDim: number; convKernel: number; projections: DeltaNetProjections };
  /** The dense MLP's width (`intermediate_size`); null where every layer is a MoE block (Qwen3.5-MoE). */
  intermediateSize: number | null;
  /** The MoE blocks' settings, or null for a dense model. */
  moe: HybridMoeConfig | null;
  /** Per layer: a MoE block (true) or the dense MLP. */
  sparseLayers: boolean[];
  /**
   * The multi-token prediction layers stored under `mtp.` (`mtp_num_hidden_layers`, a key the
   * Hub's configs carry and transformers' classes do not read; 0 without it), and whether they
   * would embed with an embedding of their own (`mtp_use_dedicated_embeddings`).
   */
  mtp: { numLayers: number; dedicatedEmbeddings: boolean };
}

const DEFAULT_MAX_POSITIONS = 32768;
const DEFAULT_HEAD_DIM = 256;
const DEFAULT_PARTIAL_ROTARY = 0.25;

function parseHybridConfig(json: Record<string, unknown>, source: string): QwenHybridConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as HybridModelType;
  const common = parseCommonFields(fields, modelType);
  const { numHeads, numKvHeads } = parseHeads(fields);
  const headDim = parseHeadDim(fields, common.hiddenSize, numHeads, DEFAULT_HEAD_DIM);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', DEFAULT_MAX_POSITIONS);
  const { rotaryDim, ropeTheta, ropeScaling } = parseHybridRope(fields, modelType, headDim, maxPositionEmbeddings);
  const activation = parseActivation(fields, 'hidden_act', 'silu');
  // The DeltaNet's convolution runs hidden_act too, which Keel's op fixes to silu (as the Hub's models have it).
  if (activation.kind !== 'silu') throw invalidModel(`${source}: hidden_act ${JSON.stringify(fields.raw('hidden_act'))} is not supported for ${modelType} (its Gated DeltaNet convolution runs silu)`);
  const deltaNet = {
    numKeyHeads: fields.positiveInt('linear_num_key_heads', 16),
    numValueHeads: fields.positiveInt('linear_num_value_heads', 32),
    keyDim: fields.positiveInt('linear_key_head_dim', 128),
    valueDim: fields.positiveInt('linear_value_head_dim', 128),
    convKernel: fields.positiveInt('linear_conv_kernel_dim', 4),
    projections: (modelType === 'qwen3_next' ? 'grouped' : 'separate') as DeltaNetProjections,
  };
  if (deltaNet.numValueHeads % deltaNet.numKeyHeads !== 0) {
    throw invalidModel(`${source}: linear_num_value_heads (${deltaNet.numValueHeads}) must be a multiple of linear_num_key_heads (${deltaNet.numKeyHeads})`);
  }
  const linearLayers = parseLayerTypes(fields, common.numLayers);
  const moe = parseMoe(fields, modelType);
  return {
    ...common,
    modelType,
    contextLength: ropeContextLength({ scaling: ropeScaling, maxPositionEmbeddings }),
    numHeads,
    numKvHeads,
    headDim,
    rotaryDim,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-6),
    ropeTheta,
    ropeScaling,
    maxPositionEmbeddings,
    attentionBias: fields.boolean('attention_bias', false),
    activation,
    linearLayers,
    deltaNet,
    intermediateSize: modelType === 'qwen3_5_moe_text' ? null : fields.positiveInt('intermediate_size'),
    moe,
    sparseLayers: parseSparseLayers(fields, modelType, moe, common.numLayers),
    mtp: { numLayers: fields.nonNegativeInt('mtp_num_hidden_layers', 0), dedicatedEmbeddings: fields.boolean('mtp_use_dedicated_embeddings', false) },
  };
}

/**
 * `layer_types` ("linear_attention" / "full_attention"), or as transformers derives it: every
 * `full_attention_interval`-th layer (default 4) full, the others linear.
 */
function parseLayerTypes(fields: ConfigFields, numLayers: number): boolean[] {
  const types = fields.raw('layer_types');
  if (types == null) {
    const interval = fields.positiveInt('full_attention_interval', 4);
    return Array.from({ length: numLayers }, (_, i) => (i + 1) % interval !== 0);
  }
  if (!Array.isArray(types) || types.length !== numLayers || !types.every((t) => t === 'linear_attention' || t === 'full_attention')) {
    throw invalidModel(`${fields.source}: layer_types must list "linear_attention" or "full_attention" for each of the ${numLayers} layers (got ${JSON.stringify(types)})`);
  }
  return types.map((t) => t === 'linear_attention');
}

/**
 * RoPE over the leading `partial_rotary_factor` of each head. Qwen3.5's text rotary is
 * multimodal (mRoPE: `mrope_section` splits the frequencies among temporal, height and width
 * position ids, interleaved or not): for a text prompt the three ids are the token's position, so
 * every section reads the same frequencies at the same position and the table is plain RoPE with
 * the same inverse frequencies. Keel serves text prompts only, so that is what it builds.
 */
function parseHybridRope(fields: ConfigFields, modelType: HybridModelType, headDim: number, maxPositionEmbeddings: number): { rotaryDim: number; ropeTheta: number; ropeScaling: RopeScaling } {
  const params = ropeParameterFields(fields);
  if (params.values().some(isObject)) throw invalidModel(`${params.source}: per-layer-type RoPE parameters are not supported for ${modelType}`);
  const partial = params.raw('partial_rotary_factor') != null ? params.positiveNumber('partial_rotary_factor') : fields.positiveNumber('partial_rotary_factor', DEFAULT_PARTIAL_ROTARY);
  const rotaryDim = Math.floor(headDim * partial);
  if (partial > 1 || rotaryDim % 2 !== 0 || rotaryDim === 0) {
    throw invalidModel(`${fields.source}: partial_rotary_factor ${partial} gives ${rotaryDim} rotary dims of head_dim ${headDim}; Keel needs an even number, at most the head`);
  }
  // "mrope" is Qwen2-VL's name for the default frequencies split into sections.
  const plain = params.raw('rope_type') === 'mrope' ? new ConfigFields({ rope_theta: params.raw('rope_theta'), rope_type: 'default' }, params.source) : params;
  return { rotaryDim, ...parseRopeParameters(plain, fields, maxPositionEmbeddings, 10000) };
}

function parseMoe(fields: ConfigFields, modelType: HybridModelType): HybridMoeConfig | null {
  if (modelType === 'qwen3_5_text') return null;
  // Qwen3NextConfig defaults num_experts to 512; 0 makes every layer dense.
  const numExperts = fields.nonNegativeInt('num_experts', modelType === 'qwen3_next' ? 512 : 0);
  if (numExperts === 0) {
    if (modelType === 'qwen3_5_moe_text') throw invalidModel(`${fields.source}: qwen3_5_moe_text needs num_experts`);
    return null;
  }
  return {
    moeIntermediateSize: fields.positiveInt('moe_intermediate_size'),
    numExperts,
    numExpertsPerToken: parseExpertsPerToken(fields, numExperts),
    // Qwen3.5-MoE's router always renormalizes its top k.
    normTopkProb: modelType === 'qwen3_5_moe_text' ? true : fields.boolean('norm_topk_prob', true),
    sharedExpertIntermediateSize: fields.positiveInt('shared_expert_intermediate_size'),
  };
}

/** Qwen3-Next: Qwen's sparse-layer rule (mlp_only_layers, decoder_sparse_step); Qwen3.5-MoE: every layer. */
function parseSparseLayers(fields: ConfigFields, modelType: HybridModelType, moe: HybridMoeConfig | null, numLayers: number): boolean[] {
  if (moe === null) return new Array<boolean>(numLayers).fill(false);
  return modelType === 'qwen3_5_moe_text' ? new Array<boolean>(numLayers).fill(true) : parseQwenSparseLayers(fields, numLayers);
}

/** The feed-forward at prefix `p`: a dense gated MLP, or (`sparse`) Qwen's MoE block with its sigmoid-gated shared expert. */
function hybridMlp(config: QwenHybridConfig, p: string, sparse: boolean): FeedForward {
  const { moe, hiddenSize, intermediateSize, activation } = config;
  if (moe !== null) return qwenMlp({ ...config, ...moe }, p, sparse);
  return new GatedMlp({ gate: `${p}.gate_proj.weight`, up: `${p}.up_proj.weight`, down: `${p}.down_proj.weight` }, hiddenSize, intermediateSize!, activation);
}

/**
 * Where a layer's tensors are (`model.layers.N`, or `mtp.layers.0` for the MTP layer), which
 * layer of its cache it keeps its K/V or state in, and its kinds of mixer and feed-forward.
 */
interface HybridLayerPlace {
  prefix: string;
  cacheLayer: number;
  linear: boolean;
  sparse: boolean;
}

/** The decoder's layer `index`. */
const decoderLayerPlace = (config: QwenHybridConfig, index: number): HybridLayerPlace => ({
  prefix: `model.layers.${index}`,
  cacheLayer: index,
  linear: config.linearLayers[index],
  sparse: config.sparseLayers[index],
});

/** One layer: h += mixer(inputNorm(h)); h += mlp(postAttentionNorm(h)), the mixer Gated DeltaNet or gated full attention. */
class HybridLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: SelfAttention | GatedDeltaNet;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: FeedForward;

  constructor(config: QwenHybridConfig, place: HybridLayerPlace, rotary: RotaryEmbedding) {
    super();
    const { prefix: p, cacheLayer } = place;
    const { hiddenSize, numHeads, numKvHeads, headDim, rmsNormEps: eps } = config;
    const zeroCentred = (name: string, size: number) => new RmsNorm(name, size, eps, { offset: 1 });
    this.inputNorm = zeroCentred(`${p}.input_layernorm.weight`, hiddenSize);
    this.attention = place.linear
      ? new GatedDeltaNet({ layer: cacheLayer, prefix: `${p}.linear_attn`, hiddenSize, eps, ...config.deltaNet })
      : new SelfAttention({
          layer: cacheLayer,
          hiddenSize,
          numHeads,
          numKvHeads,
          headDim,
          scale: headDim ** -0.5,
          slidingWindow: null,
          softcap: null,
          sinks: null,
          rotary,
          qkNorm: { q: zeroCentred(`${p}.self_attn.q_norm.weight`, headDim), k: zeroCentred(`${p}.self_attn.k_norm.weight`, headDim) },
          ...projectionNames(`${p}.self_attn`),
          qkvBias: config.attentionBias,
          oBias: config.attentionBias,
          outputGate: true,
        });
    this.postAttentionNorm = zeroCentred(`${p}.post_attention_layernorm.weight`, hiddenSize);
    this.mlp = hybridMlp(config, `${p}.mlp`, place.sparse);
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  loraTargets(): LoraTarget[] {
    return [];
  }
}

/** The hybrid decoder: embedding, hybrid layers, zero-centred final norm, LM head. */
export class QwenHybridModel extends DecoderStack<QwenHybridConfig, HybridLayer> {
  constructor(config: QwenHybridConfig, maxPositions: number, streaming: StreamingWindow | null, stage: PipelineStage) {
    const rotary = hybridRotary(config, maxPositions, streaming);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    super(
      config,
      {
        rotaries: [rotary],
        embedding,
        layers: Array.from({ length: config.numLayers }, (_, i) => new HybridLayer(config, decoderLayerPlace(config, i), rotary)),
        finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps, { offset: 1 }),
        lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
      },
      stage,
    );
  }

  protected layerForward(b: Backend, layer: HybridLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }
}

function hybridRotary(config: QwenHybridConfig, maxPositions: number, streaming: StreamingWindow | null): RotaryEmbedding {
  const rope = { rotaryDim: config.rotaryDim, theta: config.ropeTheta, scaling: config.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings };
  return new RotaryEmbedding(rope, maxPositions, streaming);
}

/**
 * The MTP layers (`mtp.*`, as vLLM's and SGLang's Qwen3-Next and Qwen3.5 MTP modules read them):
 * `mtp.layers.0` is one gated full-attention layer of the family, its feed-forward chosen by the
 * sparse-layer rule at index 0 (vLLM's: the layer's index within `mtp.layers`), which makes it a
 * MoE block on the MoE models; its tensors around the block are the `target-head` layout.
 */
function hybridMtpLayers(config: QwenHybridConfig): MtpLayers {
  if (config.mtp.dedicatedEmbeddings) {
    throw invalidModel(`mtp_use_dedicated_embeddings is true for ${config.modelType}: Keel's MTP head embeds with the target's embedding, as the Hub's checkpoints do (false)`);
  }
  return {
    count: config.mtp.numLayers,
    countKey: 'mtp_num_hidden_layers',
    layout: { kind: 'target-head', prefix: 'mtp' },
    rmsNormEps: config.rmsNormEps,
    block: (maxPositions) => {
      const rotary = hybridRotary(config, maxPositions, null);
      const place = { prefix: 'mtp.layers.0', cacheLayer: 0, linear: false, sparse: config.sparseLayers[0] };
      return { rotary, block: new HybridLayer(config, place, rotary) };
    },
  };
}

export const qwenHybridFamily: ModelFamily<QwenHybridConfig> = {
  name: 'Qwen3-Next / Qwen3.5 (hybrid Gated DeltaNet)',
  modelTypes: MODEL_TYPES,
  parseConfig: parseHybridConfig,
  create: (config, maxPositions, streaming, stage) => new QwenHybridModel(config, maxPositions, streaming, stage),
  mtp: { modelTypes: MODEL_TYPES, layers: hybridMtpLayers },
};
