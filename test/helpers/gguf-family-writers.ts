import { bool, f32, str, u32, type KvValue } from './gguf-writer.ts';

/**
 * What llama.cpp's converter (convert_hf_to_gguf.py, its Gemma/Gemma2/Gemma3, Phi3Mini and DeepseekV2
 * model classes) does beyond renaming, for the test writer (gguf-from-checkpoint.ts): hyperparameter
 * keys, tensor names, and the tensors it changes (Gemma's norms + 1, DeepSeek's kv_b_proj split per
 * head, Phi-3's LongRoPE factors as tensors). Written from the converter's behaviour, independently
 * of Keel's reader.
 */
export interface FamilyTensor {
  name: string;
  /** Hugging Face order (outermost first). */
  shape: number[];
  values: Float32Array;
  keepF32?: boolean;
}

export interface FamilyWriter {
  arch: string;
  /** Per-layer Hugging Face suffix -> GGUF name, looked up before the shared llama/qwen names. */
  names: [RegExp, string][];
  /** The values the converter writes under the tensor's renamed name. */
  transform(hfName: string, values: Float32Array): Float32Array;
  /**
   * The GGUF tensors for a Hugging Face tensor when the converter does more than rename it: a list
   * (empty: dropped), or null to rename it as usual.
   */
  convert(hfName: string, shape: number[], values: Float32Array): FamilyTensor[] | null;
  /** Keys added to (or replacing) the shared ones. */
  metadata(config: Record<string, any>, k: (key: string) => string): Record<string, KvValue>;
  /** Tensors made from the config. */
  extraTensors(config: Record<string, any>): FamilyTensor[];
}

export interface FamilyOptions {
  /** DeepSeek's kv_b_proj as today's converter writes it (attn_k_b + attn_v_b) or as older files hold it (attn_kv_b). */
  kvB?: 'split' | 'joined';
}

const layerOf = (hfName: string) => /^model\.layers\.(\d+)\./.exec(hfName)?.[1];

const GEMMA_NAMES: [RegExp, string][] = [
  [/^post_attention_layernorm$/, 'post_attention_norm'],
  [/^pre_feedforward_layernorm$/, 'ffn_norm'],
  [/^post_feedforward_layernorm$/, 'post_ffw_norm'],
];

/** Gemma's RMSNorm multiplies by 1 + w; the converter stores 1 + w. */
const gemmaNorm = (hfName: string, values: Float32Array) => (hfName.endsWith('norm.weight') ? values.map((v) => v + 1) : values);
const asIs = (_hfName: string, values: Float32Array) => values;

/** llama.cpp's 1/√(scale) for Gemma scores: head_dim, or hidden/heads for the 27B models it knows by layer count. */
function gemmaScaleKeys(config: Record<string, any>, k: (key: string) => string, largeLayers: number): Record<string, KvValue> {
  const inferred = config.num_hidden_layers === largeLayers ? config.hidden_size / config.num_attention_heads : config.head_dim;
  // The converter does not write query_pre_attn_scalar: a model whose scalar llama.cpp would not infer gets attention.scale.
  return config.query_pre_attn_scalar === inferred ? {} : { [k('attention.scale')]: f32(config.query_pre_attn_scalar ** -0.5) };
}

/** The sliding layers as llama.cpp's default period gives them, or else a flag per layer. */
function slidingKeys(config: Record<string, any>, k: (key: string) => string, period: number): Record<string, KvValue> {
  const sliding: boolean[] = config.layer_types.map((t: string) => t === 'sliding_attention');
  const byPeriod = sliding.every((s, i) => s === i % period < period - 1);
  const keys: Record<string, KvValue> = { [k('attention.sliding_window')]: u32(config.sliding_window ?? 0) };
  if (!byPeriod) keys[k('attention.sliding_window_pattern')] = { type: 'array', elementType: 'bool', items: sliding };
  return keys;
}

/** Gemma 1: Llama's tensor names and keys, the norms stored + 1. */
const gemma1: FamilyWriter = {
  arch: 'gemma',
  names: [],
  transform: gemmaNorm,
  convert: () => null,
  metadata: () => ({}),
  extraTensors: () => [],
};

const gemma2: FamilyWriter = {
  arch: 'gemma2',
  names: GEMMA_NAMES,
  transform: gemmaNorm,
  convert: () => null,
  metadata: (config, k) => ({
    [k('attn_logit_softcapping')]: f32(config.attn_logit_softcapping),
    [k('final_logit_softcapping')]: f32(config.final_logit_softcapping),
    ...slidingKeys(config, k, 2),
    ...gemmaScaleKeys(config, k, 46),
  }),
  extraTensors: () => [],
};

const gemma3: FamilyWriter = {
  arch: 'gemma3',
  names: GEMMA_NAMES,
  transform: gemmaNorm,
  convert: () => null,
  metadata: (config, k) => {
    const full = config.rope_parameters.full_attention;
    const keys: Record<string, KvValue> = {
      [k('rope.freq_base')]: f32(full.rope_theta),
      [k('rope.freq_base_swa')]: f32(config.rope_parameters.sliding_attention.rope_theta),
      ...slidingKeys(config, k, 6),
      ...gemmaScaleKeys(config, k, 62),
    };
    if (full.rope_type === 'linear') Object.assign(keys, { [k('rope.scaling.type')]: str('linear'), [k('rope.scaling.factor')]: f32(full.factor) });
    if (config.final_logit_softcapping != null) keys[k('final_logit_softcapping')] = f32(config.final_logit_softcapping);
    return keys;
  },
  extraTensors: () => [],
};

const phi3: FamilyWriter = {
  arch: 'phi3',
  names: [
    [/^self_attn\.qkv_proj$/, 'attn_qkv'],
    [/^mlp\.gate_up_proj$/, 'ffn_up'],
  ],
  transform: asIs,
  convert: () => null,
  metadata: (config, k) => {
    const rope = config.rope_parameters;
    const original = rope.original_max_position_embeddings ?? config.original_max_position_embeddings;
    const scale = config.max_position_embeddings / original;
    const keys: Record<string, KvValue> = {
      [k('rope.dimension_count')]: u32(Math.floor(((rope.partial_rotary_factor ?? 1) * config.hidden_size) / config.num_attention_heads)),
      [k('rope.scaling.original_context_length')]: u32(original),
      [k('attention.sliding_window')]: u32(config.sliding_window ?? 0),
    };
    if (rope.long_factor) keys[k('rope.scaling.attn_factor')] = f32(scale > 1 ? Math.sqrt(1 + Math.log(scale) / Math.log(original)) : 1);
    return keys;
  },
  extraTensors: (config) => {
    const rope = config.rope_parameters;
    if (!rope.long_factor) return [];
    return [
      { name: 'rope_factors_long.weight', shape: [rope.long_factor.length], values: Float32Array.from(rope.long_factor), keepF32: true },
      { name: 'rope_factors_short.weight', shape: [rope.short_factor.length], values: Float32Array.from(rope.short_factor), keepF32: true },
    ];
  },
};

/** kv_b_proj [heads·(nope + value), latent] -> attn_k_b [heads, latent, nope] (each head's key rows transposed) and attn_v_b [heads, value, latent]. */
function splitKvB(config: Record<string, any>, layer: string, values: Float32Array): FamilyTensor[] {
  const heads = config.num_attention_heads;
  const { qk_nope_head_dim: nope, v_head_dim: value, kv_lora_rank: latent } = config;
  const keys = new Float32Array(heads * latent * nope);
  const vals = new Float32Array(heads * value * latent);
  for (let h = 0; h < heads; h++) {
    const first = h * (nope + value);
    for (let n = 0; n < nope; n++) for (let l = 0; l < latent; l++) keys[(h * latent + l) * nope + n] = values[(first + n) * latent + l];
    vals.set(values.subarray((first + nope) * latent, (first + nope + value) * latent), h * value * latent);
  }
  return [
    { name: `blk.${layer}.attn_k_b.weight`, shape: [heads, latent, nope], values: keys },
    { name: `blk.${layer}.attn_v_b.weight`, shape: [heads, value, latent], values: vals },
  ];
}

function deepseek(config: Record<string, any>, options: FamilyOptions): FamilyWriter {
  const rope = config.rope_parameters ?? {};
  if (rope.rope_type === 'yarn' && (rope.mscale ?? 0) !== (rope.mscale_all_dim ?? 0)) {
    throw new Error(`llama.cpp's deepseek2 keys store mscale_all_dim only: mscale ${rope.mscale} != mscale_all_dim ${rope.mscale_all_dim} has no GGUF form`);
  }
  if (config.model_type === 'deepseek_v3' && config.rope_interleave === false) throw new Error('a DeepSeek-V3 checkpoint without interleaved RoPE has no GGUF form here');
  return {
    arch: 'deepseek2',
    names: [
      [/^self_attn\.q_a_proj$/, 'attn_q_a'],
      [/^self_attn\.q_a_layernorm$/, 'attn_q_a_norm'],
      [/^self_attn\.q_b_proj$/, 'attn_q_b'],
      [/^self_attn\.kv_a_proj_with_mqa$/, 'attn_kv_a_mqa'],
      [/^self_attn\.kv_a_layernorm$/, 'attn_kv_a_norm'],
      [/^self_attn\.kv_b_proj$/, 'attn_kv_b'],
      [/^mlp\.shared_experts\.gate_proj$/, 'ffn_gate_shexp'],
      [/^mlp\.shared_experts\.up_proj$/, 'ffn_up_shexp'],
      [/^mlp\.shared_experts\.down_proj$/, 'ffn_down_shexp'],
    ],
    transform: asIs,
    convert: (hfName, shape, values) => {
      const layer = layerOf(hfName);
      // The converter skips the multi-token-prediction layers stored after the decoder's.
      if (layer !== undefined && Number(layer) >= config.num_hidden_layers) return [];
      if (hfName.endsWith('.mlp.gate.e_score_correction_bias')) return [{ name: `blk.${layer}.exp_probs_b.bias`, shape, values, keepF32: true }];
      if (hfName.endsWith('.self_attn.kv_b_proj.weight') && (options.kvB ?? 'split') === 'split') return splitKvB(config, layer!, values);
      return null;
    },
    metadata: (config, k) => {
      const rope = config.rope_parameters ?? {};
      const keys: Record<string, KvValue> = {
        [k('attention.head_count_kv')]: u32(1),
        [k('attention.kv_lora_rank')]: u32(config.kv_lora_rank),
        [k('attention.key_length')]: u32(config.kv_lora_rank + config.qk_rope_head_dim),
        [k('attention.value_length')]: u32(config.kv_lora_rank),
        [k('attention.key_length_mla')]: u32(config.qk_nope_head_dim + config.qk_rope_head_dim),
        [k('attention.value_length_mla')]: u32(config.v_head_dim),
        [k('rope.dimension_count')]: u32(config.qk_rope_head_dim),
        [k('leading_dense_block_count')]: u32(config.first_k_dense_replace),
        [k('expert_feed_forward_length')]: u32(config.moe_intermediate_size),
        [k('expert_count')]: u32(config.n_routed_experts),
        [k('expert_used_count')]: u32(config.num_experts_per_tok),
        [k('expert_shared_count')]: u32(config.n_shared_experts),
        [k('expert_weights_scale')]: f32(config.routed_scaling_factor),
        // Real V2 configs say scoring_func softmax, V3 sigmoid; these fixtures leave it to the class.
        [k('expert_gating_func')]: u32(config.model_type === 'deepseek_v3' ? 2 : 1),
      };
      if (config.q_lora_rank != null) keys[k('attention.q_lora_rank')] = u32(config.q_lora_rank);
      if (config.norm_topk_prob) keys[k('expert_weights_norm')] = bool(true);
      if (config.n_group != null) Object.assign(keys, { [k('expert_group_count')]: u32(config.n_group), [k('expert_group_used_count')]: u32(config.topk_group) });
      if (rope.rope_type === 'yarn') {
        if (rope.beta_fast != null) keys[k('rope.scaling.yarn_beta_fast')] = f32(rope.beta_fast);
        if (rope.beta_slow != null) keys[k('rope.scaling.yarn_beta_slow')] = f32(rope.beta_slow);
        if (rope.mscale_all_dim != null) keys[k('rope.scaling.yarn_log_multiplier')] = f32(0.1 * rope.mscale_all_dim);
      }
      return keys;
    },
    extraTensors: () => [],
  };
}

/** The writer of a model_type llama.cpp converts with one of these classes, or null. */
export function familyWriter(config: Record<string, any>, options: FamilyOptions = {}): FamilyWriter | null {
  switch (config.model_type) {
    case 'gemma':
      return gemma1;
    case 'gemma2':
      return gemma2;
    case 'gemma3_text':
      return gemma3;
    case 'phi3':
      return phi3;
    case 'deepseek_v2':
    case 'deepseek_v3':
      return deepseek(config, options);
    default:
      return null;
  }
}
