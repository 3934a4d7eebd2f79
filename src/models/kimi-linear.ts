import type { Backend, KvCache, StepInputs, Tensor } from '../backend/backend.ts';
import { invalidArgument, invalidModel } from '../errors.ts';
import { LmHead, VocabEmbedding } from '../layers/embedding.ts';
import { GatedMlp } from '../layers/gated-mlp.ts';
import { KimiDeltaAttention, type KimiDeltaAttentionOptions } from '../layers/kimi-delta-attention.ts';
import { MlaAttention, type MlaAttentionOptions } from '../layers/mla-attention.ts';
import type { MoeBlock } from '../layers/moe.ts';
import { RmsNorm } from '../layers/norm.ts';
import { ComposedLayer, type Layer, type LoraTarget } from '../layers/parameters.ts';
import { RotaryEmbedding } from '../layers/rotary.ts';
import type { ModelFamily } from './causal-lm.ts';
import { preNormLayerForward } from './decoder.ts';
import { DecoderStack, type ResidualStream } from './decoder-stack.ts';
import { deepseekMoeBlock, parseDeepseekMoe, type DeepseekMoeConfig, type ExpertTensorName } from './deepseek-moe.ts';
import { ConfigFields, isObject, parseCommonFields } from './hf-config.ts';
import type { ModelConfig } from './model-config.ts';
import type { PipelineStage } from './pipeline-stage.ts';

/**
 * Moonshot's Kimi Linear (`kimi_linear`, transformers 5.18's KimiLinearForCausalLM): Kimi Delta
 * Attention layers (layers/kimi-delta-attention.ts) mixed with DeepSeek-V3's multi-head latent
 * attention without RoPE, and DeepSeek-V3's mixture of experts after the first dense layers.
 */
export interface KimiLinearConfig extends ModelConfig {
  rmsNormEps: number;
  intermediateSize: number;
  /** The MLA layers' geometry (qk_rope_head_dim: the key part shared by every head, never rotated here: NoPE). */
  mla: Pick<MlaAttentionOptions, 'numHeads' | 'queryRank' | 'latentDim' | 'nopeDim' | 'ropeDim' | 'valueDim' | 'bias'>;
  kda: Pick<KimiDeltaAttentionOptions, 'numHeads' | 'headDim' | 'convKernel'>;
  /** Per layer: Kimi Delta Attention, or MLA. */
  linearLayers: boolean[];
  /** Per layer: the mixture of experts, or a dense MLP. */
  sparseLayers: boolean[];
  moe: DeepseekMoeConfig;
}

/**
 * KimiLinearConfig's attribute_map: each key it saves (the Hub's configs use these), the alias
 * transformers maps onto it (both present must agree), the DeepSeek spelling parseDeepseekMoe reads,
 * and the class's default (Kimi-Linear-48B-A3B's).
 */
const ATTRIBUTE_MAP: readonly { saved: string; alias: string; deepseek: string; fallback: number | boolean }[] = [
  { saved: 'num_experts', alias: 'num_local_experts', deepseek: 'n_routed_experts', fallback: 256 },
  { saved: 'num_experts_per_token', alias: 'num_experts_per_tok', deepseek: 'num_experts_per_tok', fallback: 8 },
  { saved: 'moe_renormalize', alias: 'norm_topk_prob', deepseek: 'norm_topk_prob', fallback: true },
  { saved: 'num_expert_group', alias: 'n_group', deepseek: 'n_group', fallback: 1 },
  { saved: 'num_shared_experts', alias: 'n_shared_experts', deepseek: 'n_shared_experts', fallback: 1 },
  { saved: 'model_max_length', alias: 'max_position_embeddings', deepseek: 'max_position_embeddings', fallback: 1048576 },
];

/** The config under DeepSeek's spellings: each attribute_map key from its saved name or its alias, else the default. */
function deepseekSpelling(json: Record<string, unknown>, source: string): Record<string, unknown> {
  const out: Record<string, unknown> = { ...json };
  for (const { saved, alias, deepseek, fallback } of ATTRIBUTE_MAP) {
    const [a, b] = [json[saved], json[alias]];
    if (a != null && b != null && a !== b) throw invalidModel(`${source}: ${saved} (${JSON.stringify(a)}) and its alias ${alias} (${JSON.stringify(b)}) disagree`);
    delete out[saved];
    delete out[alias];
    out[deepseek] = a ?? b ?? fallback;
  }
  return out;
}

/**
 * Which layers are KDA: `layer_types` ("linear_attention" / "full_attention" per layer), else
 * linear_attn_config's `kda_layers` and `full_attn_layers` (1-indexed, together every layer once),
 * else KimiLinearConfig's pattern: every fourth layer after the first full (i > 0, i % 4 == 0).
 */
function parseLinearLayers(fields: ConfigFields, linear: Record<string, unknown>, numLayers: number): boolean[] {
  const { source } = fields;
  const types = fields.raw('layer_types');
  if (types != null) {
    if (!(Array.isArray(types) && types.length === numLayers && types.every((t) => t === 'linear_attention' || t === 'full_attention'))) {
      throw invalidModel(`${source}: layer_types must list "linear_attention" or "full_attention" for each of the ${numLayers} layers, not ${JSON.stringify(types)}`);
    }
    return types.map((t) => t === 'linear_attention');
  }
  const [kda, full] = [linear.kda_layers, linear.full_attn_layers];
  if (kda == null || full == null) return Array.from({ length: numLayers }, (_, i) => !(i > 0 && i % 4 === 0));
  const oneBased = (list: unknown) => Array.isArray(list) && list.every((i) => Number.isInteger(i) && i >= 1 && i <= numLayers);
  const listed = [...(kda as number[]), ...(full as number[])];
  if (!oneBased(kda) || !oneBased(full) || listed.length !== numLayers || new Set(listed).size !== numLayers) {
    throw invalidModel(
      `${source}: linear_attn_config's kda_layers ${JSON.stringify(kda)} and full_attn_layers ${JSON.stringify(full)} must together list each layer 1..${numLayers} once`,
    );
  }
  const isKda = new Set(kda as number[]);
  return Array.from({ length: numLayers }, (_, i) => isKda.has(i + 1));
}

/** `mlp_layer_types` ("dense" / "sparse" per layer), else the first `first_k_dense_replace` (default 1) dense. */
function parseSparseLayers(fields: ConfigFields, numLayers: number): boolean[] {
  const types = fields.raw('mlp_layer_types');
  if (types == null) {
    const firstDense = fields.nonNegativeInt('first_k_dense_replace', 1);
    return Array.from({ length: numLayers }, (_, i) => i >= firstDense);
  }
  if (!(Array.isArray(types) && types.length === numLayers && types.every((t) => t === 'dense' || t === 'sparse'))) {
    throw invalidModel(`${fields.source}: mlp_layer_types must list "dense" or "sparse" for each of the ${numLayers} layers, not ${JSON.stringify(types)}`);
  }
  return types.map((t) => t === 'sparse');
}

function parseKimiLinearConfig(json: Record<string, unknown>, source: string): KimiLinearConfig {
  const fields = new ConfigFields(deepseekSpelling(json, source), source);
  const common = parseCommonFields(fields, 'kimi_linear');
  const numLayers = common.numLayers;
  // transformers runs the KDA convolutions through hidden_act too, and Keel's causalConv1d applies silu.
  const activation = fields.string('hidden_act', 'silu');
  if (activation !== 'silu') throw invalidModel(`${source}: hidden_act "${activation}" is not supported for kimi_linear (Keel runs its MLPs and KDA convolutions with silu)`);
  const numHeads = fields.positiveInt('num_attention_heads', 32);
  // MLA has one shared latent, not kv heads; transformers' repeat_kv would be wrong for any other count.
  const numKvHeads = fields.positiveInt('num_key_value_heads', numHeads);
  if (numKvHeads !== numHeads) throw invalidModel(`${source}: num_key_value_heads (${numKvHeads}) must equal num_attention_heads (${numHeads}) for MLA`);
  const linearDict = fields.raw('linear_attn_config') ?? {};
  if (!isObject(linearDict)) throw invalidModel(`${source}: linear_attn_config must be an object, not ${JSON.stringify(linearDict)}`);
  const linear = new ConfigFields(linearDict, `${source} linear_attn_config`);
  // linear_attn_config wins over the top-level keys transformers saves beside it, as KimiLinearConfig reads them.
  const kda = {
    numHeads: linear.positiveInt('num_heads', fields.positiveInt('linear_num_heads', 32)),
    headDim: linear.positiveInt('head_dim', fields.positiveInt('linear_head_dim', 128)),
    convKernel: linear.positiveInt('short_conv_kernel_size', fields.positiveInt('linear_conv_kernel_dim', 4)),
  };
  const maxPositionEmbeddings = fields.positiveInt('max_position_embeddings');
  return {
    ...common,
    // KimiLinearForCausalLM ties nothing (_tied_weights_keys is empty): its lm_head is its own whatever the config says.
    tieWordEmbeddings: false,
    // No layer rotates: the context is what the config allows.
    contextLength: maxPositionEmbeddings,
    rmsNormEps: fields.positiveNumber('rms_norm_eps', 1e-5),
    intermediateSize: fields.positiveInt('intermediate_size', 9216),
    mla: {
      numHeads,
      queryRank: fields.optionalPositiveInt('q_lora_rank', null),
      latentDim: fields.positiveInt('kv_lora_rank', 512),
      nopeDim: fields.positiveInt('qk_nope_head_dim', 128),
      ropeDim: fields.nonNegativeInt('qk_rope_head_dim', 64),
      valueDim: fields.positiveInt('v_head_dim', 128),
      bias: fields.boolean('attention_bias', false),
    },
    kda,
    linearLayers: parseLinearLayers(fields, linearDict, numLayers),
    sparseLayers: parseSparseLayers(fields, numLayers),
    moe: parseDeepseekMoe(fields, 'kimi_linear', { numExperts: undefined, expertWidth: 1024, sharedExperts: undefined, routedScale: 2.446, groups: 1, topkGroups: 1 }),
  };
}

/** q_a_layernorm and kv_a_layernorm keep KimiLinearRMSNorm's default epsilon: transformers does not pass rms_norm_eps to them. */
const LATENT_NORM_EPS = 1e-6;
const SILU = { kind: 'silu' } as const;

/** The Hub's expert tensors: Mixtral-style w1 (gate), w3 (up), w2 (down). */
const kimiExpertName: ExpertTensorName = (p, e, projection) => `${p}.experts.${e}.${{ gate: 'w1', up: 'w3', down: 'w2' }[projection]}.weight`;

/**
 * One layer: h += mixer(inputNorm(h)); h += ffn(postAttentionNorm(h)), the mixer KDA or MLA, the
 * feed-forward a dense MLP (`mlp`) or the MoE block (`block_sparse_moe`, as the Hub names them).
 */
class KimiLinearLayer extends ComposedLayer {
  readonly inputNorm: RmsNorm;
  readonly attention: KimiDeltaAttention | MlaAttention;
  readonly postAttentionNorm: RmsNorm;
  readonly mlp: GatedMlp | MoeBlock;

  constructor(config: KimiLinearConfig, index: number, identity: RotaryEmbedding) {
    super();
    const p = `model.layers.${index}`;
    const { hiddenSize, rmsNormEps: eps } = config;
    this.inputNorm = new RmsNorm(`${p}.input_layernorm.weight`, hiddenSize, eps);
    this.attention = config.linearLayers[index]
      ? new KimiDeltaAttention({ layer: index, prefix: `${p}.self_attn`, hiddenSize, ...config.kda, eps })
      : new MlaAttention({
          layer: index,
          hiddenSize,
          ...config.mla,
          scale: (config.mla.nopeDim + config.mla.ropeDim) ** -0.5,
          queryTemperature: null,
          normEps: LATENT_NORM_EPS,
          // NoPE: the shared key part goes through a table of identity rows, so MLA caches it unrotated.
          rotary: identity,
          interleavedRope: false,
          prefix: `${p}.self_attn`,
          indexer: null,
          sharedSelection: null,
        });
    this.postAttentionNorm = new RmsNorm(`${p}.post_attention_layernorm.weight`, hiddenSize, eps);
    this.mlp = config.sparseLayers[index]
      ? deepseekMoeBlock(config.moe, `${p}.block_sparse_moe`, hiddenSize, SILU, undefined, kimiExpertName)
      : new GatedMlp({ gate: `${p}.mlp.gate_proj.weight`, up: `${p}.mlp.up_proj.weight`, down: `${p}.mlp.down_proj.weight` }, hiddenSize, config.intermediateSize, SILU);
  }

  protected get sublayers(): Layer[] {
    return [this.inputNorm, this.attention, this.postAttentionNorm, this.mlp];
  }

  loraTargets(): LoraTarget[] {
    return [];
  }
}

/** Embedding, KDA and MLA layers, final norm, LM head. */
export class KimiLinearModel extends DecoderStack<KimiLinearConfig, KimiLinearLayer> {
  constructor(config: KimiLinearConfig, maxPositions: number, stage: PipelineStage) {
    const identity = new RotaryEmbedding({ rotaryDim: config.mla.ropeDim, theta: 10000, scaling: { type: 'none' }, maxPositionEmbeddings: config.contextLength }, maxPositions);
    const embedding = new VocabEmbedding('model.embed_tokens.weight', config.vocabSize, config.hiddenSize);
    super(
      config,
      {
        rotaries: [identity],
        embedding,
        layers: Array.from({ length: config.numLayers }, (_, i) => new KimiLinearLayer(config, i, identity)),
        finalNorm: new RmsNorm('model.norm.weight', config.hiddenSize, config.rmsNormEps),
        lmHead: new LmHead('lm_head.weight', embedding, config.tieWordEmbeddings),
      },
      stage,
    );
  }

  protected layerForward(b: Backend, layer: KimiLinearLayer, stream: ResidualStream, step: StepInputs, cache: KvCache): Tensor {
    return preNormLayerForward(b, layer, stream, step, cache);
  }
}

export const kimiLinearFamily: ModelFamily<KimiLinearConfig> = {
  name: 'Kimi Linear (hybrid Kimi Delta Attention + MLA)',
  modelTypes: ['kimi_linear'],
  parseConfig: parseKimiLinearConfig,
  create: (config, maxPositions, streaming, stage) => {
    if (streaming !== null) throw invalidArgument('StreamingLLM (--streaming-sinks/--streaming-window) is not supported for Kimi Linear (its attention layers are multi-head latent attention)');
    return new KimiLinearModel(config, maxPositions, stage);
  },
};
