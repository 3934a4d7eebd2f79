import type { Activation, Backend, KvCache, RoutingParams, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidArgument, invalidModel } from '../errors.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { LightningIndexer } from '../layers/lightning-indexer.ts';
import { MlaAttention } from '../layers/mla-attention.ts';
import { MoeBlock } from '../layers/moe.ts';
import { RmsNorm } from '../layers/norm.ts';
import { loadLayers, parametersOf, type Layer, type ParameterSpec, type WeightSource, type WeightUploader } from '../layers/parameters.ts';
import { RotaryEmbedding, ropeContextLength, type RopeScaling } from '../layers/rotary.ts';
import type { CausalLM, ModelFamily } from './causal-lm.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { ConfigFields, isObject, parseActivation, parseCommonFields, parseRope } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import { parseExpertsPerToken } from './moe-fields.ts';
import { preNormLayerForward, type PreNormLayer } from './decoder.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/**
 * DeepSeek-V2, -V3 and -V3.2: multi-head latent attention (V3.2's sparse, through its lightning
 * indexer), and mixture-of-experts layers after the first dense ones.
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
  /** Per layer: a mixture of experts, or a dense MLP. */
  /** Per layer, the MTP layers after the decoder's included: whether its feed-forward is the MoE block. */
  sparseLayers: boolean[];
  moe: DeepseekMoeConfig;
  /** DeepSeek-V3's multi-token prediction layers, stored after the decoder's (`num_nextn_predict_layers`). */
  numNextnPredictLayers: number;
  /** DeepSeek-V3.2's sparse attention (every layer's MLA through a lightning indexer); null for V2 and V3. */
  sparseAttention: DeepseekSparseAttention | null;
}

/** DeepSeek Sparse Attention's indexer: index_n_heads queries of index_head_dim, index_topk positions kept. */
export interface DeepseekSparseAttention {
  numHeads: number;
  headDim: number;
  topK: number;
}

/** The mixture-of-experts layers: routed experts chosen per token, shared experts every token runs through. */
export interface DeepseekMoeConfig {
  numExperts: number;
  numExpertsPerToken: number;
  /** Each routed expert's width (moe_intermediate_size). */
  expertIntermediateSize: number;
  /** The shared experts as one MLP: moe_intermediate_size × n_shared_experts wide; 0 for none. */
  sharedIntermediateSize: number;
  /** The router's rule; `selectionBias` says whether the checkpoint holds V3's e_score_correction_bias. */
  routing: Omit<RoutingParams, 'selectionBias'> & { selectionBias: boolean };
}

type DeepseekModelType = 'deepseek_v2' | 'deepseek_v3' | 'deepseek_v32';
const MODEL_TYPES: readonly DeepseekModelType[] = ['deepseek_v2', 'deepseek_v3', 'deepseek_v32'];

/** transformers' DeepseekV2Config / DeepseekV3Config / DeepseekV32Config defaults for keys a config.json may leave out. */
const DEFAULTS: Record<
  DeepseekModelType,
  { maxPositions: number; queryRank: number; firstDense: number; numExperts: number; expertWidth: number; sharedExperts: number; routedScale: number }
> = {
  deepseek_v2: { maxPositions: 2048, queryRank: 1536, firstDense: 0, numExperts: 64, expertWidth: 1407, sharedExperts: 2, routedScale: 1 },
  deepseek_v3: { maxPositions: 4096, queryRank: 1536, firstDense: 3, numExperts: 256, expertWidth: 2048, sharedExperts: 1, routedScale: 2.5 },
  deepseek_v32: { maxPositions: 163840, queryRank: 1536, firstDense: 3, numExperts: 256, expertWidth: 2048, sharedExperts: 1, routedScale: 2.5 },
};
/** q_a_layernorm and kv_a_layernorm keep their class's default epsilon: transformers does not pass rms_norm_eps to them. */
const LATENT_NORM_EPS = 1e-6;

function parseDeepseekConfig(json: Record<string, unknown>, source: string): DeepseekConfig {
  const fields = new ConfigFields(json, source);
  const modelType = fields.raw('model_type') as DeepseekModelType;
  const defaults = DEFAULTS[modelType];
  const common = parseCommonFields(fields, modelType);
  const numHeads = fields.positiveInt('num_attention_heads');
  // MLA has one shared latent, not kv heads; transformers' repeat_kv would be wrong for any other count.
  const numKvHeads = fields.positiveInt('num_key_value_heads', numHeads);
  if (numKvHeads !== numHeads) throw invalidModel(`${source}: num_key_value_heads (${numKvHeads}) must equal num_attention_heads (${numHeads}) for MLA`);
  if (fields.boolean('mlp_bias', false)) throw invalidModel(`${source}: mlp_bias=true is not supported (Keel's MLP projections carry no bias)`);
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings', defaults.maxPositions);
  const rope = parseRope(fields, maxPositionEmbeddings);
  // DeepSeek writes `head_dim` = qk_rope_head_dim (transformers sets it so); it is not a head size and is not read.
  const nopeDim = fields.positiveInt('qk_nope_head_dim', 128);
  const ropeDim = fields.positiveInt('qk_rope_head_dim', 64);
  if (ropeDim % 2 !== 0) throw invalidModel(`${source}: qk_rope_head_dim must be even for rotary embeddings (got ${ropeDim})`);
  const numLayers = common.numLayers;
  const firstDense = fields.nonNegativeInt('first_k_dense_replace', defaults.firstDense);
  const numNextnPredictLayers = fields.nonNegativeInt('num_nextn_predict_layers', 0);
  const queryRank = fields.optionalPositiveInt('q_lora_rank', defaults.queryRank);
  const sparseAttention = modelType === 'deepseek_v32' ? parseSparseAttention(fields, queryRank, ropeDim) : null;
  // V2/V3: every layer from first_k_dense_replace on, as transformers 5.17 builds them. It does not read
  // moe_layer_freq (DeepSeek's own code does; every released config sets it to 1), and its checkpoints
  // hold experts in every such layer whatever the key says.
  const sparseLayers = modelType === 'deepseek_v32'
    ? parseMlpLayerTypes(fields, numLayers, firstDense, numNextnPredictLayers)
    : Array.from({ length: numLayers + numNextnPredictLayers }, (_, i) => i >= firstDense);
  return {
    ...common,
    contextLength: ropeContextLength({ scaling: rope.ropeScaling, maxPositionEmbeddings }),
    numHeads,
    activation: parseActivation(fields, 'hidden_act', 'silu'),
    queryRank,
    latentDim: fields.positiveInt('kv_lora_rank', 512),
    nopeDim,
    ropeDim,
    valueDim: fields.positiveInt('v_head_dim', 128),
    attentionScale: (nopeDim + ropeDim) ** -0.5 * softmaxMscale(fields, rope.ropeScaling) ** 2,
    // transformers' V3.2 rotates MLA's rope dims in interleaved pairs whatever rope_interleave says.
    interleavedRope: modelType !== 'deepseek_v3' || fields.boolean('rope_interleave', true),
    attentionBias: fields.boolean('attention_bias', false),
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-6),
    ...rope,
    maxPositionEmbeddings,
    intermediateSize: fields.positiveInt('intermediate_size'),
    sparseLayers,
    moe: parseMoe(fields, modelType),
    numNextnPredictLayers,
    sparseAttention,
  };
}

const SPARSE_LAYER_TYPES: readonly unknown[] = ['indexed_attention', 'deepseek_sparse_attention'];

/**
 * DeepSeek-V3.2's indexer keys (transformers' DeepseekV32Config): index_n_heads (64),
 * index_head_dim (128), index_topk (2048). Its queries come from the query latent, so q_lora_rank
 * is required, and its leading qk_rope_head_dim dims are rotated, so they must fit in a head.
 * Every layer is sparse: `layer_types`, if given, may only say so, in either spelling transformers
 * has written (5.17 "deepseek_sparse_attention", 5.18 "indexed_attention").
 */
function parseSparseAttention(fields: ConfigFields, queryRank: number | null, ropeDim: number): DeepseekSparseAttention {
  const { source } = fields;
  if (queryRank === null) throw invalidModel(`${source}: deepseek_v32 needs q_lora_rank (its lightning indexer projects queries from the query latent), not null`);
  const headDim = fields.positiveInt('index_head_dim', 128);
  if (headDim < ropeDim) throw invalidModel(`${source}: index_head_dim (${headDim}) is smaller than qk_rope_head_dim (${ropeDim}), which the indexer rotates`);
  const layerTypes = fields.raw('layer_types');
  if (layerTypes != null && !(Array.isArray(layerTypes) && layerTypes.every((t) => SPARSE_LAYER_TYPES.includes(t)))) {
    throw invalidModel(`${source}: layer_types ${JSON.stringify(layerTypes)} is not supported for deepseek_v32 (every layer is "indexed_attention")`);
  }
  return { numHeads: fields.positiveInt('index_n_heads', 64), headDim, topK: fields.positiveInt('index_topk', 2048) };
}

/**
 * V3.2's feed-forward per layer, as transformers reads it: `mlp_layer_types` ("dense" or
 * "sparse" per decoder layer), else the first first_k_dense_replace dense; MTP layers are MoE.
 */
function parseMlpLayerTypes(fields: ConfigFields, numLayers: number, firstDense: number, numNextnPredictLayers: number): boolean[] {
  const types = fields.raw('mlp_layer_types');
  const decoder = types == null ? Array.from({ length: numLayers }, (_, i) => i >= firstDense) : null;
  if (decoder === null && !(Array.isArray(types) && types.length === numLayers && types.every((t) => t === 'dense' || t === 'sparse'))) {
    throw invalidModel(`${fields.source}: mlp_layer_types must list "dense" or "sparse" for each of the ${numLayers} layers, not ${JSON.stringify(types)}`);
  }
  return [...(decoder ?? (types as string[]).map((t) => t === 'sparse')), ...new Array<boolean>(numNextnPredictLayers).fill(true)];
}

/**
 * The MoE keys. V2 (transformers' DeepseekV2TopkRouter): a softmax over all experts, `greedy` top
 * k or `group_limited_greedy` (only the experts of the `topk_group` groups whose best probability
 * is highest), weights × routed_scaling_factor and never renormalized: transformers 5.17 does not
 * read norm_topk_prob for V2 (DeepSeek's own code would renormalize; the V2 configs set it false).
 * V3 (`noaux_tc`, the only rule transformers implements for it): sigmoid scores, experts chosen by
 * score + e_score_correction_bias within the `topk_group` groups whose two best sum highest,
 * weighted by their scores, renormalized when norm_topk_prob, × routed_scaling_factor.
 */
function parseMoe(fields: ConfigFields, modelType: DeepseekModelType): DeepseekMoeConfig {
  const defaults = DEFAULTS[modelType];
  // V3.2 routes as V3 does (transformers' DeepseekV32TopkRouter).
  const v3 = modelType !== 'deepseek_v2';
  const numExperts = fields.positiveInt('n_routed_experts', defaults.numExperts);
  const numExpertsPerToken = parseExpertsPerToken(fields, numExperts);
  const expertIntermediateSize = fields.positiveInt('moe_intermediate_size', defaults.expertWidth);
  const sharedExperts = fields.nonNegativeInt('n_shared_experts', defaults.sharedExperts);
  const method = fields.string('topk_method', v3 ? 'noaux_tc' : 'greedy');
  const methods = v3 ? ['noaux_tc'] : ['greedy', 'group_limited_greedy'];
  if (!methods.includes(method)) throw invalidModel(`${fields.source}: topk_method "${method}" is not supported for ${modelType} (supported: ${methods.join(', ')})`);
  const scoring = v3 ? 'sigmoid' : 'softmax';
  const scoringFunc = fields.string('scoring_func', scoring);
  if (scoringFunc !== scoring) throw invalidModel(`${fields.source}: scoring_func "${scoringFunc}" is not supported for ${modelType} (it scores experts by ${scoring})`);
  const grouped = method !== 'greedy';
  const numGroups = grouped ? fields.positiveInt('n_group', v3 ? 8 : undefined) : 1;
  const topkGroups = grouped ? fields.positiveInt('topk_group', v3 ? 4 : undefined) : 1;
  if (numExperts % numGroups !== 0 || topkGroups > numGroups) {
    throw invalidModel(`${fields.source}: ${numExperts} experts in n_group ${numGroups} groups, topk_group ${topkGroups} kept, do not form a group-limited choice`);
  }
  if (numExpertsPerToken > topkGroups * (numExperts / numGroups)) {
    throw invalidModel(`${fields.source}: num_experts_per_tok (${numExpertsPerToken}) exceeds the ${topkGroups * (numExperts / numGroups)} experts of topk_group ${topkGroups} groups`);
  }
  return {
    numExperts,
    numExpertsPerToken,
    expertIntermediateSize,
    sharedIntermediateSize: expertIntermediateSize * sharedExperts,
    routing: {
      topK: numExpertsPerToken,
      scoring,
      selectionBias: v3,
      // One group holds every expert: the same choice without the group step.
      groups: numGroups > 1 ? { numGroups, topkGroups, score: v3 ? 'top2-sum' : 'max' } : null,
      normalize: v3 && fields.boolean('norm_topk_prob', true),
      scale: fields.finiteNumber('routed_scaling_factor', defaults.routedScale),
    },
  };
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

export class DeepseekDecoderLayer implements Layer, PreNormLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: MlaAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: GatedMlp | MoeBlock;

  /** Layer `index` of the checkpoint, keeping its K/V in layer `cacheLayer` of the cache it runs with (an MTP layer's own cache: 0). */
  constructor(config: DeepseekConfig, index: number, rotary: RotaryEmbedding, cacheLayer = index) {
    const p = `model.layers.${index}`;
    const { hiddenSize, rmsNormEps: eps } = config;
    this.inputNorm = new RmsNorm(`${p}.input_layernorm.weight`, hiddenSize, eps);
    this.attention = new MlaAttention({
      layer: cacheLayer,
      hiddenSize,
      numHeads: config.numHeads,
      queryRank: config.queryRank,
      latentDim: config.latentDim,
      nopeDim: config.nopeDim,
      ropeDim: config.ropeDim,
      valueDim: config.valueDim,
      scale: config.attentionScale,
      normEps: LATENT_NORM_EPS,
      rotary,
      interleavedRope: config.interleavedRope,
      bias: config.attentionBias,
      prefix: `${p}.self_attn`,
      indexer: config.sparseAttention === null || config.queryRank === null
        ? null
        : new LightningIndexer({ layer: cacheLayer, hiddenSize, queryRank: config.queryRank, ...config.sparseAttention, rotary, prefix: `${p}.self_attn.indexer` }),
    });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = config.sparseLayers[index]
      ? deepseekMoe(config, `${p}.mlp`)
      : new GatedMlp({ gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` }, hiddenSize, config.intermediateSize, config.activation);
  }

  get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  parameters(): ParameterSpec[] {
    return parametersOf(this.sublayers);
  }

  load(source: WeightSource, uploader: WeightUploader): void {
    loadLayers(this.sublayers, source, uploader);
  }
}

/** A sparse layer's `mlp`: router `gate` (with V3's `gate.e_score_correction_bias`), `experts.E.*_proj`, `shared_experts.*_proj`. */
function deepseekMoe(config: DeepseekConfig, p: string): MoeBlock {
  const { hiddenSize, moe } = config;
  const shared = moe.sharedIntermediateSize === 0
    ? null
    : { mlp: new GatedMlp({ gate: `${p}.shared_experts.gate_proj.weight`, up: `${p}.shared_experts.up_proj.weight`, down: `${p}.shared_experts.down_proj.weight` }, hiddenSize, moe.sharedIntermediateSize, config.activation, { sharedExpert: true }), gate: null };
  return new MoeBlock({
    hiddenSize,
    intermediateSize: moe.expertIntermediateSize,
    numExperts: moe.numExperts,
    router: `${p}.gate.weight`,
    routerBias: false,
    routing: { ...moe.routing, selectionBias: moe.routing.selectionBias ? `${p}.gate.e_score_correction_bias` : null },
    experts: { layout: 'per-expert', name: (e, projection) => `${p}.experts.${e}.${projection}_proj.weight` },
    activation: config.activation,
    shared,
  });
}

/** The DeepSeek decoder: pre-norm layers of MLA and a dense or MoE feed-forward, summed in HF's order. */
export class DeepseekModel extends DecoderStack<DeepseekConfig, DeepseekDecoderLayer> {
  constructor(config: DeepseekConfig, maxPositions: number, stage: PipelineStage) {
    const rope = { rotaryDim: config.ropeDim, theta: config.ropeTheta, scaling: config.ropeScaling, maxPositionEmbeddings: config.maxPositionEmbeddings };
    const rotary = new RotaryEmbedding(rope, maxPositions);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    super(config, {
      rotaries: [rotary],
      embedding,
      layers: Array.from({ length: config.numLayers }, (_, i) => new DeepseekDecoderLayer(config, i, rotary)),
      finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
      lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
    }, stage);
  }

  override get tapsLayerInputs(): boolean {
    return true;
  }

  protected layerForward(b: Backend, layer: DeepseekDecoderLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }

  earlyExit(numLayers: number): CausalLM {
    return this.earlyExitAfter(numLayers);
  }
}

export const deepseekFamily: ModelFamily<DeepseekConfig> = {
  name: 'DeepSeek',
  modelTypes: MODEL_TYPES,
  parseConfig: parseDeepseekConfig,
  create: (config, maxPositions, streaming, stage) => {
    if (streaming !== null) throw invalidArgument('StreamingLLM (--streaming-sinks/--streaming-window) is not supported for multi-head latent attention (DeepSeek) yet');
    return new DeepseekModel(config, maxPositions, stage);
  },
};
