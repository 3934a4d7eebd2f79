import type { Activation, Backend, KvCache, QueryTemperature, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidArgument, invalidModel } from '../errors.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import type { GatedMlp } from '../layers/gated-mlp.ts';
import { LightningIndexer, SelectionRelay } from '../layers/lightning-indexer.ts';
import { MlaAttention } from '../layers/mla-attention.ts';
import type { MoeBlock } from '../layers/moe.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength, type RopeScaling } from '../layers/rotary.ts';
import type { CausalLM, ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields, isObject, parseActivation, parseCommonFields, parseRope, ropeParameterFields } from './hf-config.ts';
import { parseLlama4ScalingTemperature } from './llama.ts';
import type { ModelConfig } from './model-config.ts';
import { deepseekMlp, parseDeepseekMoe, type DeepseekMoeConfig } from './deepseek-moe.ts';
import { parseMlpLayerTypes } from './moe-fields.ts';
import { preNormLayerForward } from './decoder.ts';
import type { PreNormLayer } from './pre-norm-layer.ts';
import type { MtpLayers } from './mtp-head.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/**
 * DeepSeek-V2, -V3 and -V3.2: multi-head latent attention (V3.2's sparse, through its lightning
 * indexer), and mixture-of-experts layers after the first dense ones. Z.ai's MLA models are the
 * same architecture under other names and defaults: GLM-4.7-Flash (`glm4_moe_lite`) is V3, GLM-5
 * (`glm_moe_dsa`) V3.2 with an indexer rotating interleaved pairs and layers that reuse the
 * previous indexer's choice. Mistral Small 4 (`mistral4`) is V3's MLA with Llama 4's query
 * temperature, a softmax router over groups and fused expert tensors. Tencent's Youtu-LLM (`youtu`)
 * is V3's attention over a dense MLP in every layer (YoutuConfig reads none of the MoE keys nor MTP
 * layers), tied by default.
 */
export interface DeepseekConfig extends ModelConfig {
  numHeads: number;
  /** The MLPs' and experts' activation: `hidden_act`. */
  activation: Activation;
  /** q_lora_rank: queries through q_a_proj, q_a_layernorm and q_b_proj; null for one q_proj. */
  queryRank: number | null;
  /** kv_lora_rank: the cached latent's width. */
  latentDim: number;
  /** qk_nope_head_dim, qk_rope_head_dim, v_head_dim. */
  nopeDim: number;
  ropeDim: number;
  valueDim: number;
  /** qk_head_dim^-0.5, times YaRN's mscale(factor, mscale_all_dim)² when the config sets mscale_all_dim. */
  attentionScale: number;
  /** Mistral 4's query scale by position after RoPE (the RoPE dict's llama_4_scaling_beta); null for the others. */
  queryTemperature: QueryTemperature | null;
  /** The checkpoint's rotary dims pair as (x[2i], x[2i+1]): always in V2, V3's `rope_interleave` (default true). */
  interleavedRope: boolean;
  /** attention_bias: q_a_proj, kv_a_proj_with_mqa and o_proj carry biases. */
  attentionBias: boolean;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling: RopeScaling;
  maxPositionEmbeddings: number;
  /** Width of the dense layers' MLP. */
  intermediateSize: number;
  /** Per layer, the MTP layers after the decoder's included: whether its feed-forward is the MoE block. */
  sparseLayers: boolean[];
  /** The MoE layers' block; null for a model without any (Youtu). */
  moe: DeepseekMoeConfig | null;
  /** The multi-token prediction layers stored after the decoder's (`num_nextn_predict_layers`: DeepSeek-V3's, GLM-4.7-Flash's, GLM-5's). */
  numNextnPredictLayers: number;
  /** DeepSeek-V3.2's sparse attention (every layer's MLA through a lightning indexer); null for V2 and V3. */
  sparseAttention: DeepseekSparseAttention | null;
}

/** DeepSeek Sparse Attention's indexer: index_n_heads queries of index_head_dim, index_topk positions kept. */
export interface DeepseekSparseAttention {
  numHeads: number;
  headDim: number;
  topK: number;
  /** The indexer's rotary dims pair as (x[2i], x[2i+1]) (GLM-5), rather than rotate_half's (V3.2). */
  interleavedRope: boolean;
  /**
   * Per decoder layer: whether it runs its own indexer (`full`), or attends to the positions the
   * latest full layer before it chose (`shared`, GLM-5's `indexer_types`). MTP layers run their own.
   */
  sharedLayers: boolean[];
}

type DeepseekModelType = 'deepseek_v2' | 'deepseek_v3' | 'deepseek_v32' | 'glm4_moe_lite' | 'glm_moe_dsa' | 'mistral4' | 'youtu';
const MODEL_TYPES: readonly DeepseekModelType[] = ['deepseek_v2', 'deepseek_v3', 'deepseek_v32', 'glm4_moe_lite', 'glm_moe_dsa', 'mistral4', 'youtu'];
/** The model types whose every layer attends sparsely, through DeepSeek Sparse Attention's indexer. */
const SPARSE_TYPES: readonly DeepseekModelType[] = ['deepseek_v32', 'glm_moe_dsa'];

/**
 * transformers' DeepseekV2Config / DeepseekV3Config / DeepseekV32Config / Glm4MoeLiteConfig /
 * GlmMoeDsaConfig / Mistral4Config defaults for keys a config.json may leave out. `firstDense` is
 * first_k_dense_replace's default; `topK` num_experts_per_tok's, where the class has one; Glm4MoeLiteConfig has no such key (its default layer pattern
 * makes layer 0 alone dense). `nextnLayers` is num_nextn_predict_layers' (DeepseekV3Config's
 * num_mtp_layers, 1 since transformers 5.18; the other classes have no such key). YoutuConfig has
 * no MoE keys (their entries go unread) and defaults intermediate_size (`intermediateSize`) and
 * tie_word_embeddings (`tied`).
 */
const DEFAULTS: Record<
  DeepseekModelType,
  {
    maxPositions: number; queryRank: number; latentDim: number; nopeDim: number; valueDim: number; rmsNormEps: number; firstDense: number;
    numExperts: number; expertWidth: number; sharedExperts: number; routedScale: number; groups: number; topkGroups: number; topK?: number; indexHeads: number;
    nextnLayers: number; intermediateSize?: number; tied?: boolean;
  }
> = {
  deepseek_v2: { maxPositions: 2048, queryRank: 1536, latentDim: 512, nopeDim: 128, valueDim: 128, rmsNormEps: 1e-6, firstDense: 0, numExperts: 64, expertWidth: 1407, sharedExperts: 2, routedScale: 1, groups: 8, topkGroups: 4, indexHeads: 0, nextnLayers: 0 },
  deepseek_v3: { maxPositions: 4096, queryRank: 1536, latentDim: 512, nopeDim: 128, valueDim: 128, rmsNormEps: 1e-6, firstDense: 3, numExperts: 256, expertWidth: 2048, sharedExperts: 1, routedScale: 2.5, groups: 8, topkGroups: 4, indexHeads: 0, nextnLayers: 1 },
  deepseek_v32: { maxPositions: 163840, queryRank: 1536, latentDim: 512, nopeDim: 128, valueDim: 128, rmsNormEps: 1e-6, firstDense: 3, numExperts: 256, expertWidth: 2048, sharedExperts: 1, routedScale: 2.5, groups: 8, topkGroups: 4, indexHeads: 64, nextnLayers: 0 },
  glm4_moe_lite: { maxPositions: 202752, queryRank: 768, latentDim: 512, nopeDim: 192, valueDim: 256, rmsNormEps: 1e-5, firstDense: 1, numExperts: 64, expertWidth: 1536, sharedExperts: 1, routedScale: 1.8, groups: 1, topkGroups: 1, indexHeads: 0, nextnLayers: 0 },
  glm_moe_dsa: { maxPositions: 202752, queryRank: 2048, latentDim: 512, nopeDim: 192, valueDim: 256, rmsNormEps: 1e-5, firstDense: 3, numExperts: 256, expertWidth: 2048, sharedExperts: 1, routedScale: 2.5, groups: 1, topkGroups: 1, indexHeads: 32, nextnLayers: 0 },
  mistral4: { maxPositions: 1048576, queryRank: 1024, latentDim: 256, nopeDim: 64, valueDim: 128, rmsNormEps: 1e-6, firstDense: 0, numExperts: 128, expertWidth: 2048, sharedExperts: 1, routedScale: 1, groups: 1, topkGroups: 1, topK: 4, indexHeads: 0, nextnLayers: 0 },
  youtu: { maxPositions: 131072, queryRank: 1536, latentDim: 512, nopeDim: 128, valueDim: 128, rmsNormEps: 1e-6, firstDense: 0, numExperts: 0, expertWidth: 0, sharedExperts: 0, routedScale: 1, groups: 1, topkGroups: 1, indexHeads: 0, nextnLayers: 0, intermediateSize: 6144, tied: true },
};
/** q_a_layernorm and kv_a_layernorm keep their class's default epsilon: transformers does not pass rms_norm_eps to them. */
const LATENT_NORM_EPS = 1e-6;

function parseDeepseekConfig(json: Record<string, unknown>, source: string): DeepseekConfig {
  const modelType = json.model_type as DeepseekModelType;
  const fields = new ConfigFields(modelType === 'mistral4' ? withMistral4Rope(json) : json, source);
  const defaults = DEFAULTS[modelType];
  const dense = modelType === 'youtu';
  const common = { ...parseCommonFields(fields, modelType), tieWordEmbeddings: fields.boolean('tie_word_embeddings', defaults.tied ?? false) };
  const numHeads = fields.positiveInt('num_attention_heads');
  // MLA has one shared latent, not kv heads; transformers' repeat_kv would be wrong for any other count.
  const numKvHeads = fields.positiveInt('num_key_value_heads', numHeads);
  if (numKvHeads !== numHeads) throw invalidModel(`${source}: num_key_value_heads (${numKvHeads}) must equal num_attention_heads (${numHeads}) for MLA`);
  if (fields.boolean('mlp_bias', false)) throw invalidModel(`${source}: mlp_bias=true is not supported (Keel's MLP projections carry no bias)`);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', defaults.maxPositions);
  const mistral4 = modelType === 'mistral4';
  // Mistral 4's RoPE dict names its rotary share of the head (checked by checkMistral4Rotary).
  const rope = parseRope(fields, maxPositionEmbeddings, { partialRotary: mistral4 });
  // DeepSeek writes `head_dim` = qk_rope_head_dim (transformers sets it so); it is not a head size and is not read.
  const nopeDim = fields.positiveInt('qk_nope_head_dim', defaults.nopeDim);
  const ropeDim = fields.positiveInt('qk_rope_head_dim', 64);
  if (ropeDim % 2 !== 0) throw invalidModel(`${source}: qk_rope_head_dim must be even for rotary embeddings (got ${ropeDim})`);
  if (mistral4) checkMistral4Rotary(fields, nopeDim, ropeDim, rope.ropeScaling);
  const numLayers = common.numLayers;
  // transformers' Glm4MoeLiteConfig does not read first_k_dense_replace (its layer pattern alone says).
  const firstDense = modelType === 'glm4_moe_lite' ? defaults.firstDense : fields.nonNegativeInt('first_k_dense_replace', defaults.firstDense);
  // Mistral4Config and YoutuConfig have no MTP layers to read.
  const numNextnPredictLayers = mistral4 || dense ? 0 : fields.nonNegativeInt('num_nextn_predict_layers', defaults.nextnLayers);
  const queryRank = fields.optionalPositiveInt('q_lora_rank', defaults.queryRank);
  const sparseAttention = SPARSE_TYPES.includes(modelType) ? parseSparseAttention(fields, modelType, queryRank, ropeDim, numLayers, numNextnPredictLayers) : null;
  // V2/V3: every layer from first_k_dense_replace on, as transformers 5.17 builds them. It does not read
  // moe_layer_freq (DeepSeek's own code does; every released config sets it to 1), and its checkpoints
  // hold experts in every such layer whatever the key says.
  const sparseLayers = dense
    ? new Array<boolean>(numLayers).fill(false)
    : modelType === 'deepseek_v2' || modelType === 'deepseek_v3' || mistral4
    ? Array.from({ length: numLayers + numNextnPredictLayers }, (_, i) => i >= firstDense)
    : parseMlpLayers(fields, numLayers, firstDense, numNextnPredictLayers);
  return {
    ...common,
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings }),
    numHeads,
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    queryRank,
    latentDim: fields.positiveInt('kv_lora_rank', defaults.latentDim),
    nopeDim,
    ropeDim,
    valueDim: fields.positiveInt('v_head_dim', defaults.valueDim),
    attentionScale: (nopeDim + ropeDim) ** -0.5 * softmaxMscale(fields, rope.ropeScaling) ** 2,
    queryTemperature: mistral4 ? parseLlama4ScalingTemperature(fields, rope.ropeScaling) : null,
    // transformers' V2, V3.2 and GLM-5 rotate MLA's rope dims in interleaved pairs whatever rope_interleave says.
    interleavedRope: !['deepseek_v3', 'glm4_moe_lite', 'mistral4', 'youtu'].includes(modelType) || fields.boolean('rope_interleave', true),
    attentionBias: fields.boolean('attention_bias', false),
    rmsNormEps: fields.positiveNumber('rms_norm_eps', defaults.rmsNormEps),
    ...rope,
    maxPositionEmbeddings,
    intermediateSize: fields.positiveInt('intermediate_size', defaults.intermediateSize),
    sparseLayers,
    moe: dense ? null : parseDeepseekMoe(fields, modelType, DEFAULTS[modelType]),
    numNextnPredictLayers,
    sparseAttention,
  };
}

/**
 * Mistral4Config's RoPE where a config.json gives neither rope_parameters nor rope_scaling: YaRN
 * over the rope part of each head, with Llama 4's query temperature.
 */
function withMistral4Rope(json: Record<string, unknown>): Record<string, unknown> {
  if (json.rope_parameters != null || json.rope_scaling != null) return json;
  const nope = typeof json.qk_nope_head_dim === 'number' ? json.qk_nope_head_dim : DEFAULTS.mistral4.nopeDim;
  const rope = typeof json.qk_rope_head_dim === 'number' ? json.qk_rope_head_dim : 64;
  return {
    ...json,
    rope_parameters: {
      rope_type: 'yarn', rope_theta: 10000, factor: 128, original_max_position_embeddings: 8192, beta_fast: 32, beta_slow: 1,
      mscale_all_dim: 1, mscale: 1, llama_4_scaling_beta: 0.1, partial_rotary_factor: rope / (nope + rope),
    },
  };
}

/**
 * Mistral4RotaryEmbedding builds its table over head_dim = qk_nope_head_dim + qk_rope_head_dim
 * for default RoPE, and over int(head_dim × partial_rotary_factor) dims for the scaled types (the
 * RoPE dict's factor; rope/head_dim where rope_parameters leave it out, 1 for a 4.x rope_scaling).
 * Only a table as wide as the rope part fits the rotation transformers applies to it.
 */
function checkMistral4Rotary(fields: ConfigFields, nopeDim: number, ropeDim: number, scaling: RopeScaling): void {
  const headDim = nopeDim + ropeDim;
  const params = ropeParameterFields(fields);
  const partial = params.raw('partial_rotary_factor') != null
    ? params.positiveNumber('partial_rotary_factor')
    : fields.raw('rope_parameters') != null ? ropeDim / headDim : 1;
  const rotaryDim = scaling.type === 'default' ? headDim : Math.trunc(headDim * partial);
  if (rotaryDim !== ropeDim) {
    throw invalidModel(`${fields.source}: mistral4's rotary table covers ${rotaryDim} dims (head_dim ${headDim}${scaling.type === 'default' ? ', as default RoPE always does' : ` × partial_rotary_factor ${partial}`}), not the qk_rope_head_dim ${ropeDim} it rotates`);
  }
}

const SPARSE_LAYER_TYPES: readonly unknown[] = ['indexed_attention', 'deepseek_sparse_attention'];

/**
 * DeepSeek-V3.2's and GLM-5's indexer keys (transformers' DeepseekV32Config, GlmMoeDsaConfig):
 * index_n_heads (64; GLM-5 32), index_head_dim (128), index_topk (2048). Its queries come from the
 * query latent, so q_lora_rank is required, and its leading qk_rope_head_dim dims are rotated, so
 * they must fit in a head. Every layer is sparse: `layer_types`, if given, may only say so, in
 * either spelling transformers has written (5.17 "deepseek_sparse_attention", 5.18 "indexed_attention").
 */
function parseSparseAttention(
  fields: ConfigFields,
  modelType: DeepseekModelType,
  queryRank: number | null,
  ropeDim: number,
  numLayers: number,
  numNextnPredictLayers: number,
): DeepseekSparseAttention {
  const { source } = fields;
  if (queryRank === null) throw invalidModel(`${source}: ${modelType} needs q_lora_rank (its lightning indexer projects queries from the query latent), not null`);
  const headDim = fields.positiveInt('index_head_dim', 128);
  if (headDim < ropeDim) throw invalidModel(`${source}: index_head_dim (${headDim}) is smaller than qk_rope_head_dim (${ropeDim}), which the indexer rotates`);
  const layerTypes = fields.raw('layer_types');
  if (layerTypes != null && !(Array.isArray(layerTypes) && layerTypes.every((t) => SPARSE_LAYER_TYPES.includes(t)))) {
    throw invalidModel(`${source}: layer_types ${JSON.stringify(layerTypes)} is not supported for ${modelType} (every layer is "indexed_attention")`);
  }
  const glm = modelType === 'glm_moe_dsa';
  // transformers' GlmMoeDsaIndexer always rotates interleaved pairs; GLM-5's config says so with a key transformers does not read.
  if (glm && !fields.boolean('indexer_rope_interleave', true)) {
    throw invalidModel(`${source}: indexer_rope_interleave false is not supported for glm_moe_dsa (transformers' GLM-5 indexer rotates interleaved pairs)`);
  }
  const shared = glm ? parseIndexerTypes(fields, numLayers) : new Array<boolean>(numLayers).fill(false);
  return {
    numHeads: fields.positiveInt('index_n_heads', DEFAULTS[modelType].indexHeads),
    headDim,
    topK: fields.positiveInt('index_topk', 2048),
    interleavedRope: glm,
    sharedLayers: [...shared, ...new Array<boolean>(numNextnPredictLayers).fill(false)],
  };
}

/**
 * GLM-5's `indexer_types` ("full" or "shared" per layer), as transformers' GlmMoeDsaConfig derives
 * it when absent: from `index_topk_pattern` (a string of F and S, or a list), else layer i is full
 * when max(i − index_skip_topk_offset + 1, 0) is a multiple of index_topk_freq (defaults 2 and 1:
 * every layer full). A shared layer needs a full one before it. Returns whether each layer is shared.
 */
function parseIndexerTypes(fields: ConfigFields, numLayers: number): boolean[] {
  const { source } = fields;
  const explicit = fields.raw('indexer_types') ?? fields.raw('index_topk_pattern');
  let types: unknown[];
  if (explicit == null) {
    const freq = Math.max(fields.nonNegativeInt('index_topk_freq', 1), 1);
    const offset = fields.nonNegativeInt('index_skip_topk_offset', 2);
    types = Array.from({ length: numLayers }, (_, i) => (Math.max(i - offset + 1, 0) % freq === 0 ? 'full' : 'shared'));
  } else {
    const letters: Record<string, string> = { F: 'full', S: 'shared' };
    types = typeof explicit === 'string' ? [...explicit].map((c) => letters[c] ?? c) : Array.isArray(explicit) ? explicit : [];
  }
  const key = fields.raw('indexer_types') != null ? 'indexer_types' : 'index_topk_pattern';
  if (types.length !== numLayers || !types.every((t) => t === 'full' || t === 'shared')) {
    throw invalidModel(`${source}: ${key} must give "full" or "shared" (F or S) for each of the ${numLayers} layers, not ${JSON.stringify(explicit)}`);
  }
  if (types[0] !== 'full') throw invalidModel(`${source}: ${key} makes layer 0 "shared", but a shared layer reuses the top-k of a full layer before it`);
  return types.map((t) => t === 'shared');
}

/**
 * V3.2's, GLM-4.7-Flash's and GLM-5's feed-forward per layer, as transformers reads it
 * (`parseMlpLayerTypes`); MTP layers are MoE.
 */
function parseMlpLayers(fields: ConfigFields, numLayers: number, firstDense: number, numNextnPredictLayers: number): boolean[] {
  return [...parseMlpLayerTypes(fields, numLayers, firstDense), ...new Array<boolean>(numNextnPredictLayers).fill(true)];
}

/**
 * YaRN's mscale(factor, mscale_all_dim) = 0.1 · mscale_all_dim · ln(factor) + 1 (1 when factor ≤ 1),
 * which DeepSeek applies squared to the softmax scale whenever RoPE is scaled and the rope
 * parameters set a non-zero mscale_all_dim (transformers' `yarn_apply_mscale`); 1 otherwise.
 */
function softmaxMscale(fields: ConfigFields, scaling: RopeScaling): number {
  if (scaling.type === 'default') return 1;
  const key = fields.raw('rope_parameters') != null ? 'rope_parameters' : 'rope_scaling';
  const dict = fields.raw(key);
  const params = new ConfigFields(isObject(dict) ? dict : {}, `${fields.source} ${key}`);
  const mscaleAllDim = params.finiteNumber('mscale_all_dim', 0);
  const factor = 'factor' in scaling ? scaling.factor : 1;
  if (mscaleAllDim === 0 || factor <= 1) return 1;
  return 0.1 * mscaleAllDim * Math.log(factor) + 1;
}

export class DeepseekDecoderLayer extends ComposedLayer implements PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: MlaAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: GatedMlp | MoeBlock;

  /**
   * Layer `index` of the checkpoint, keeping its K/V in layer `cacheLayer` of the cache it runs
   * with (an MTP layer's own cache: 0). `relay` hands a sparse layer's choice of positions to the
   * shared layers after it (GLM-5); null where none share one.
   */
  constructor(config: DeepseekConfig, index: number, rotary: RotaryEmbedding, cacheLayer = index, relay: SelectionRelay | null = null) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, rmsNormEps: eps, sparseAttention, queryRank } = config;
    const shared = sparseAttention?.sharedLayers[index] ?? false;
    this.inputNorm = new RmsNorm(`${p}.input_layernorm.weight`, hiddenSize, eps);
    this.attention = new MlaAttention({
      layer: cacheLayer,
      hiddenSize,
      numHeads: config.numHeads,
      queryRank,
      latentDim: config.latentDim,
      nopeDim: config.nopeDim,
      ropeDim: config.ropeDim,
      valueDim: config.valueDim,
      scale: config.attentionScale,
      queryTemperature: config.queryTemperature,
      normEps: LATENT_NORM_EPS,
      rotary,
      interleavedRope: config.interleavedRope,
      bias: config.attentionBias,
      prefix: `${p}.self_attn`,
      indexer: sparseAttention === null || queryRank === null || shared
        ? null
        : new LightningIndexer({ layer: cacheLayer, hiddenSize, queryRank, ...sparseAttention, rotary, relay, prefix: `${p}.self_attn.indexer` }),
      sharedSelection: shared ? relay : null,
    });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = deepseekMlp(config, `${p}.mlp`, config.sparseLayers[index]);
  }

  get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }
}

/** The rotary table of the latent attention's rope dims. */
function deepseekRotary(config: DeepseekConfig, maxPositions: number): RotaryEmbedding {
  return new RotaryEmbedding({ rotaryDim: config.ropeDim, theta: config.ropeTheta, scaling: config.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings }, maxPositions);
}

/** The DeepSeek decoder: pre-norm layers of MLA and a dense or MoE feed-forward, summed in HF's order. */
export class DeepseekModel extends DecoderStack<DeepseekConfig, DeepseekDecoderLayer> {
  /** Hands each sparse layer's choice of positions to the shared layers after it (GLM-5); null where none share. */
  private readonly relay: SelectionRelay | null;

  constructor(config: DeepseekConfig, maxPositions: number, stage: PipelineStage) {
    const rotary = deepseekRotary(config, maxPositions);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    const relay = config.sparseAttention?.sharedLayers.includes(true) ? new SelectionRelay(config.sparseAttention.topK) : null;
    super(config, {
      rotaries: [rotary],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new DeepseekDecoderLayer(config, i, rotary, i, relay)),
      finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
    this.relay = relay;
  }

  override get tapsLayerInputs(): boolean {
    return true;
  }

  /** Whether decoder layer `index` reuses the latest full layer's choice of positions (GLM-5's shared layers). */
  private isShared(index: number): boolean {
    return this.config.sparseAttention?.sharedLayers[index] ?? false;
  }

  /** A stage ending before a shared layer sends the choice that layer reuses. */
  protected override stageHandoff(step: StepInputs): (b: Backend) => void {
    if (this.relay === null || !this.isShared(this.stage.endLayer)) return super.stageHandoff(step);
    const selection = this.relay.take(step);
    return (b) => b.sendSelectionToStage(selection, this.stage.index + 1);
  }

  protected override receiveHandoff(b: Backend, step: StepInputs): void {
    if (this.relay === null || !this.isShared(this.stage.firstLayer)) return;
    this.relay.publish(step, b.receiveSelectionFromStage(step.batch.numTokens, this.config.sparseAttention!.topK, this.stage.index - 1));
  }

  protected layerForward(b: Backend, layer: DeepseekDecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }

  earlyExit(numLayers: number): CausalLM {
    return this.earlyExitAfter(numLayers);
  }
}

/**
 * The MTP layers: each a DeepSeek decoder layer (MLA, with its own indexer on GLM-5, whose MTP
 * layer is a full one: parseSparseAttention), with the MoE block.
 */
function deepseekMtpLayers(config: DeepseekConfig): MtpLayers {
  return {
    count: config.numNextnPredictLayers,
    countKey: 'num_nextn_predict_layers',
    layout: { kind: 'shared-head', prefix: `model.layers.${config.numLayers}` },
    rmsNormEps: config.rmsNormEps,
    block: (maxPositions) => {
      const rotary = deepseekRotary(config, maxPositions);
      return { rotary, block: new DeepseekDecoderLayer(config, config.numLayers, rotary, 0) };
    },
  };
}

export const deepseekFamily: ModelFamily<DeepseekConfig> = {
  name: 'DeepSeek',
  modelTypes: MODEL_TYPES,
  parseConfig: parseDeepseekConfig,
  create: (config, maxPositions, streaming, stage) => {
    if (streaming !== null) throw invalidArgument('StreamingLLM (--streaming-sinks/--streaming-window) is not supported for multi-head latent attention (DeepSeek) yet');
    return new DeepseekModel(config, maxPositions, stage);
  },
  // V2 has no MTP layers; V3.2's (a full indexer layer as GLM-5's) has no fixture to check it against yet.
  mtp: { modelTypes: ['deepseek_v3', 'glm4_moe_lite', 'glm_moe_dsa'], layers: deepseekMtpLayers },
};
